"""Rank sweeps, rank selection and adapter export: which rank each module needed, and an adapter that proves
it.

Rooms, each with one job:

- ``spectra.py``: the modules of a results folder as σ², norms and shapes (no recomputation).
- ``sweep.py``: truncation tables — per module energy(k) and sqrt(1 − energy(k)), the model at uniform
  rank k, and the frontier parameters → energy for uniform and budget-optimal ranks.
- ``knapsack.py``: the exact budget-optimal ranks (multiple-choice knapsack) and the greedy beside them.
- ``select.py``: the policies registry (energy, budget, noise, functional) and the recommendation text.
- ``truncate.py``: one module's top-k singular triplets, recomputed from its checkpoint.
- ``export.py``: a PEFT adapter folder realizing a selection (resize or extraction).
- ``functional.py``: the loss of the model with every ΔW truncated to rank k.
- ``training.py``: a training sweep's metrics against r, and its knee.
- ``folders.py``: the sweep and selection folders (inputs in, tables out); ``run_sweep`` and ``run_select``
  are what the ``lorascope sweep`` and ``lorascope select`` commands call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .folders import SelectOutput, SweepOutput, run_select, run_sweep
    from .knapsack import Allocation, RankKnapsack
    from .select import POLICIES, Policy, Selection, select_ranks
    from .spectra import Spectra, spectra_of
    from .sweep import default_ranks, frontier, truncation_table, uniform_table

# Imported on first use, so that a user of one room (a report reading rank.sweep) does not load the others
# (folders and export pull in every checkpoint reader).
_LAZY = {
    "SelectOutput": "folders",
    "SweepOutput": "folders",
    "run_select": "folders",
    "run_sweep": "folders",
    "Allocation": "knapsack",
    "RankKnapsack": "knapsack",
    "POLICIES": "select",
    "Policy": "select",
    "Selection": "select",
    "select_ranks": "select",
    "Spectra": "spectra",
    "spectra_of": "spectra",
    "default_ranks": "sweep",
    "frontier": "sweep",
    "truncation_table": "sweep",
    "uniform_table": "sweep",
}

__all__ = [
    "Allocation",
    "POLICIES",
    "Policy",
    "RankKnapsack",
    "SelectOutput",
    "Selection",
    "Spectra",
    "SweepOutput",
    "default_ranks",
    "frontier",
    "run_select",
    "run_sweep",
    "select_ranks",
    "spectra_of",
    "truncation_table",
    "uniform_table",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
