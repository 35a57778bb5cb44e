"""Rank selection: one rank per module by a named policy, with totals and a plain-language recommendation.

Policies (docs/METRICS.md 'Rank selection'), picked from ``POLICIES`` by name:

- energy τ: rank_τ: the smallest k with energy(k) ≥ τ
- budget B: the exact optimum of the multiple-choice knapsack max Σ_l Σ_{i≤r_l} σ²_{l,i}
  s.t. Σ_l r_l(m_l+n_l) ≤ B (``knapsack.py``), the greedy beside it
- noise: gd_rank: the singular values above the Gavish–Donoho threshold (Gavish & Donoho 2014)
- functional: the smallest uniform k whose measured loss is within a tolerance of the untruncated loss (a
  share of the fine-tune's loss change, ``functional.pick_rank``)

Pure: a ``Spectra`` (and, for 'functional', a functional sweep table) in, a ``Selection`` out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LorascopeError
from ..metrics import gd_rank, rank_at_energy
from ..units import human_count
from .functional import pick_rank
from .knapsack import RankKnapsack
from .spectra import Spectra
from .sweep import pooled_energy, pooled_rel_error, rank_used

SELECTION_COLUMNS = [
    "name",
    "layer",
    "module",
    "rows",
    "cols",
    "source",
    "lora_rank",
    "available_rank",
    "rank",
    "params",
    "energy",
    "rel_error",
]


@dataclass(frozen=True)
class Policy:
    """A rank-selection rule and its one parameter."""

    name: str
    energy: float = 0.90  # τ of 'energy': the fraction of ‖ΔW‖_F² each module keeps
    budget: int | None = None  # B of 'budget', adapter parameters
    tolerance: float = 0.05  # 'functional': the share of the fine-tune's loss change a truncation may give up

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {self.name!r}")
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.name == "budget" and (self.budget is None or self.budget < 0):
            raise ValueError(
                f"budget must be a non-negative parameter count for the 'budget' policy, got {self.budget}"
            )
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be non-negative, got {self.tolerance}")

    def describe(self) -> str:
        return {
            "energy": f"energy τ = {self.energy:g} per module",
            "budget": f"parameter budget B = {human_count(self.budget or 0)}",
            "noise": "noise rank (Gavish–Donoho threshold)",
            "functional": f"functional: the smallest rank keeping {1 - self.tolerance:.0%} of the "
            "fine-tune's loss change",
        }[self.name]


@dataclass
class Selection:
    """The chosen rank per module, what it costs and keeps, and why."""

    policy: Policy
    table: pd.DataFrame
    totals: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)
    recommendation: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-ready: policy, totals, notes and the recommendation."""
        return {
            "policy": asdict(self.policy),
            "totals": self.totals,
            "notes": self.notes,
            "recommendation": self.recommendation,
        }

    def ranks(self) -> dict[str, int]:
        return dict(zip(self.table["name"], (int(r) for r in self.table["rank"])))


# ---- policies: (spectra, policy, functional table) -> (ranks, notes) --------------------------------

PolicyFn = Callable[[Spectra, Policy, "pd.DataFrame | None"], tuple[np.ndarray, dict[str, Any]]]


def _energy_ranks(
    spectra: Spectra, policy: Policy, functional: pd.DataFrame | None
) -> tuple[np.ndarray, dict[str, Any]]:
    ranks, beyond = [], []
    for s, total, complete, name, cap in zip(
        spectra.sigma, spectra.totals, spectra.table["complete"], spectra.names, spectra.max_ranks
    ):
        r = rank_at_energy(s, policy.energy, total)
        if r is None:  # stored σ never reach τ: all of them (complete) or an unknown rank past the top-k
            r = int(cap)
            if not complete:
                beyond.append(name)
        ranks.append(r)
    notes: dict[str, Any] = {}
    if beyond:
        notes["rank_beyond_top_k"] = beyond
    return np.asarray(ranks, dtype=np.int64), notes


def _budget_ranks(
    spectra: Spectra, policy: Policy, functional: pd.DataFrame | None
) -> tuple[np.ndarray, dict[str, Any]]:
    knap = RankKnapsack([s**2 for s in spectra.sigma], spectra.unit_costs)
    start = time.perf_counter()
    exact = knap.solve(int(policy.budget or 0))
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    greedy = knap.greedy(int(policy.budget or 0))
    t_greedy = time.perf_counter() - start
    total = float(spectra.totals.sum()) or 1.0
    top_k = int(
        (~spectra.table["complete"].astype(bool)).sum()
    )  # modules whose σ past a randomized top-k are unknown
    notes = {
        "knapsack": {
            "exact": bool(exact.exact) and not top_k,
            "top_k_modules": top_k,
            "exact_energy": exact.gain / total,
            "greedy_energy": greedy.gain / total,
            "gap_energy": (exact.gain - greedy.gain) / total,  # exact − greedy, as a fraction of ‖ΔW‖²
            "upper_bound_energy": exact.upper_bound / total if not top_k else None,
            "exact_params": exact.cost,
            "greedy_params": greedy.cost,
            "modules_differing": int(np.sum(exact.ranks != greedy.ranks)),
            "nodes": exact.nodes,
            "seconds_exact": round(t_exact, 4),
            "seconds_greedy": round(t_greedy, 4),
            "cost_classes": len(knap.classes),
        },
        "greedy_ranks": [int(r) for r in greedy.ranks],
    }
    return exact.ranks, notes


