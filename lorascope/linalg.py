"""Singular values (and vectors on request) of one update, by the cheapest exact route.

Three methods, picked from ``METHODS`` by name:

- ``factored``: ΔW = s · L @ R with L (m, r) and R (r, n) never formed. QR of L and Rᵀ, then the
  SVD of the small core s · R_L @ R_Rᵀ gives the exact non-zero singular values (METRICS.md).
- ``exact``: ``torch.linalg.svdvals`` of a dense ΔW (``torch.linalg.svd`` when vectors are asked for).
- ``randomized``: the top-k by a randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4)
  with ‖ΔW‖_F computed exactly from the entries, so energy fractions stay exact.

This file owns no file access and no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The factored path runs in float64 whatever the requested precision: its cost is O((m + n) r²)
# and float64 keeps small singular values accurate to ~1e-12 relative.
FACTORED_DTYPE = torch.float64
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SVD:
    """Singular values of one update, descending, on the CPU.

    ``u`` (m, k) and ``v`` (n, k) hold left and right singular vectors when asked for.
    ``complete`` is True when every singular value not in ``s`` is exactly zero.
    """

    s: torch.Tensor
    fro_norm: float
    method: str
    complete: bool
    u: torch.Tensor | None = None
    v: torch.Tensor | None = None


def _svd_flip(u: torch.Tensor, vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic signs: the largest-magnitude entry of each left vector is positive (sklearn's svd_flip)."""
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(u.shape[1], device=u.device)])
    signs[signs == 0] = 1
    return u * signs, vh * signs[:, None]


def factored_svd(
    left: torch.Tensor, right: torch.Tensor, scale: float = 1.0, compute_uv: bool = False
) -> SVD:
    """Exact SVD of s · left @ right without forming it.

    Args:
        left: (m, r), e.g. LoRA's B.
        right: (r, n), e.g. LoRA's A.
        scale: s, e.g. lora_alpha / r.
        compute_uv: also return U = Q_L U_c and V = Q_R V_c.

    Returns:
        An ``SVD`` with the min(m, n, r) singular values of the product, ``complete=True``.
    """
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
        raise ValueError(f"factors do not chain: left {tuple(left.shape)}, right {tuple(right.shape)}")
    left = left.to(FACTORED_DTYPE)
    right = right.to(FACTORED_DTYPE)
    q_l, r_l = torch.linalg.qr(left)  # (m, k1), (k1, r)
    q_r, r_r = torch.linalg.qr(right.T)  # (n, k2), (k2, r)
    core = scale * (r_l @ r_r.T)  # (k1, r) @ (r, k2) -> (k1, k2)
    fro = float(torch.linalg.matrix_norm(core).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(core)
        return SVD(s.cpu(), fro, "factored", True)
    u_c, s, vh_c = torch.linalg.svd(core, full_matrices=False)
    u = q_l @ u_c  # (m, k1) @ (k1, k) -> (m, k)
    vh = vh_c @ q_r.T  # (k, k2) @ (k2, n) -> (k, n)
    u, vh = _svd_flip(u, vh)
    return SVD(s.cpu(), fro, "factored", True, u.cpu(), vh.T.cpu())


def exact_svd(delta: torch.Tensor, compute_uv: bool = False) -> SVD:
    """All min(m, n) singular values of a dense (m, n) update, in the dtype it arrives in."""
    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        return SVD(torch.linalg.svdvals(delta).cpu().double(), fro, "exact", True)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    u, vh = _svd_flip(u, vh)
    return SVD(s.cpu().double(), fro, "exact", True, u.cpu(), vh.T.cpu())


def randomized_params(k: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Oversampling and power iterations for a top-k randomized SVD.

    Oversampling p = 10 (Halko et al. §4.2 find 5–10 enough for Gaussian test matrices); power
    iterations q = 7 when k < 0.1 · min(m, n), else 4 — the schedule scikit-learn's
    ``randomized_svd`` uses, which makes the spectral decay of the sketched matrix σ^(2q+1).
    """
    oversample = 10
    n_iter = 7 if k < 0.1 * min(shape) else 4
    return oversample, n_iter


def randomized_svd(delta: torch.Tensor, k: int, seed: int = 0, compute_uv: bool = False) -> SVD:
    """Top-k singular values of a dense (m, n) update by a randomized range finder.

    Halko, Martinsson & Tropp 2011, Algorithm 4.4 (subspace iteration with re-orthonormalization).
    ‖ΔW‖_F is exact, from the entries; ``complete`` is False unless k covers min(m, n), in which
    case the exact SVD is used instead.
    """
    m, n = delta.shape
    if k >= min(m, n):
        return exact_svd(delta, compute_uv)
    oversample, n_iter = randomized_params(k, (m, n))
    width = min(k + oversample, min(m, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, width, generator=gen, dtype=delta.dtype).to(delta.device)
    q, _ = torch.linalg.qr(delta @ omega)  # (m, n) @ (n, w) -> (m, w)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(delta.T @ q)  # (n, m) @ (m, w) -> (n, w)
        q, _ = torch.linalg.qr(delta @ q)  # (m, n) @ (n, w) -> (m, w)
    small = q.T @ delta  # (w, m) @ (m, n) -> (w, n)
    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(small)[:k]
        return SVD(s.cpu().double(), fro, "randomized", False)
    u_s, s, vh = torch.linalg.svd(small, full_matrices=False)
    u = q @ u_s  # (m, w) @ (w, w) -> (m, w)
    u, vh = _svd_flip(u[:, :k], vh[:k])
    return SVD(s[:k].cpu().double(), fro, "randomized", False, u.cpu(), vh.T.cpu())


METHODS = {"factored": factored_svd, "exact": exact_svd, "randomized": randomized_svd}


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is an error the caller reports."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)
