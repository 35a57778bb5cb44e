"""Orthogonal fine-tuning: OFT and BOFT rotate the base weight, so ΔW = W' − W0 is dense and needs the base.

- ``oft`` (Qiu et al. 2023; PEFT's current OFT, ``oft.layer.OFTRotationModule``): part ``oft_R`` holds, per
  block, the b(b−1)/2 entries above the diagonal of a skew-symmetric Q (b the block size; one shared block
  when ``block_share``). Each block becomes an orthogonal R by the Cayley transform, exactly
  R = (I − Q)(I + Q)⁻¹, or by PEFT's Cayley–Neumann series R = I + 2Q + 2Q² + … (``use_cayley_neumann``,
  ``num_cayley_neumann_terms``); COFT first projects each Q into the Frobenius ball of radius eps/√(blocks).
  PEFT merges W' = W0 Rᵀ for a linear or conv layer (conv weights flattened to (out, in·kh·kw), rotated along
  in·kh·kw) and W' = W0 R for an embedding (rotated along the embedding dimension), with R the
  block-diagonal matrix of the blocks. So ΔW = W0 (Rᵀ − I), resp. W0 (R − I), computed block by block
  without forming R.
- ``boft`` (Liu et al. 2024, BOFT, Eq. 5; PEFT ``boft.layer``): part ``boft_R`` (N, D, b, b) holds N butterfly
  factors of D blocks each; block X becomes R = (I − S)(I + S)⁻¹ with S = (X − Xᵀ)/2; factor i is
  Mᵢ = Pᵢ diag(R_i1 … R_iD) Pᵢᵀ with PEFT's block-butterfly permutation Pᵢ, and M = M_{N−1} ⋯ M₀. Part
  ``boft_s`` scales each output row. PEFT merges W' = diag(s) W0 Mᵀ, so ΔW = diag(s) W0 Mᵀ − W0.

Both are computed in float64 from the base in the working precision and returned in its dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..linalg import Dense
from .family import Family, Tensors, register
from .lora import stored_params


# ---- the Cayley parametrisations ------------------------------------------------------------------------


def skew_from_upper(vec: Any, block: int) -> Any:
    """Skew-symmetric (k, b, b) blocks Q from their strictly upper-triangular entries (k, b(b−1)/2).

    PEFT ``OFTRotationModule._pytorch_skew_symmetric``: Q[rows, cols] = v for ``torch.triu_indices(b, b, 1)``,
    then Q − Qᵀ.
    """
    import torch

    rows, cols = torch.triu_indices(block, block, 1)
    q = vec.new_zeros((vec.shape[0], block, block))
    q[:, rows, cols] = vec
    return q - q.transpose(1, 2)


def coft_project(q: Any, eps: float) -> Any:
    """COFT: each block Q scaled into the Frobenius ball of radius eps/√k, k the number of stored blocks.

    PEFT ``OFTRotationModule._project_batch`` (Qiu et al. 2023, §4, constrained OFT).
    """
    import torch

    radius = eps / math.sqrt(q.shape[0])
    norms = torch.linalg.matrix_norm(q, keepdim=True)  # (k, 1, 1)
    return torch.where(norms <= radius, q, radius * q / norms)


def cayley_exact(q: Any) -> Any:
    """R = (I − Q)(I + Q)⁻¹ for each block (PEFT: ``torch.linalg.solve(I + Q, I − Q, left=False)``)."""
    import torch

    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q)
    return torch.linalg.solve(eye + q, eye - q, left=False)


def cayley_neumann(q: Any, terms: int) -> Any:
    """PEFT's truncated Neumann series for the Cayley transform: I + 2Q + 2Q² + … (``_cayley_batch``).

    With t terms: I for t = 1; I + 2Q for t = 2; I + 2Q + 2Q² + Q³ for t ∈ {3, 4}; for t ≥ 5,
    I + 2(Q + … + Q^{t−2}) + Q^{t−1} — PEFT's loop, term for term.
    """
    import torch

    r = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).repeat(q.shape[0], 1, 1)
    if terms > 1:
        r = r + 2 * q
        if terms > 2:
            power = q @ q  # (k, b, b)
            r = r + 2 * power
            for _ in range(3, terms - 1):
                power = power @ q
                r = r + 2 * power
            r = r + power @ q
    return r


# ---- OFT ------------------------------------------------------------------------------------------------


def oft_blocks(vec: Any, p: dict[str, Any]) -> Any:
    """The orthogonal blocks R (k, b, b) of one OFT module from its ``oft_R`` (k, b(b−1)/2), in float64."""
    import torch

    q = skew_from_upper(vec.to(torch.float64), int(p["block_size"]))
    if p.get("coft"):
        q = coft_project(q, float(p["eps"]))
    if p.get("cayley_neumann", True):
        return cayley_neumann(q, int(p["neumann_terms"]))
    return cayley_exact(q)


def oft_update(w0: Any, vec: Any, p: dict[str, Any]) -> Any:
    """ΔW of OFT: W0 (Rᵀ − I) (linear, conv) or W0 (R − I) (embedding), R = diag(R_1 … R_k), in W0's dtype.

    Args:
        w0: the base weight (m, n) in ΔW's orientation (conv kernels flattened; an embedding as stored).
        vec: ``oft_R`` (k, b(b−1)/2); k = n / b, or 1 with ``block_share`` (the block repeats n / b times).
        p: the module's OFT parameters (block_size, block_share, coft, eps, cayley_neumann, neumann_terms,
            rotate: 'input' for W0 Rᵀ, 'embedding' for W0 R).
    """
    import torch

    blocks = oft_blocks(vec, p)  # (k, b, b)
    b = blocks.shape[-1]
    m, n = w0.shape
    eye = torch.eye(b, dtype=blocks.dtype, device=blocks.device)
    k = blocks - eye if p.get("rotate") == "embedding" else blocks.transpose(1, 2) - eye  # (k, b, b)
    if p.get("block_share"):
        k = k.expand(n // b, b, b)
    x = w0.to(torch.float64).reshape(m, n // b, b)
    delta = torch.einsum("mjb,jbc->mjc", x, k)  # each column block of W0 times its (Rᵀ − I): (m, n/b, b)
    return delta.reshape(m, n).to(w0.dtype)


def _oft(d, t: Tensors) -> Dense:
    return Dense(oft_update(t["base"], t["oft_R"], d.module.params))


def _oft_fit(m, ref) -> Any:
    rows, cols = ref.shape
    b = int(m.params["block_size"])
    if cols % b:
        return f"the base weight's {cols} input features are not a whole number of OFT blocks of size {b}"
    blocks = m.parts["oft_R"].stored_shape[0]
    if not m.params.get("block_share") and blocks * b != cols:
        return (
            f"oft_R holds {blocks} blocks of size {b} ({blocks * b} features) but the base weight has "
            f"{cols} input features"
        )
    return dataclasses.replace(m, shape=(rows, cols))


OFT = register(
    Family(
        name="oft",
        parts=("oft_R",),
        formula="W0 (Rᵀ − I), R = diag(R₁ … R_k) orthogonal Cayley blocks (W0 (R − I) for an embedding)",
        reference="Qiu et al. 2023 (OFT), Eq. 2, §4 (COFT); PEFT OFTRotationModule.get_weight, "
        "oft.Linear.merge",
        needs_base=True,
        form="Dense",
        build=_oft,
        numpy=False,
        params=stored_params,
        fit_base=_oft_fit,
    )
)


# ---- BOFT -----------------------------------------------------------------------------------------------


def butterfly_permutation(n: int, blocks: int, half_block: int, factors: int) -> np.ndarray:
    """PEFT's block-butterfly permutation (``BOFTLayer.block_butterfly_perm``): indices p with P[i, p[i]] = 1.

    Within each of the ``blocks`` chunks of size n / blocks, runs of ``half_block`` indices are reordered so
    the even-numbered runs come first, then the odd ones; the identity when ``factors`` is 0.
    """
    if factors == 0:
        return np.arange(n)
    size = n // blocks
    runs = size // half_block
    order = [*range(0, runs, 2), *range(1, runs, 2)]  # even runs, then odd runs
    within = np.concatenate([np.arange(r * half_block, (r + 1) * half_block) for r in order])
    return np.concatenate([start + within for start in range(0, n, size)])


def boft_rotation_t(x: Any, rot: Any) -> Any:
    """X Mᵀ for M = M_{N−1} ⋯ M₀, Mᵢ = Pᵢ diag(blocks) Pᵢᵀ, applied factor by factor (M never formed).

    Args:
        x: (m, n) float64.
        rot: ``boft_R`` (N, D, b, b), the raw (not yet skew) butterfly blocks, float64.
    """
    import torch

    n_factors, d, b, _ = rot.shape
    s = (rot - rot.transpose(-1, -2)) / 2
    blocks = cayley_exact(s.reshape(n_factors * d, b, b)).reshape(n_factors, d, b, b)
    m, n = x.shape
    for i in range(n_factors):  # X Mᵀ = X M₀ᵀ M₁ᵀ ⋯ M_{N−1}ᵀ
        perm = torch.as_tensor(butterfly_permutation(n, d // 2**i, b // 2, n_factors - 1), device=x.device)
        inv = torch.argsort(perm)
        y = x[:, inv].reshape(m, d, b)  # X Pᵢ, in column blocks
        y = torch.einsum("mjb,jcb->mjc", y, blocks[i]).reshape(m, n)  # (X Pᵢ) diag(R)ᵀ
        x = y[:, perm]  # ( … ) Pᵢᵀ
    return x


def boft_update(w0: Any, rot: Any, scale: Any) -> Any:
    """ΔW of BOFT: diag(s) W0 Mᵀ − W0, in W0's dtype.

    Args:
        w0: the base weight (m, n) in ΔW's orientation (conv kernels flattened).
        rot: ``boft_R`` (N, D, b, b) with D·b = n.
        scale: ``boft_s``, m entries ((m, 1) for a linear layer, (1, m) for a conv layer).
    """
    import torch

    x = w0.to(torch.float64)
    rotated = boft_rotation_t(x, rot.to(torch.float64))
    delta = scale.reshape(-1, 1).to(torch.float64) * rotated - x  # (m, 1) * (m, n)
    return delta.to(w0.dtype)


def _boft(d, t: Tensors) -> Dense:
    return Dense(boft_update(t["base"], t["boft_R"], t["boft_s"]))


def _boft_fit(m, ref) -> Any:
    if tuple(ref.shape) != tuple(m.shape):
        return (
            f"boft_R rotates {m.shape[1]} input features and boft_s scales {m.shape[0]} output features, "
            f"but the base weight is {list(ref.shape)} (stored {list(ref.stored_shape)})"
        )
    return m


BOFT = register(
    Family(
        name="boft",
        parts=("boft_R", "boft_s"),
        formula="diag(s) W0 Mᵀ − W0, M a product of butterfly-permuted block-diagonal Cayley rotations",
        reference="Liu et al. 2024 (BOFT), Eq. 5; PEFT boft.layer.Linear.get_delta_weight / merge",
        needs_base=True,
        form="Dense",
        build=_boft,
        numpy=False,
        params=stored_params,
        fit_base=_boft_fit,
    )
)
