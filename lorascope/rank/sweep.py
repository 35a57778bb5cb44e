"""Truncation sweeps from saved spectra: what a rank-k truncation keeps, per module and for the model.

Eckart–Young: the best rank-k approximation of ΔW keeps energy(k) = Σ_{i≤k} σi² / ‖ΔW‖_F², and its
relative Frobenius error is sqrt(1 − energy(k)) (docs/METRICS.md 'Rank selection', 'truncation error').
Nothing here recomputes an SVD; every number comes from the stored σ and the exact ‖ΔW‖_F.

- ``truncation_table``: one row per (module, k).
- ``uniform_table``: the model with every module at rank k: parameters spent, pooled energy
  Σ_l kept_l / Σ_l ‖ΔW_l‖², and the spread of per-module energies.
- ``frontier``: parameters spent → pooled energy kept, for uniform ranks and for the budget-optimal
  ranks of the same budgets (exact knapsack, and the greedy approximation beside it).
- ``uniform_sweep``: ``uniform_table``'s pricing at every k up to the longest known spectrum, for the
  report's curves (the report renders it; it computes no sweep of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .knapsack import RankKnapsack
from .spectra import Spectra

TRUNCATION_COLUMNS = ["name", "layer", "module", "rows", "cols", "k", "rank", "params", "energy", "rel_error"]
UNIFORM_COLUMNS = ["k", "params", "energy", "rel_error", "mean_energy", "min_energy", "modules_at_full_rank"]
FRONTIER_COLUMNS = ["policy", "k", "budget", "params", "energy", "rel_error", "upper_bound_energy", "exact"]


def default_ranks(spectra: Spectra) -> list[int]:
    """1, 2, 4, … up to the largest rank any module has, and that rank itself."""
    top = int(max(np.max(spectra.max_ranks, initial=1), 1))
    ranks = [1 << i for i in range(top.bit_length()) if (1 << i) <= top]
    return sorted(set(ranks) | {top})


def check_ranks(ranks: Sequence[int]) -> list[int]:
    """Sorted unique positive ranks; ValueError naming the bad values otherwise."""
    bad = [r for r in ranks if int(r) != r or r < 1]
    if bad or not ranks:
        raise ValueError(f"ranks must be positive integers, got {list(ranks)}")
    return sorted({int(r) for r in ranks})


def rank_used(spectra: Spectra, k: int) -> np.ndarray:
    """The rank a rank-k truncation really has on each module: min(k, non-zero σ) where σ is complete."""
    cap = np.where(spectra.table["complete"].to_numpy(bool), spectra.max_ranks, np.iinfo(np.int64).max)
    return np.minimum(k, cap).astype(np.int64)


def truncation_table(spectra: Spectra, ranks: Sequence[int]) -> pd.DataFrame:
    """Per module and k: rank kept, its parameters r·(m+n), energy(k) and sqrt(1 − energy(k)).

    energy is NaN where k passes a randomized top-k spectrum (unknown, not guessed).
    """
    ranks = check_ranks(ranks)
    base = spectra.table[["name", "layer", "module", "rows", "cols"]]
    frames = []
    for k in ranks:
        r = rank_used(spectra, k)
        e = spectra.energy_at(r)
        frames.append(
            base.assign(
                k=k, rank=r, params=r * spectra.unit_costs, energy=e, rel_error=spectra.rel_error_at(r)
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TRUNCATION_COLUMNS)
    return out[TRUNCATION_COLUMNS]


def pooled_energy(spectra: Spectra, ranks: np.ndarray) -> float:
    """Σ_l kept_l / Σ_l ‖ΔW_l‖_F²: the fraction of the whole update's squared norm a rank choice keeps."""
    total = float(spectra.totals.sum())
    if total <= 0:
        return 1.0
    return float(np.sum(spectra.kept(ranks)) / total)


def pooled_rel_error(spectra: Spectra, ranks: np.ndarray) -> float:
    """sqrt(Σ_l lost_l / Σ_l ‖ΔW_l‖_F²): the relative Frobenius error of the whole truncated update."""
    total = float(spectra.totals.sum())
    if total <= 0:
        return 0.0
    return float(np.sqrt(np.sum(spectra.lost(ranks)) / total))


def uniform_table(spectra: Spectra, ranks: Sequence[int]) -> pd.DataFrame:
    """The model with every module truncated to rank k, for each k."""
    rows = []
    for k in check_ranks(ranks):
        r = rank_used(spectra, k)
        e = spectra.energy_at(r)
        pooled = pooled_energy(spectra, r)
        rows.append(
            {
                "k": k,
                "params": int(np.sum(r * spectra.unit_costs)),
                "energy": pooled,
                "rel_error": pooled_rel_error(spectra, r),
                "mean_energy": float(np.mean(e)) if e.size else np.nan,
                "min_energy": float(np.min(e)) if e.size else np.nan,
                "modules_at_full_rank": int(np.sum(r >= spectra.max_ranks)),
            }
        )
    return pd.DataFrame(rows, columns=UNIFORM_COLUMNS)