def _noise_ranks(
    spectra: Spectra, policy: Policy, functional: pd.DataFrame | None
) -> tuple[np.ndarray, dict[str, Any]]:
    ranks, unknown = [], []
    for s, m, n, complete, floor, name in zip(
        spectra.sigma,
        spectra.table["rows"],
        spectra.table["cols"],
        spectra.table["complete"],
        spectra.table["floor"],
        spectra.names,
    ):
        r = gd_rank(s, (int(m), int(n)), bool(complete), float(floor))  # the analysis's numerical floor
        if r is None:
            unknown.append(name)
        ranks.append(r or 0)
    if unknown:
        raise LorascopeError(
            f"the noise rank needs every singular value, but {len(unknown)} module(s) (e.g. {unknown[0]}) "
            "were analyzed with a randomized top-k SVD; run `lorascope spectrum` again without --top-k."
        )
    return np.asarray(ranks, dtype=np.int64), {}


def _functional_ranks(
    spectra: Spectra, policy: Policy, functional: pd.DataFrame | None
) -> tuple[np.ndarray, dict[str, Any]]:
    if functional is None or functional.empty:
        raise LorascopeError(
            "the functional policy needs a functional sweep (functional.csv in a `lorascope sweep` folder "
            "run with --eval-data); give that folder with --from-sweep."
        )
    pick = pick_rank(functional, policy.tolerance)
    return rank_used(spectra, pick["k"]), {"functional": pick}


POLICIES: dict[str, PolicyFn] = {
    "energy": _energy_ranks,
    "budget": _budget_ranks,
    "noise": _noise_ranks,
    "functional": _functional_ranks,
}


# ---- the selection ----------------------------------------------------------------------------------


def select_ranks(spectra: Spectra, policy: Policy, functional: pd.DataFrame | None = None) -> Selection:
    """Apply ``policy`` to every module and describe the result.

    Args:
        spectra: the modules' σ and norms (``spectra_of(results)``).
        policy: the rule and its parameter.
        functional: a functional sweep table (``functional.py``), for the 'functional' policy.

    Returns:
        A ``Selection``: per-module ranks with their parameters and kept energy, totals, notes and text.
    """
    ranks, notes = POLICIES[policy.name](spectra, policy, functional)
    ranks = np.minimum(np.asarray(ranks, dtype=np.int64), _available(spectra))
    table = selection_table(spectra, ranks)
    totals = selection_totals(spectra, ranks)
    selection = Selection(policy, table, totals, notes)
    selection.recommendation = recommendation(selection, spectra)
    return selection


def _available(spectra: Spectra) -> np.ndarray:
    """The largest rank a module can be given: its non-zero σ (or all stored ones for a top-k)."""
    return np.where(
        spectra.table["complete"].to_numpy(bool),
        spectra.max_ranks,
        spectra.table["n_singular"].to_numpy(np.int64),
    )


def selection_table(spectra: Spectra, ranks: np.ndarray) -> pd.DataFrame:
    t = spectra.table
    e = spectra.energy_at(ranks)
    out = t[["name", "layer", "module", "rows", "cols", "source", "lora_rank"]].assign(
        available_rank=_available(spectra),
        rank=ranks,
        params=ranks * spectra.unit_costs,
        energy=e,
        rel_error=spectra.rel_error_at(ranks),
    )
    return out[SELECTION_COLUMNS].reset_index(drop=True)


def selection_totals(spectra: Spectra, ranks: np.ndarray) -> dict[str, Any]:
    """Parameters, pooled energy, and the uniform rank that would cost no more."""
    costs = spectra.unit_costs
    params = int(np.sum(ranks * costs))
    pooled = pooled_energy(spectra, ranks)
    lora = spectra.table["lora_rank"]
    original = (
        int(np.sum(lora.fillna(0).to_numpy(np.int64) * costs)) if lora.notna().all() and len(lora) else None
    )
    k_eq = _uniform_rank_within(spectra, params)
    uniform_energy = pooled_energy(spectra, rank_used(spectra, k_eq)) if k_eq else 0.0
    return {
        "modules": int(len(ranks)),
        "modules_selected": int(np.sum(ranks > 0)),
        "params": params,
        "energy": pooled,
        "rel_error": pooled_rel_error(spectra, ranks),
        "min_module_energy": float(np.min(spectra.energy_at(ranks))) if len(ranks) else None,
        "max_rank": int(ranks.max()) if len(ranks) else 0,
        "median_rank": float(np.median(ranks)) if len(ranks) else 0.0,
        "original_params": original,
        "uniform_rank_same_params": k_eq,
        "uniform_energy_same_params": uniform_energy,
    }


