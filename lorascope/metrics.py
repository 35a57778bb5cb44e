"""Per-matrix metrics: pure functions of the singular values of one update (docs/METRICS.md).

Every function takes the known singular values ``sigma`` (descending, float64) and, where it
matters, the full count ``p = min(m, n)``. Values past ``len(sigma)`` are either exactly zero
(``complete=True``: a factored or exact SVD) or unknown (``complete=False``: a randomized
top-k SVD). A metric that cannot be determined from what is known is returned as ``None``,
never as a guess.

The numerical floor (docs/METRICS.md): every SVD route bounds its own absolute error on each value
(``lorascope.linalg.SVD.floor``). The metrics that look at small singular values — entropy_rank,
numerical_rank, gd_rank — treat values at or below that bound as zero, so what they count is signal
the computation resolved, not its rounding. The energy metrics need no floor: they move by at most
p·floor² of ‖ΔW‖_F².
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)
ENERGY_LEVELS = (0.90, 0.95, 0.99)
# Cumulative energies are compared with a relative slack of this size, so a spectrum that
# reaches a level exactly (σ² = [9, 1] and τ = 0.9) is not pushed one index further by rounding.
_ENERGY_SLACK = 1e-12


class _Checked(np.ndarray):
    """A float64 spectrum already checked by ``_as_sigma`` (module_metrics checks once, not per metric)."""


def _as_sigma(sigma: Any) -> np.ndarray:
    if isinstance(sigma, _Checked):
        return sigma
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if s.size and (np.any(np.diff(s) > 1e-12 * max(s[0], 1e-300)) or s[-1] < 0):
        raise ValueError("singular values must be non-negative and sorted in descending order")
    return s.view(_Checked)


def resolved(sigma: Any, floor: float = 0.0) -> np.ndarray:
    """σ with every value at or below ``floor`` set to zero (docs/METRICS.md 'The numerical floor')."""
    return np.asarray(_resolved(sigma, floor))


def _resolved(sigma: Any, floor: float) -> np.ndarray:
    s = _as_sigma(sigma)
    return np.where(s > floor, s, 0.0).view(_Checked) if floor > 0 else s


def tail_energy(sigma: Any, total: float | None = None) -> np.ndarray:
    """Σ_{i>k} σi² for k = 0..len(sigma): the squared error of the best rank-k approximation (Eckart–Young).

    Summed from the smallest value up (a reversed cumulative sum), never as ‖ΔW‖_F² − Σ_{i≤k} σi², which
    cancels when the tail is small. With ``total`` (‖ΔW‖_F² of a top-k spectrum whose tail was not
    computed), the unknown remainder max(total − Σσi², 0) is added: the one subtraction left, exact to
    ε·total.
    """
    s = _as_sigma(sigma)
    sq = (s * s)[::-1]
    tails = np.concatenate([np.cumsum(sq)[::-1], [0.0]])  # tails[k] = Σ_{i≥k} σ², 0-based
    if total is not None:
        tails = tails + max(float(total) - float(tails[0]), 0.0)
    return tails


def energy(sigma: Any, total: float | None = None) -> np.ndarray:
    """energy(k) for k = 1..len(sigma): Σ_{i≤k} σi² / Σ σi² (docs/METRICS.md 'energy(k)').

    Args:
        sigma: known singular values, descending.
        total: Σσi² over *all* singular values (‖ΔW‖_F²); defaults to the sum of the known ones.
    """
    s = _as_sigma(sigma)
    sq = s * s
    denom = float(sq.sum()) if total is None else float(total)
    if denom <= 0.0:
        return np.zeros(sq.shape)
    return np.asarray(np.cumsum(sq) / denom)


def rank_at_energy(sigma: Any, tau: float, total: float | None = None) -> int | None:
    """Smallest k with energy(k) ≥ tau (docs/METRICS.md 'rank_90, rank_95, rank_99').

    Returns 0 for an all-zero update and ``None`` when the known values never reach ``tau``
    (the rank lies beyond the computed top-k).
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    e = energy(sigma, total)
    if e.size == 0 or (total is None and e[-1] == 0.0) or (total is not None and total <= 0.0):
        return 0
    hit = np.nonzero(e >= tau - _ENERGY_SLACK)[0]
    return int(hit[0]) + 1 if hit.size else None


def stable_rank(sigma: Any, fro_norm: float | None = None) -> float:
    """Σσi² / σ1² (docs/METRICS.md 'stable_rank'); exact from ‖ΔW‖_F even when only top-k σ are known."""
    s = _as_sigma(sigma)
    if s.size == 0 or s[0] == 0.0:
        return 0.0
    total = float((s * s).sum()) if fro_norm is None else fro_norm**2
    return total / float(s[0] ** 2)


