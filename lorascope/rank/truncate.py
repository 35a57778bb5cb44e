"""One module's top-k singular triplets, read from its checkpoint: the streaming unit of export and
functional sweeps.

The saved spectra hold σ only; a truncation needs the singular vectors too, so they are recomputed one
module at a time (never two dense updates in memory):

- Factored forms (LoRA, LoKr, …): exact in float64, ΔW never formed (``lorascope.linalg.svd``).
- Dense ΔW (full fine-tune, DoRA, IA3, modules_to_save): the exact SVD, or the randomized top-k
  (Halko, Martinsson & Tropp 2011, Alg. 4.4), as ``svd`` says: 'exact', 'randomized', or 'auto', which
  ``lorascope.linalg.svd`` resolves (randomized when k ≤ ``linalg.RANDOMIZED_BELOW``·min(m, n)).

The achieved error ‖ΔW − U_k diag(s) V_kᵀ‖_F is never computed as ‖ΔW‖_F² − Σ s_i², which cancels when
the truncation keeps nearly everything (a 2e-7 error read 3e-4 that way). For a factored form it is the
float64 tail Σ_{i>k} σ_i²; for a dense ΔW it is summed entry by entry in float64 over row blocks of
ΔW − U_k diag(s) V_kᵀ, which also counts the SVD's own error. It is reported next to the optimal
sqrt(1 − energy(k)) of the saved spectrum (itself a tail sum, ``lorascope.rank.spectra``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..delta import Delta, load_form
from ..linalg import PRECISIONS, SVD_METHODS, Dense, Form, svd
from ..metrics import tail_energy


@dataclass(frozen=True)
class TruncateOptions:
    """How the singular vectors of a dense update are computed."""

    svd: str = "auto"
    precision: str = "float64"  # dense ΔW; LoRA factors are always handled in float64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.svd not in SVD_METHODS:
            raise ValueError(f"svd must be one of {SVD_METHODS}, got {self.svd!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class TopK:
    """ΔW ≈ U diag(s) Vᵀ, U (m, k), s (k,), V (n, k), float64 numpy; ``fro_norm`` = ‖ΔW‖_F exactly."""

    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    fro_norm: float
    method: str
    lost: float = float(
        "nan"
    )  # ‖ΔW − U diag(s) Vᵀ‖_F²: the float64 tail, or the residual summed entry by entry

    @property
    def rank(self) -> int:
        return int(self.s.size)

    def energy(self) -> float:
        """Σ s_i² / ‖ΔW‖_F²: what this truncation keeps (exact for both SVD routes, module docstring)."""
        total = self.fro_norm**2
        return float(np.sum(self.s**2) / total) if total > 0 else 1.0

    def rel_error(self) -> float:
        """‖ΔW − ΔW_k‖_F / ‖ΔW‖_F from ``lost`` (module docstring); never by subtracting Σ s² from ‖ΔW‖_F²."""
        total = self.fro_norm**2
        if total <= 0:
            return 0.0
        return float(np.sqrt(self.lost / total))

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, A) with B @ A = U diag(s) Vᵀ and balanced norms: B = U·√s (m, k), A = √s·Vᵀ (k, n)."""
        root = np.sqrt(self.s)
        return self.u * root, (self.v * root).T  # (m, k) · (k,) ; ((n, k) · (k,))ᵀ -> (k, n)

    def matrix(self) -> np.ndarray:
        """The rank-k truncation U diag(s) Vᵀ, (m, n) — for tests and small modules only."""
        return (self.u * self.s) @ self.v.T  # (m, k) @ (k, n) -> (m, n)


def _np(x: Any) -> np.ndarray:
    """float64 numpy from a numpy array or a CPU torch tensor."""
    return x.detach().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _keep(u: Any, s: Any, v: Any, k: int, fro: float, method: str, matrix: Any = None) -> TopK:
    """The top k triplets. The loss is the residual of ``matrix`` (a dense ΔW) where given, else the float64
    tail of ``s``, which then holds every non-zero σ (a factored or Kronecker form)."""
    s_all = _np(s)
    s = s_all[:k]
    keep = int(np.count_nonzero(s > 0))  # exactly-zero directions carry nothing; drop them
    u, v = _np(u)[:, :keep], _np(v)[:, :keep]
    if matrix is not None:
        lost = residual_sq(matrix, u, s[:keep], v)
    else:
        lost = float(tail_energy(s_all)[keep])
    return TopK(u, s[:keep], v, float(fro), method, lost)


def residual_sq(
    matrix: Any, u: np.ndarray, s: np.ndarray, v: np.ndarray, block_bytes: int = 8 << 20
) -> float:
    """‖M − U diag(s) Vᵀ‖_F² summed entry by entry in float64 over row blocks of M (m, n); U (m, k), V (n, k).

    Each block's residual is formed in float64 and squared-summed by numpy's pairwise summation, so a
    small error is measured, not left over from cancelling two large sums.
    """
    a = matrix.detach().cpu().numpy() if hasattr(matrix, "detach") else np.asarray(matrix)
    m, n = a.shape
    us = u * s  # (m, k) · (k,)
    vt = np.ascontiguousarray(v.T)  # (k, n)
    step = max(1, block_bytes // (8 * max(n, 1)))
    total = 0.0
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        block = a[r0:r1].astype(np.float64) - us[r0:r1] @ vt  # (b, k) @ (k, n) -> (b, n)
        total += float(np.add.reduce((block * block).reshape(-1)))
    return total


def dense_top_k(delta: Any, k: int, opts: TruncateOptions) -> TopK:
    """Top-k triplets of a dense torch ΔW by the route ``opts.svd`` names (module docstring)."""
    return form_top_k(Dense(delta), k, opts)


def form_top_k(form: Form, k: int, opts: TruncateOptions) -> TopK:
    """Top-k triplets of ΔW in any form: factored forms exactly, dense ones as ``opts.svd`` says."""
    result = svd(form, compute_uv=True, k=k, method=opts.svd, seed=opts.seed)
    matrix = form.matrix if isinstance(form, Dense) else None
    return _keep(result.u, result.s, result.v, k, result.fro_norm, result.method, matrix)


def top_k(d: Delta, k: int, opts: TruncateOptions | None = None) -> TopK:
    """The top-k singular triplets of one update, read from its checkpoint (k ≥ 1)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    opts = opts or TruncateOptions()
    return form_top_k(load_form(d, opts.precision), k, opts)


def full_update(d: Delta, opts: TruncateOptions | None = None) -> Any:
    """The untruncated ΔW (m, n) as a float32 torch tensor (a product formed only here, for one module)."""
    import torch

    opts = opts or TruncateOptions()
    return torch.as_tensor(load_form(d, opts.precision).to_dense()).float()