def _uniform_rank_within(spectra: Spectra, params: int) -> int:
    """The largest uniform k whose truncation (capped at each module's rank,
    as the sweep counts it) costs ≤ params."""
    best = 0
    for k in range(1, int(spectra.max_ranks.max(initial=0)) + 1):
        if int(np.sum(rank_used(spectra, k) * spectra.unit_costs)) > params:
            break
        best = k
    return best


# ---- words -----------------------------------------------------------------------------------------


def recommendation(selection: Selection, spectra: Spectra) -> str:
    """A few plain sentences: what was chosen, what it costs and keeps, and how it compares."""
    t, tot, p = selection.table, selection.totals, selection.policy
    chosen = t[t["rank"] > 0]
    parts = [f"Policy: {p.describe()}."]
    if chosen.empty:
        parts.append("It keeps no module (every rank is 0): nothing to export.")
        return " ".join(parts)
    lo, hi = int(chosen["rank"].min()), int(chosen["rank"].max())
    median = np.median(chosen["rank"])
    ranks = f"rank {lo} each" if lo == hi else f"a rank between {lo} and {hi} (median {median:g})"
    parts.append(
        f"It gives {len(chosen)} of {tot['modules']} modules {ranks}, {human_count(tot['params'])} adapter "
        f"parameters, keeping {tot['energy']:.1%} of the update's energy ‖ΔW‖² (relative Frobenius error "
        f"{tot['rel_error']:.3f}; the worst module keeps {tot['min_module_energy']:.1%})."
    )
    if tot["original_params"]:
        parts.append(
            f"That is {tot['params'] / tot['original_params']:.0%} of the original adapter's "
            f"{human_count(tot['original_params'])} parameters."
        )
    if tot["uniform_rank_same_params"]:
        parts.append(
            f"A uniform rank {tot['uniform_rank_same_params']} costs no more and keeps "
            f"{tot['uniform_energy_same_params']:.1%}."
        )
    parts.extend(_POLICY_WORDS[p.name](selection, spectra))
    dropped = t[t["rank"] == 0]
    if len(dropped):
        parts.append(
            f"{len(dropped)} module(s) get rank 0 and are left out of an export (e.g. "
            f"{dropped['name'].iat[0]})."
        )
    return " ".join(parts)


def _energy_words(selection: Selection, spectra: Spectra) -> list[str]:
    beyond = selection.notes.get("rank_beyond_top_k")
    if beyond:
        return [
            f"{len(beyond)} module(s) do not reach τ within their stored top-k singular values and were "
            "capped there; run the spectrum without --top-k for their true rank."
        ]
    return []


def _budget_words(selection: Selection, spectra: Spectra) -> list[str]:
    k = selection.notes["knapsack"]
    if k.get("top_k_modules"):
        proof = (
            f"optimal only among ranks within the computed top-k: {k['top_k_modules']} module(s) have a "
            "randomized top-k spectrum, and larger ranks there were never computed (not proven optimal "
            "overall)"
        )
    elif k["exact"]:
        proof = "proven optimal"
    else:
        proof = "the best found within the search limit (not proven optimal)"
    if k["gap_energy"] <= 1e-12:
        cmp = "the greedy σ²/(m+n) allocation reaches the same energy"
    else:
        cmp = (
            f"the greedy σ²/(m+n) allocation keeps {k['greedy_energy']:.4%}, {k['gap_energy']:.2e} of the "
            f"energy less ({k['modules_differing']} module(s) differ)"
        )
    bound = (
        f"no allocation within the budget can keep more than {k['upper_bound_energy']:.4%} (LP bound)"
        if k["upper_bound_energy"] is not None
        else "no upper bound is known"
    )
    return [
        f"The allocation is {proof} (multiple-choice knapsack over {k['cost_classes']} cost class(es)); "
        f"{cmp}; {bound}."
    ]


def _noise_words(selection: Selection, spectra: Spectra) -> list[str]:
    t = selection.table
    full = int(np.sum((t["rank"] == t["available_rank"]) & (t["rank"] > 0)))
    words = [
        "Singular values below the Gavish–Donoho threshold are indistinguishable from white noise of the "
        "same median level and are dropped."
    ]
    if full == len(t) and t["lora_rank"].notna().all():
        words.append(
            "Every module keeps all its non-zero singular values: an exactly low-rank LoRA update has more "
            "zeros than non-zeros, so this test finds no noise in it; use --energy or --budget to shrink it."
        )
    return words


def _functional_words(selection: Selection, spectra: Spectra) -> list[str]:
    f = selection.notes["functional"]
    verdict = "" if f["within"] else " No measured rank is within the tolerance; the largest one is used."
    return [
        f"Measured ({f.get('metric', 'loss')}): rank {f['k']} reaches {f['loss']:.4f} against "
        f"{f['full_loss']:.4f} for the untruncated update and {f['base_loss']:.4f} for the base model, "
        f"{f['recovered']:.0%} of the fine-tune's change (tolerance {f['tolerance']:.0%} of it).{verdict}"
    ]


_POLICY_WORDS: dict[str, Callable[[Selection, Spectra], list[str]]] = {
    "energy": _energy_words,
    "budget": _budget_words,
    "noise": _noise_words,
    "functional": _functional_words,
}