def entropy_rank(sigma: Any, floor: float = 0.0) -> float:
    """exp(−Σ pi ln pi) with pi = σi / Σσj (Roy & Vetterli 2007, Eq. 4; docs/METRICS.md 'entropy_rank').

    Zero singular values contribute nothing, so the non-zero ones of an exactly low-rank update suffice;
    values at or below ``floor`` count as zero.
    """
    s = _resolved(sigma, floor)
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s[s > 0.0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


def numerical_rank(sigma: Any, shape: tuple[int, int], floor: float = 0.0) -> int:
    """#{σi > max(σ1 · max(m, n) · eps(float32), floor)} (docs/METRICS.md 'numerical_rank'; numpy's
    matrix_rank rule at float32, the precision weights are stored in, and never below the computation's
    floor)."""
    s = _as_sigma(sigma)
    if s.size == 0 or s[0] == 0.0:
        return 0
    tol = max(s[0] * max(shape) * FLOAT32_EPS, floor)
    return int(np.count_nonzero(s > tol))


def gd_omega(beta: float) -> float:
    """ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43 (Gavish & Donoho 2014, Eq. 5, unknown noise level)."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"aspect ratio beta must be in (0, 1], got {beta}")
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def gd_rank(sigma: Any, shape: tuple[int, int], complete: bool = True, floor: float = 0.0) -> int | None:
    """#{σ̃i > ω(β) · max(median(σ̃), floor)}, β = p / max(m, n), σ̃ = σ with values ≤ floor set to zero
    (Gavish & Donoho 2014; docs/METRICS.md 'gd_rank' and 'The numerical floor').

    The median runs over all p = min(m, n) singular values; with ``complete=True`` the ones not
    given are exact zeros. Without all p values the median is unknown and ``None`` is returned.
    When more than half the values lie under the floor, the true median is somewhere in [0, floor]; taking
    the floor counts a value as signal only if it is signal whatever that median is.
    """
    s = _resolved(sigma, floor)
    m, n = shape
    p = min(m, n)
    if p == 0:
        return 0
    if s.size < p:
        if not complete:
            return None
        s = np.concatenate([s, np.zeros(p - s.size)])
    threshold = gd_omega(p / max(m, n)) * max(float(np.median(s[:p])), floor)
    return int(np.count_nonzero(s > threshold))


def module_metrics(
    sigma: Any,
    shape: tuple[int, int],
    fro_norm: float,
    complete: bool = True,
    base_fro_norm: float | None = None,
    floor: float = 0.0,
) -> dict[str, Any]:
    """Every per-matrix column of the results schema that is a function of σ.

    Args:
        sigma: known singular values of ΔW, descending.
        shape: (m, n) of ΔW.
        fro_norm: ‖ΔW‖_F computed from the entries (exact even when ``sigma`` is a top-k).
        complete: whether the values past ``len(sigma)`` are known to be zero.
        base_fro_norm: ‖W_base‖_F where a base is given.
        floor: the SVD route's absolute error bound on every σ (``lorascope.linalg.SVD.floor``).

    Returns:
        A dict with fro_norm, spectral_norm, stable_rank, entropy_rank, rank_90/95/99,
        numerical_rank, gd_rank, n_singular, rank_beyond_k, base_fro_norm, relative_update, sigma_floor.
        Entries that the known values cannot determine are ``None`` and ``rank_beyond_k`` is True.
    """
    s = _as_sigma(sigma)
    total = fro_norm**2
    row: dict[str, Any] = {
        "fro_norm": float(fro_norm),
        "spectral_norm": float(s[0]) if s.size else 0.0,
        "stable_rank": stable_rank(s, fro_norm),
        "entropy_rank": entropy_rank(s, floor) if complete else None,
    }
    for tau in ENERGY_LEVELS:
        row[f"rank_{round(tau * 100)}"] = rank_at_energy(s, tau, total)
    row["numerical_rank"] = numerical_rank(s, shape, floor)
    if not complete and s.size and s[-1] > max(s[0] * max(shape) * FLOAT32_EPS, floor):
        row["numerical_rank"] = None  # more values above the tolerance may lie beyond k
    row["gd_rank"] = gd_rank(s, shape, complete, floor)
    row["n_singular"] = int(s.size)
    row["rank_beyond_k"] = any(row[c] is None for c in ("rank_90", "rank_95", "rank_99"))
    row["base_fro_norm"] = None if base_fro_norm is None else float(base_fro_norm)
    row["relative_update"] = float(fro_norm) / base_fro_norm if base_fro_norm not in (None, 0.0) else None
    row["sigma_floor"] = float(floor)
    return row
