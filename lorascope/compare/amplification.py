"""How much ΔW amplifies directions W already has (Hu et al. 2021, §7.3 and Table 7).

Project W onto the r-dimensional subspace of ΔW: Uᵀ W V with U (m, r), V (n, r) the top-r left and right
singular vectors of ΔW. The amplification factor is ‖ΔW‖_F / ‖Uᵀ W V‖_F (docs/METRICS.md 'amplification').
Table 7 sets ‖Uᵀ W V‖_F for ΔW's directions beside W's own top-r directions (= sqrt(Σ_{i≤r} σᵢ(W)²)) and
random orthonormal ones (E‖Uᵀ W V‖_F² = r²‖W‖_F²/(m n)). Pure functions of tensors; no file access.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..linalg import Dense, svd


def projection_norm(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """‖Uᵀ W V‖_F in float64.

    Args:
        w: (m, n) the base weight.
        u: (m, r) orthonormal columns.
        v: (n, r) orthonormal columns.
    """
    w64 = w.to(torch.float64)
    wv = w64 @ v.to(w64.device, torch.float64)  # (m, n) @ (n, r) -> (m, r)
    core = u.to(w64.device, torch.float64).T @ wv  # (r, m) @ (m, r) -> (r, r)
    return float(torch.linalg.matrix_norm(core).cpu())


def amplification(delta_fro: float, projection: float) -> float:
    """‖ΔW‖_F / ‖Uᵀ W V‖_F (Hu et al. 2021, §7.3); ≈ 21.5 for GPT-3's layer-48 W_q at r = 4 (Table 7)."""
    return delta_fro / projection if projection > 0 else math.inf


def random_orthonormal(n: int, r: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, r) float64 orthonormal columns spanning a uniformly random subspace: QR of a Gaussian drawn from
    ``rng``, signs fixed by R's diagonal (Mezzadri 2007), so the draw depends on the seed alone."""
    q, rr = torch.linalg.qr(torch.from_numpy(rng.standard_normal((n, r))))  # (n, r), (r, r)
    return q * torch.sign(torch.diagonal(rr))


def random_expected(w_fro: float, r: int, shape: tuple[int, int]) -> float:
    """sqrt(E‖Uᵀ W V‖_F²) = r ‖W‖_F / sqrt(m n) for random orthonormal U (m, r), V (n, r).

    Each of the r² entries uᵀWv has E(uᵀWv)² = ‖W‖_F²/(m n) for independent uniform unit u, v.
    With Hu et al.'s ‖W_q‖_F = 61.95 and m = n = 12288 this gives 0.020 at r = 4 and 0.32 at r = 64
    (Table 7 prints 0.02 and 0.33 for one draw).
    """
    m, n = shape
    return r * w_fro / math.sqrt(m * n)


def own_top_norm(base_sigma: np.ndarray, r: int) -> float:
    """‖U_rᵀ W V_r‖_F = sqrt(Σ_{i≤r} σᵢ(W)²) for W's own top-r singular vectors (Table 7, column 'W_q')."""
    s = np.asarray(base_sigma, np.float64)[:r]
    return float(np.sqrt(np.sum(s * s)))


def top_singular_values(w: torch.Tensor, r: int, seed: int = 0) -> np.ndarray:
    """The top-r singular values of W, for sqrt(Σ_{i≤r} σᵢ²) when W's full SVD is not otherwise needed.

    A randomized range finder (Halko et al. 2011, Alg. 4.4) of width 2r + 10 (+10 oversampling), exact
    SVD when that reaches min(m, n). Oversampling by r makes the captured top-r energy exact enough: on
    1024×1024 power-law spectra σᵢ ∝ i^-0.5 the relative error of sqrt(Σ_{i≤r} σᵢ²) is ≤ 6e-6 for
    r ≤ 64 (≤ 8e-4 on the flatter σᵢ ∝ i^-0.25); ``tests/compare/test_amplification.py`` bounds it.
    """
    k = min(2 * r + 10, min(w.shape))
    return np.asarray(svd(Dense(w), k=k, method="randomized", seed=seed).s, np.float64)[:r]


def table7(
    w: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    delta_fro: float,
    base_sigma: np.ndarray,
    rng: np.random.Generator,
    w_fro: float | None = None,
) -> dict[str, float]:
    """Hu et al. Table 7 for one update: ‖Uᵀ W V‖_F from ΔW's, W's own and random top-r directions.

    Args:
        w: (m, n) the base weight.
        u: (m, r) top-r left singular vectors of ΔW; r = u.shape[1].
        v: (n, r) top-r right singular vectors of ΔW.
        delta_fro: ‖ΔW‖_F (the whole update, as Hu et al. define the factor).
        base_sigma: W's singular values, descending, at least r of them.
        rng: draws the random directions.
        w_fro: ‖W‖_F when already known.

    Returns:
        rank (r), proj_delta, proj_w, proj_random (one draw), random_expected, base_fro_norm, amplification.
    """
    m, n = w.shape
    r = u.shape[1]
    if w_fro is None:
        w_fro = float(torch.linalg.vector_norm(w, dtype=torch.float64).cpu())
    proj_delta = projection_norm(w, u, v)
    proj_random = projection_norm(w, random_orthonormal(m, r, rng), random_orthonormal(n, r, rng))
    return {
        "rank": r,
        "proj_delta": proj_delta,
        "proj_w": own_top_norm(base_sigma, r),
        "proj_random": proj_random,
        "random_expected": random_expected(w_fro, r, (m, n)),
        "base_fro_norm": w_fro,
        "amplification": amplification(delta_fro, proj_delta),
    }