@dataclass(frozen=True)
class UniformSweep:
    """Rank-k truncation of every module at one uniform k, for every k (docs/METRICS.md 'truncation error').

    ``table`` has columns k, error (the pooled relative Frobenius error), energy (= 1 − error²) and
    adapter_parameters (Σ_l r_l(k)·(m_l + n_l), r_l(k) = ``rank_used``: what a rank-k truncation really keeps,
    as ``uniform_table`` prices it). ``truncated`` names the modules whose stored spectrum is a top-k; the
    sweep stops at the shortest of those (``k_limit``), past which it is unknown.
    """

    table: pd.DataFrame
    truncated: list[str]
    k_limit: int | None


UNIFORM_SWEEP_COLUMNS = ["k", "error", "energy", "adapter_parameters"]


def uniform_sweep(spectra: Spectra, max_points: int = 400) -> UniformSweep:
    """The uniform-rank sweep at k = 1 … K (K the longest stored spectrum, or the shortest top-k one), thinned
    to about ``max_points`` values on a log scale (``sweep_ks``).

    error(k) = sqrt(Σ_l lost_l(k) / Σ_l ‖ΔW_l‖_F²), each lost_l from ``Spectra.tails`` (summed from the tail,
    never total − kept).
    """
    if not spectra.sigma:
        return UniformSweep(pd.DataFrame(columns=UNIFORM_SWEEP_COLUMNS), [], None)
    complete = spectra.table["complete"].to_numpy(bool)
    lengths = np.array([s.size for s in spectra.sigma])
    truncated = [n for n, c in zip(spectra.names, complete) if not c]
    k_limit = int(lengths[~complete].min()) if truncated else None
    ks = sweep_ks(k_limit or max(int(lengths.max()), 1), max_points)
    lost = np.zeros(len(ks))
    for l in range(len(spectra.sigma)):
        lost += spectra.tails(l)[np.minimum(ks, lengths[l])]  # (K,): this module's tail at each k
    total = float(spectra.totals.sum())
    error = np.sqrt(lost / total) if total > 0 else np.zeros(len(ks))
    cap = rank_used(spectra, np.iinfo(np.int64).max)  # (L,): each module's usable rank, counted once
    params = np.minimum(ks[:, None], cap[None, :]) @ spectra.unit_costs  # (K, L) @ (L,) -> (K,) at each k
    table = pd.DataFrame({"k": ks, "error": error, "energy": 1.0 - error**2, "adapter_parameters": params})
    return UniformSweep(table, truncated, k_limit)


def sweep_ks(k_max: int, max_points: int) -> np.ndarray:
    """1 … k_max, or about ``max_points`` of them on a log scale with every power of two kept."""
    if k_max <= max_points:
        return np.arange(1, k_max + 1)
    ks = np.unique(np.round(np.geomspace(1, k_max, max_points)).astype(np.int64))
    return np.union1d(ks, 2 ** np.arange(int(np.log2(k_max)) + 1))


def frontier(spectra: Spectra, ranks: Sequence[int], extra_budgets: int = 24) -> pd.DataFrame:
    """Parameters → pooled energy for uniform ranks and for budget-optimal ranks at the same budgets.

    The optimal curve is solved exactly (``RankKnapsack.solve``) at every uniform point's budget and at
    ``extra_budgets`` log-spaced budgets between the smallest and the largest; the greedy allocation
    and the LP upper bound are given beside it.
    """
    uni = uniform_table(spectra, ranks)
    rows = [
        {
            "policy": "uniform",
            "k": int(k),
            "budget": int(p),
            "params": int(p),
            "energy": e,
            "rel_error": err,
            "upper_bound_energy": np.nan,
            "exact": True,
        }
        for k, p, e, err in zip(uni["k"], uni["params"], uni["energy"], uni["rel_error"])
    ]
    total = float(spectra.totals.sum())
    if total <= 0 or uni.empty:
        return pd.DataFrame(rows, columns=FRONTIER_COLUMNS)
    knap = RankKnapsack([s**2 for s in spectra.sigma], spectra.unit_costs)
    lo, hi = max(int(uni["params"].min()), 1), max(int(uni["params"].max()), 1)
    grid = set(int(p) for p in uni["params"])
    if extra_budgets and hi > lo:
        grid |= {int(b) for b in np.geomspace(lo, hi, extra_budgets)}
    complete = bool(
        spectra.table["complete"].all()
    )  # a top-k spectrum: larger ranks there were never computed
    for budget in sorted(grid):
        for policy, alloc in (("optimal", knap.solve(budget)), ("greedy", knap.greedy(budget))):
            rows.append(
                {
                    "policy": policy,
                    "k": np.nan,
                    "budget": budget,
                    "params": alloc.cost,
                    "energy": alloc.gain / total,
                    "rel_error": pooled_rel_error(spectra, alloc.ranks),
                    "upper_bound_energy": alloc.upper_bound / total if complete else np.nan,
                    "exact": alloc.exact and complete,
                }
            )
    return pd.DataFrame(rows, columns=FRONTIER_COLUMNS)
