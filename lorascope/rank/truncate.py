"""One module's top-k singular triplets, read from its checkpoint: the streaming unit of export and functional sweeps.

The saved spectra hold σ only; a truncation needs the singular vectors too, so they are recomputed one
module at a time (never two dense updates in memory):

- LoRA factors: ``factored_svd`` of s·B@A in float64 — exact, O((m+n)r²), ΔW never formed.
- Dense ΔW (full fine-tune, DoRA, modules_to_save): the exact SVD, or the randomized top-k
  (Halko, Martinsson & Tropp 2011, Alg. 4.4, as ``linalg.randomized_svd``) when k ≤ min(m, n) / 10
  with ``svd='auto'``. Both return an orthogonal projection U_k U_kᵀ ΔW, so the achieved error is exactly
  sqrt(1 − Σ_{i≤k} s_i² / ‖ΔW‖_F²), reported next to the optimal sqrt(1 − energy(k)) of the saved spectrum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..delta import Delta, DenseDelta, DoraDelta, LowRankDelta
from ..linalg import PRECISIONS, exact_svd, factored_svd, randomized_svd, torch_dtype

SVD_CHOICES = ("auto", "exact", "randomized")
RANDOMIZED_BELOW = 0.1  # 'auto' uses the randomized top-k when k ≤ this fraction of min(m, n)


@dataclass(frozen=True)
class TruncateOptions:
    """How the singular vectors of a dense update are computed."""

    svd: str = "auto"
    precision: str = "float32"  # dense ΔW; LoRA factors are always handled in float64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.svd not in SVD_CHOICES:
            raise ValueError(f"svd must be one of {SVD_CHOICES}, got {self.svd!r}")
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
    lost: float = float("nan")  # ‖ΔW − U diag(s) Vᵀ‖_F², from the dropped σ where they are known

    @property
    def rank(self) -> int:
        return int(self.s.size)

    def energy(self) -> float:
        """Σ s_i² / ‖ΔW‖_F²: what this truncation keeps (exact for both SVD routes, module docstring)."""
        total = self.fro_norm**2
        return float(np.sum(self.s**2) / total) if total > 0 else 1.0

    def rel_error(self) -> float:
        """‖ΔW − ΔW_k‖_F / ‖ΔW‖_F: from the dropped singular values (exact routes), else sqrt(1 − energy)."""
        total = self.fro_norm**2
        if total <= 0:
            return 0.0
        lost = self.lost if np.isfinite(self.lost) else max(0.0, total - float(np.sum(self.s**2)))
        return float(np.sqrt(lost / total))

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


def _keep(u: Any, s: Any, v: Any, k: int, fro: float, method: str, complete: bool) -> TopK:
    """The top k triplets; ``complete`` when ``s`` holds every non-zero σ (its tail is then the exact loss)."""
    s_all = _np(s)
    s = s_all[:k]
    keep = int(np.count_nonzero(s > 0))  # exactly-zero directions carry nothing; drop them
    lost = float(np.sum(s_all[keep:] ** 2)) if complete else float("nan")
    return TopK(_np(u)[:, :keep], s[:keep], _np(v)[:, :keep], float(fro), method, lost)


def _lowrank(d: LowRankDelta, k: int, opts: TruncateOptions) -> TopK:
    left, right = d.module.left.load_numpy(), d.module.right.load_numpy()  # (m, r), (r, n)
    svd = factored_svd(left, right, d.module.scale, compute_uv=True)
    return _keep(svd.u, svd.s, svd.v, k, svd.fro_norm, svd.method, svd.complete)


def _dense_matrix(d: Delta, opts: TruncateOptions) -> Any:
    """ΔW (m, n) as a torch tensor of the chosen precision."""
    from ..analysis import dora_update
    from ..checkpoint.base import upcast

    dtype = torch_dtype(opts.precision)
    if isinstance(d, DoraDelta):
        return dora_update(d, dtype)[0]
    delta = upcast(d.tuned.fetch(), dtype, "cpu", copy=True)
    delta.sub_(upcast(d.base.fetch(), dtype, "cpu"))  # in place: two matrices at the peak
    return delta


def dense_top_k(delta: Any, k: int, opts: TruncateOptions) -> TopK:
    """Top-k triplets of a dense torch ΔW by the route ``opts.svd`` names (module docstring)."""
    p = min(delta.shape)
    randomized = opts.svd == "randomized" or (opts.svd == "auto" and k <= RANDOMIZED_BELOW * p)
    if randomized and k < p:
        svd = randomized_svd(delta, k, seed=opts.seed, compute_uv=True)
    else:
        svd = exact_svd(delta, compute_uv=True)
    return _keep(svd.u, svd.s, svd.v, k, svd.fro_norm, svd.method, svd.complete)


def _dense(d: Delta, k: int, opts: TruncateOptions) -> TopK:
    return dense_top_k(_dense_matrix(d, opts), k, opts)


TOP_K: dict[type, Callable[[Any, int, TruncateOptions], TopK]] = {
    LowRankDelta: _lowrank,
    DenseDelta: _dense,
    DoraDelta: _dense,
}


def top_k(d: Delta, k: int, opts: TruncateOptions | None = None) -> TopK:
    """The top-k singular triplets of one update, read from its checkpoint (k ≥ 1)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return TOP_K[type(d)](d, k, opts or TruncateOptions())


def full_update(d: Delta, opts: TruncateOptions | None = None) -> Any:
    """The untruncated ΔW (m, n) as a float32 torch tensor (s·B@A formed only here, for one module)."""
    import torch

    opts = opts or TruncateOptions()
    if isinstance(d, LowRankDelta):
        left = torch.from_numpy(d.module.left.load_numpy())  # (m, r)
        right = torch.from_numpy(d.module.right.load_numpy())  # (r, n)
        return (d.module.scale * (left @ right)).float()  # (m, r) @ (r, n) -> (m, n)
    return _dense_matrix(d, opts).float()
