"""Update forms: ΔW held the way its family stores it — a low-rank product, a Kronecker product, or dense.

Every adapter family reduces to one of three forms (``lorascope.delta`` builds them):

- ``LowRank(L, R, s)``: ΔW (m, n) = s · L @ R, L (m, k), R (k, n) — LoRA, AdaLoRA, VeRA, LoCon/Tucker, LoHa
  (Khatri–Rao), MoE experts
- ``Kronecker(A, B, s)``: ΔW (m, n) = s · A ⊗ B, A and B forms themselves — LoKr
- ``Dense(M)``: ΔW (m, n) = M — full fine-tunes, DoRA, IA3, OFT/BOFT, LyCORIS full
- ``Blocks(shape, blocks)``: ΔW (m, n) = M read in row blocks, never whole — full fine-tunes streamed from
  their files

This module owns the arithmetic between forms that never forms a low-rank or Kronecker product:
⟨ΔW₁, ΔW₂⟩_F, ‖ΔW‖_F, the cosine of two updates, and W + ΔW (the one place a product is formed, where a
dense merged weight is the point). It owns no file access. Arrays are numpy or torch; arithmetic between
two forms runs in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def as_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy or view of a numpy array or (CPU or GPU) torch tensor."""
    if is_torch(x):
        import torch

        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LowRank:
    """ΔW (m, n) = scale · left (m, k) @ right (k, n), never formed."""

    left: Any
    right: Any
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.left.ndim != 2 or self.right.ndim != 2 or self.left.shape[1] != self.right.shape[0]:
            raise ValueError(
                f"factors do not chain: left {tuple(self.left.shape)}, right {tuple(self.right.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.left.shape[0]), int(self.right.shape[1]))

    @property
    def inner_rank(self) -> int:
        return int(self.left.shape[1])

    def to_dense(self) -> Any:
        """s · L @ R (m, n): for merging into a weight and for tests, never for a spectrum."""
        return self.scale * (self.left @ self.right)  # (m, k) @ (k, n) -> (m, n)


@dataclass(frozen=True, eq=False)
class Kronecker:
    """ΔW = scale · A ⊗ B (Kronecker product), A (m₁, n₁) and B (m₂, n₂) forms; ΔW is (m₁m₂, n₁n₂).

    Its singular values are the products σᵢ(A) σⱼ(B) and its singular vectors the Kronecker products of the
    factors' vectors (Van Loan 2000, "The ubiquitous Kronecker product", §2), so it is never formed.
    """

    a: Any  # a form
    b: Any  # a form
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        (m1, n1), (m2, n2) = self.a.shape, self.b.shape
        return (m1 * m2, n1 * n2)

    def to_dense(self) -> Any:
        a, b = self.a.to_dense(), self.b.to_dense()
        if is_torch(a) or is_torch(b):
            import torch

            return self.scale * torch.kron(torch.as_tensor(a), torch.as_tensor(b))
        return self.scale * np.kron(a, b)


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense ΔW (m, n): a full fine-tune's W_tuned − W_base, or an update that needs the base weight."""

    matrix: Any

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2:
            raise ValueError(f"a dense update is a matrix, got shape {tuple(self.matrix.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    def to_dense(self) -> Any:
        return self.matrix


@dataclass(frozen=True, eq=False)
class Blocks:
    """A dense ΔW (m, n) read as consecutive row blocks of its tall orientation, never whole in memory.

    ``blocks()`` starts one pass and yields float64 blocks (b, p) of M = ΔW when m ≥ n, else of M = ΔWᵀ
    (``transposed``), whose rows together are M's rows in order; p = min(m, n). Only singular values are
    computed from it (``lorascope.linalg.gram_svd``); ``to_dense`` is for tests and small matrices.
    """

    shape: tuple[int, int]
    blocks: Callable[[], Any]

    @property
    def transposed(self) -> bool:
        return self.shape[0] < self.shape[1]

    def to_dense(self) -> np.ndarray:
        m = np.concatenate(list(self.blocks()), axis=0)  # (max(m, n), min(m, n))
        return m.T if self.transposed else m


Form = LowRank | Kronecker | Dense | Blocks


def khatri_rao(l1: Any, r1: Any, l2: Any, r2: Any) -> tuple[Any, Any]:
    """Factors of the Hadamard product (l1 @ r1) ⊙ (l2 @ r2) with inner dimension k₁k₂.

    ((L₁R₁) ⊙ (L₂R₂))ᵢⱼ = Σ_{p,q} (L₁ᵢₚ L₂ᵢ_q)(R₁ₚⱼ R₂_qⱼ): the left factor is the row-wise Kronecker
    (face-splitting) product of L₁ and L₂, (m, k₁k₂), the right one the column-wise Khatri–Rao product of
    R₁ and R₂, (k₁k₂, n) (Slyusar 1999; Hyeon-Woo et al. 2022, FedPara, Prop. 1 for the rank bound).
    """
    m, k1 = l1.shape
    k2 = l2.shape[1]
    n = r1.shape[1]
    left = (l1[:, :, None] * l2[:, None, :]).reshape(m, k1 * k2)  # (m, k1, 1) * (m, 1, k2) -> (m, k1·k2)
    right = (r1[:, None, :] * r2[None, :, :]).reshape(k1 * k2, n)  # (k1, 1, n) * (1, k2, n) -> (k1·k2, n)
    return left, right


# ---- Frobenius inner products, never forming a product ------------------------------------------------


def _np2(x: Any) -> np.ndarray:
    return as_numpy(x)


def _lowrank_lowrank(a: LowRank, b: LowRank) -> float:
    """⟨s₁B₁A₁, s₂B₂A₂⟩_F = s₁s₂ · trace((B₁ᵀB₂)(A₂A₁ᵀ)), O((m + n) k₁ k₂)."""
    bb = _np2(a.left).T @ _np2(b.left)  # (k1, m) @ (m, k2) -> (k1, k2)
    aa = _np2(b.right) @ _np2(a.right).T  # (k2, n) @ (n, k1) -> (k2, k1)
    return a.scale * b.scale * float((bb * aa.T).sum())  # trace(X Y) = Σ X ⊙ Yᵀ


def _dense_lowrank(d: Dense, b: LowRank) -> float:
    """⟨D, sLR⟩_F = s · Σ (Lᵀ D) ⊙ R, O(m n k)."""
    if is_torch(d.matrix):
        import torch

        mat = d.matrix.to(torch.float64)
        left = torch.as_tensor(_np2(b.left)).to(mat.device)
        right = torch.as_tensor(_np2(b.right)).to(mat.device)
        return b.scale * float(((left.T @ mat) * right).sum())  # (k, m) @ (m, n) -> (k, n)
    return b.scale * float(((_np2(b.left).T @ _np2(d.matrix)) * _np2(b.right)).sum())


def _dense_dense(a: Dense, b: Dense) -> float:
    if is_torch(a.matrix) or is_torch(b.matrix):
        import torch

        x = torch.as_tensor(a.matrix).to(torch.float64)
        y = torch.as_tensor(b.matrix).to(x.device, torch.float64)
        return float(torch.sum(x * y))
    return float(np.sum(_np2(a.matrix) * _np2(b.matrix)))


def _kron_apply(k: Kronecker, x: np.ndarray) -> np.ndarray:
    """(A ⊗ B) X for X (n₁n₂, c): each column reshaped to (n₁, n₂) maps to A X₂ Bᵀ, O(c (m₁n₁n₂ + m₁n₂m₂))."""
    a, b = _np2(k.a.to_dense()), _np2(k.b.to_dense())
    (m1, n1), (m2, n2) = a.shape, b.shape
    cols = x.reshape(n1, n2, -1)  # (n1·n2, c) -> (n1, n2, c)
    out = np.einsum("ac,cdk,bd->abk", a, cols, b)  # A (m1, n1) · X (n1, n2, c) · Bᵀ (n2, m2) -> (m1, m2, c)
    return out.reshape(m1 * m2, -1)


def _kron_lowrank(k: Kronecker, b: LowRank) -> float:
    """⟨sK, tLR⟩_F = s t · Σⱼ lⱼᵀ (A ⊗ B) rⱼ: the Kronecker product applied to R's rows, never formed."""
    applied = _kron_apply(k, _np2(b.right).T)  # (A ⊗ B) @ Rᵀ: (m, k)
    return k.scale * b.scale * float(np.sum(applied * _np2(b.left)))


def _kron_dense(k: Kronecker, d: Dense) -> float:
    """⟨sA ⊗ B, D⟩_F = s · Σ A[a,c] B[b,d] D[(a,b),(c,d)], O(m n)."""
    a, b = _np2(k.a.to_dense()), _np2(k.b.to_dense())
    (m1, n1), (m2, n2) = a.shape, b.shape
    d4 = _np2(d.matrix).reshape(m1, m2, n1, n2)
    return k.scale * float(np.einsum("abcd,ac,bd->", d4, a, b))


def _kron_kron(x: Kronecker, y: Kronecker) -> float:
    """⟨A₁ ⊗ B₁, A₂ ⊗ B₂⟩_F = ⟨A₁, A₂⟩_F ⟨B₁, B₂⟩_F when the factors' shapes agree;
    else through ``_kron_dense``."""
    if x.a.shape == y.a.shape and x.b.shape == y.b.shape:
        return x.scale * y.scale * inner(x.a, y.a) * inner(x.b, y.b)
    return _kron_dense(x, Dense(_np2(y.to_dense())))  # factor shapes differ: one side formed (rare)


# (type of ΔW₁, type of ΔW₂) -> ⟨ΔW₁, ΔW₂⟩_F
INNER: dict[tuple[type, type], Callable[[Any, Any], float]] = {
    (LowRank, LowRank): _lowrank_lowrank,
    (Dense, LowRank): _dense_lowrank,
    (LowRank, Dense): lambda a, b: _dense_lowrank(b, a),
    (Dense, Dense): _dense_dense,
    (Kronecker, LowRank): _kron_lowrank,
    (LowRank, Kronecker): lambda a, b: _kron_lowrank(b, a),
    (Kronecker, Dense): _kron_dense,
    (Dense, Kronecker): lambda a, b: _kron_dense(b, a),
    (Kronecker, Kronecker): _kron_kron,
}


def inner(a: Form, b: Form) -> float:
    """Frobenius inner product ⟨ΔW₁, ΔW₂⟩_F from the stored factors, in float64.

    Raises:
        ValueError: the two updates have different shapes.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"updates of different shapes cannot be compared: {a.shape} vs {b.shape}")
    return INNER[(type(a), type(b))](a, b)


def fro_norm(a: Form) -> float:
    """‖ΔW‖_F = sqrt(⟨ΔW, ΔW⟩_F)."""
    return math.sqrt(max(inner(a, a), 0.0))


def cosine(a: Form, b: Form) -> float:
    """⟨ΔW₁, ΔW₂⟩_F / (‖ΔW₁‖_F ‖ΔW₂‖_F) ∈ [−1, 1]; NaN when either update is zero."""
    na, nb = fro_norm(a), fro_norm(b)
    if na == 0.0 or nb == 0.0:
        return math.nan
    return max(-1.0, min(1.0, inner(a, b) / (na * nb)))


def merged(w: Any, a: Form) -> Any:
    """W_tuned = W + ΔW as a torch tensor in W's dtype and device: the one place a product is formed.

    Raises:
        ValueError: W and ΔW have different shapes.
    """
    import torch

    if tuple(w.shape) != tuple(a.shape):
        raise ValueError(f"the base weight is {tuple(w.shape)} but the update is {a.shape}")
    if isinstance(a, LowRank):
        left = torch.as_tensor(a.left).to(w.device, w.dtype)
        right = torch.as_tensor(a.right).to(w.device, w.dtype)
        return torch.addmm(w, left, right, alpha=a.scale)  # W + s · (m, k) @ (k, n) -> (m, n)
    return w + torch.as_tensor(a.to_dense()).to(w.device, w.dtype)
