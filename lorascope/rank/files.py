"""The files of sweep and selection folders: their names, what writes each, and writing and reading them.

A sweep or selection folder is a results folder (``results.py``: modules.csv, singular_values.safetensors,
summary.json, vectors.csv) with the rank tables added, so the report renders it with its optional sections:

- sweep.csv, written by ``run_sweep``: per module and k: rank, params, energy(k), sqrt(1 − energy(k))
- sweep_uniform.csv, written by ``run_sweep``: the model at uniform rank k: params, pooled energy, spread
- sweep_frontier.csv, written by ``run_sweep``: params → energy: uniform, budget-optimal (exact) and greedy
- functional.csv, written by ``run_sweep`` with evaluation data or a trainer run: loss (and task metrics) per
  k, base, untruncated
- training.csv, training_knees.csv, written by ``run_sweep`` of a train-sweep folder: runs against r, full,
  freeze; knee per metric
- sweep.json, written by ``run_sweep``: the grid, inputs, functional pick, timing
- selection.csv, written by ``run_select``: per module: chosen rank, params, energy, error
- selection.json, written by ``run_select``: policy, totals, notes (knapsack exact vs greedy), recommendation,
  export
- export.csv, written by ``run_select --export``: per module: exported rank, SVD route, achieved and optimal
  error, or why not
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LorascopeError

SWEEP_CSV = "sweep.csv"
UNIFORM_CSV = "sweep_uniform.csv"
FRONTIER_CSV = "sweep_frontier.csv"
FUNCTIONAL_CSV = "functional.csv"
SWEEP_JSON = "sweep.json"
SELECTION_CSV = "selection.csv"
SELECTION_JSON = "selection.json"
EXPORT_CSV = "export.csv"
TRAINING_CSV = "training.csv"
KNEES_CSV = "training_knees.csv"
TRAIN_INDEX = "index.csv"  # of a train-sweep folder (train/runs.py)


def clean_json(obj: Any) -> Any:
    """NaN -> None throughout, so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_tables(out: Path, tables: dict[str, pd.DataFrame | None]) -> None:
    for name, table in tables.items():
        if table is None:
            (out / name).unlink(missing_ok=True)
        else:
            table.to_csv(out / name, index=False)


def load_functional(folder: str | Path) -> pd.DataFrame:
    """functional.csv of a sweep folder, or a LorascopeError saying how to make one."""
    path = Path(folder) / FUNCTIONAL_CSV
    if path.is_file():
        table = pd.read_csv(path)
        info = Path(folder) / SWEEP_JSON
        pick = json.loads(info.read_text()).get("functional_pick") if info.is_file() else None
        table.attrs["loss_metric"] = (pick or {}).get("metric", "eval_loss")
        return table
    if not path.is_file():
        raise LorascopeError(
            f"{folder} holds no {FUNCTIONAL_CSV}: run `lorascope sweep BASE TUNED --eval-data FILE` "
            "to measure the loss against k first."
        )
    return pd.read_csv(path)
