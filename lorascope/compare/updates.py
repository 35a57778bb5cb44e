"""One update ΔW held for comparison: as factors (s · L @ R) or dense, with its Frobenius inner products and SVD.

Owns the arithmetic between two updates that never forms a low-rank product: ⟨ΔW₁, ΔW₂⟩_F, ‖ΔW‖_F and
the cosine of two updates, and the singular vectors each comparison needs (factored where the update is
low-rank, METRICS.md). It owns no file access: the driver (``lorascope.compare.run``) loads the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..linalg import SVD, exact_svd, factored_svd, randomized_svd


@dataclass(frozen=True, eq=False)
class LowRank:
    """ΔW (m, n) = scale · left (m, r) @ right (r, n), never formed; factors in float64 on the CPU."""

    left: torch.Tensor
    right: torch.Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.left.ndim != 2 or self.right.ndim != 2 or self.left.shape[1] != self.right.shape[0]:
            raise ValueError(f"factors do not chain: left {tuple(self.left.shape)}, right {tuple(self.right.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[1])

    def to_dense(self) -> torch.Tensor:
        """s · L @ R, formed only where a dense matrix is unavoidable (W + ΔW for intruder dimensions)."""
        return self.scale * (self.left @ self.right)  # (m, r) @ (r, n) -> (m, n)


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense ΔW (m, n): a full fine-tune's W_tuned − W_base, or a DoRA update."""

    matrix: torch.Tensor

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2:
            raise ValueError(f"a dense update is a matrix, got shape {tuple(self.matrix.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)  # type: ignore[return-value]

    def to_dense(self) -> torch.Tensor:
        return self.matrix


Update = LowRank | Dense


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def _lowrank_lowrank(a: LowRank, b: LowRank) -> float:
    """⟨s₁B₁A₁, s₂B₂A₂⟩_F = s₁s₂ · trace((B₁ᵀB₂)(A₂A₁ᵀ)), O((m + n) r₁ r₂)."""
    bb = _f64(a.left).T @ _f64(b.left).to(a.left.device)  # (r1, m) @ (m, r2) -> (r1, r2)
    aa = _f64(b.right).to(a.right.device) @ _f64(a.right).T  # (r2, n) @ (n, r1) -> (r2, r1)
    return a.scale * b.scale * float((bb * aa.T).sum())  # trace(X Y) = Σ X ⊙ Yᵀ


def _dense_lowrank(d: Dense, b: LowRank) -> float:
    """⟨D, sBA⟩_F = s · trace(Bᵀ D Aᵀ) = s · Σ (Bᵀ D) ⊙ A, O(m n r)."""
    mat = _f64(d.matrix)
    bd = _f64(b.left).to(mat.device).T @ mat  # (r, m) @ (m, n) -> (r, n)
    return b.scale * float((bd * _f64(b.right).to(mat.device)).sum())


def _dense_dense(a: Dense, b: Dense) -> float:
    return float(torch.sum(_f64(a.matrix) * _f64(b.matrix).to(a.matrix.device)))


# (type of ΔW₁, type of ΔW₂) -> ⟨ΔW₁, ΔW₂⟩_F
INNER: dict[tuple[type, type], Callable[[Update, Update], float]] = {
    (LowRank, LowRank): _lowrank_lowrank,
    (Dense, LowRank): _dense_lowrank,
    (LowRank, Dense): lambda a, b: _dense_lowrank(b, a),
    (Dense, Dense): _dense_dense,
}


def inner(a: Update, b: Update) -> float:
    """Frobenius inner product ⟨ΔW₁, ΔW₂⟩_F from factors where they exist, in float64."""
    if a.shape != b.shape:
        raise ValueError(f"updates of different shapes cannot be compared: {a.shape} vs {b.shape}")
    return INNER[(type(a), type(b))](a, b)


def fro_norm(a: Update) -> float:
    """‖ΔW‖_F = sqrt(⟨ΔW, ΔW⟩_F)."""
    return math.sqrt(max(inner(a, a), 0.0))


def cosine(a: Update, b: Update) -> float:
    """⟨ΔW₁, ΔW₂⟩_F / (‖ΔW₁‖_F ‖ΔW₂‖_F) ∈ [−1, 1]; NaN when either update is zero."""
    na, nb = fro_norm(a), fro_norm(b)
    if na == 0.0 or nb == 0.0:
        return math.nan
    return max(-1.0, min(1.0, inner(a, b) / (na * nb)))


def _svd_lowrank(a: LowRank, k: int, precision: torch.dtype, seed: int) -> SVD:
    return factored_svd(a.left, a.right, a.scale, compute_uv=True)  # exact, all r: k is not needed


def _svd_dense(a: Dense, k: int, precision: torch.dtype, seed: int) -> SVD:
    mat = a.matrix.to(precision)
    if k < min(a.shape):
        return randomized_svd(mat, k, seed=seed, compute_uv=True)
    return exact_svd(mat, compute_uv=True)


# update type -> its singular vectors (factored for LowRank; exact or randomized top-k for Dense)
SVDS: dict[type, Callable[[Update, int, torch.dtype, int], SVD]] = {LowRank: _svd_lowrank, Dense: _svd_dense}


def numerical_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """#{σᵢ > σ₁ · max(m, n) · eps(float32)} (METRICS.md numerical_rank); 0 for a zero update."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or s[0] <= 0:
        return 0
    return int((s > s[0] * max(shape) * np.finfo(np.float32).eps).sum())


def update_svd(a: Update, k: int | None = None, precision: torch.dtype = torch.float32, seed: int = 0) -> SVD:
    """Singular values and vectors of ΔW, cut to its numerical rank so no vector spans a zero direction.

    Low-rank updates: the exact factored SVD (every non-zero direction). Dense updates: the exact SVD, or
    the randomized top-k (Halko et al. 2011) when ``k`` is below min(m, n).

    Returns:
        An ``SVD`` with float64 CPU tensors ``s`` (k,), ``u`` (m, k), ``v`` (n, k).
    """
    k = min(a.shape) if k is None else k
    svd = SVDS[type(a)](a, k, precision, seed)
    s = torch.as_tensor(svd.s, dtype=torch.float64)
    keep = min(numerical_rank(s.numpy(), a.shape), k)
    return SVD(s[:keep], svd.fro_norm, svd.method, svd.complete,
               torch.as_tensor(svd.u)[:, :keep].to(torch.float64), torch.as_tensor(svd.v)[:, :keep].to(torch.float64))


def _merge_lowrank(w: torch.Tensor, a: LowRank) -> torch.Tensor:
    left, right = a.left.to(w.device, w.dtype), a.right.to(w.device, w.dtype)
    return torch.addmm(w, left, right, alpha=a.scale)  # W + s · (m, r) @ (r, n) -> (m, n)


def _merge_dense(w: torch.Tensor, a: Dense) -> torch.Tensor:
    return w + a.matrix.to(w.device, w.dtype)


MERGE: dict[type, Callable[[torch.Tensor, Update], torch.Tensor]] = {LowRank: _merge_lowrank, Dense: _merge_dense}


def merged(w: torch.Tensor, a: Update) -> torch.Tensor:
    """W_tuned = W + ΔW in W's dtype and device: a new dense matrix, the one place a low-rank ΔW is formed."""
    if tuple(w.shape) != a.shape:
        raise ValueError(f"the base weight is {tuple(w.shape)} but the update is {a.shape}")
    return MERGE[type(a)](w, a)
