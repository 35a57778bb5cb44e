"""Subspace similarity φ(i, j) between the singular directions of two updates (Hu et al. 2021, §7.2, Eq. 4).

φ(A₁, A₂, i, j) = ‖U₁[:, :i]ᵀ U₂[:, :j]‖_F² / min(i, j) ∈ [0, 1] (docs/METRICS.md 'subspace similarity'): 1
when the smaller subspace lies in the larger, about max(i, j)/m for two independent random subspaces of R^m
(E‖P_iᵀ P_j‖_F² = i·j/m). Pure functions of singular-vector matrices; the driver picks left or right
vectors (``GridOptions.side``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

SIDES = ("left", "right")


@dataclass(frozen=True)
class GridOptions:
    """Which singular vectors, and which (i, j) cells of φ are kept."""

    side: str = "left"  # docs/METRICS.md default; Hu et al. compare the right singular vectors of A ('right')
    cap: int = 64  # i, j go up to min(rank, cap): a full-rank dense update contributes its top 64 directions
    full_to: int = (
        16  # every i up to this, then log-spaced (``per_octave`` points per doubling) up to the cap
    )
    per_octave: int = 4

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {self.side!r}")
        for name in ("cap", "full_to", "per_octave"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


def grid_points(k: int, full_to: int = 16, per_octave: int = 4) -> np.ndarray:
    """1, 2, …, min(k, full_to), then about ``per_octave`` log-spaced integers per doubling up to k (k
    included)."""
    if k < 1:
        return np.zeros(0, dtype=np.int64)
    dense = np.arange(1, min(k, full_to) + 1)
    if k <= full_to:
        return dense
    steps = max(1, math.ceil(per_octave * math.log2(k / full_to)))
    sparse = np.unique(np.round(np.geomspace(full_to, k, steps + 1)).astype(np.int64))
    return np.unique(np.concatenate([dense, sparse, [k]]))


def overlap_energy(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """C[i-1, j-1] = ‖U₁[:, :i]ᵀ U₂[:, :j]‖_F² for every i ≤ k₁, j ≤ k₂.

    Args:
        u1: (m, k₁) orthonormal columns, descending singular values.
        u2: (m, k₂) likewise.
    """
    u1, u2 = np.asarray(u1, np.float64), np.asarray(u2, np.float64)
    if u1.shape[0] != u2.shape[0]:
        raise ValueError(f"singular vectors live in different spaces: {u1.shape[0]} vs {u2.shape[0]} rows")
    g = u1.T @ u2  # (k1, m) @ (m, k2) -> (k1, k2): cosines between directions
    return np.cumsum(np.cumsum(g * g, axis=0), axis=1)


def subspace_similarity(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """φ(i, j) for every i ≤ k₁, j ≤ k₂ (Hu et al. 2021, Eq. 4), as a (k₁, k₂) array; entry [i-1, j-1]."""
    c = overlap_energy(u1, u2)
    i = np.arange(1, c.shape[0] + 1)[:, None]
    j = np.arange(1, c.shape[1] + 1)[None, :]
    return c / np.minimum(i, j)


def random_expectation(i: np.ndarray, j: np.ndarray, m: int) -> np.ndarray:
    """E φ(i, j) = max(i, j)/m for independent uniformly random subspaces of R^m."""
    return np.maximum(i, j) / m


def similarity_grid(u1: np.ndarray, u2: np.ndarray, opts: GridOptions = GridOptions()) -> pd.DataFrame:
    """φ on the (i, j) grid of ``opts`` with the random expectation beside each value.

    Args:
        u1: (m, k₁) singular vectors of ΔW₁ (left or right, as ``opts.side`` says), descending.
        u2: (m, k₂) those of ΔW₂.

    Returns:
        Columns i, j, phi, random; k₁ and k₂ are first cut to ``opts.cap``.
    """
    u1, u2 = np.asarray(u1)[:, : opts.cap], np.asarray(u2)[:, : opts.cap]
    if u1.shape[1] == 0 or u2.shape[1] == 0:
        return pd.DataFrame({"i": [], "j": [], "phi": [], "random": []})
    phi = subspace_similarity(u1, u2)
    gi = grid_points(u1.shape[1], opts.full_to, opts.per_octave)
    gj = grid_points(u2.shape[1], opts.full_to, opts.per_octave)
    ii, jj = np.meshgrid(gi, gj, indexing="ij")
    return pd.DataFrame(
        {
            "i": ii.ravel(),
            "j": jj.ravel(),
            "phi": phi[ii - 1, jj - 1].ravel(),
            "random": random_expectation(ii, jj, u1.shape[0]).ravel(),
        }
    )


def similarity_summary(u1: np.ndarray, u2: np.ndarray, cap: int = 64) -> dict[str, float]:
    """The top directions' overlap in a few numbers (k₁, k₂ = the ranks compared, each ≤ ``cap``).

    phi_1_1: cos² of the two top directions. phi_min: φ(k, k), k = min(k₁, k₂), the top-k against the top-k.
    phi_all: φ(k₁, k₂), the share of the smaller subspace inside the larger. shared_dims: ‖U₁ᵀU₂‖_F² = Σ cos²
    of the principal angles, the number of dimensions the two share. random_all: max(k₁, k₂)/m, phi_all's
    random expectation; random_dims: k₁k₂/m, shared_dims's.
    """
    u1, u2 = np.asarray(u1)[:, :cap], np.asarray(u2)[:, :cap]
    m, k1, k2 = u1.shape[0], u1.shape[1], u2.shape[1]
    out = {"k_x": k1, "k_y": k2}
    if k1 == 0 or k2 == 0:
        return {
            **out,
            "phi_1_1": math.nan,
            "phi_min": math.nan,
            "phi_all": math.nan,
            "shared_dims": math.nan,
            "random_all": math.nan,
            "random_dims": math.nan,
        }
    c = overlap_energy(u1, u2)
    k = min(k1, k2)
    return {
        **out,
        "phi_1_1": float(c[0, 0]),
        "phi_min": float(c[k - 1, k - 1] / k),
        "phi_all": float(c[-1, -1] / k),
        "shared_dims": float(c[-1, -1]),
        "random_all": max(k1, k2) / m,
        "random_dims": k1 * k2 / m,
    }
