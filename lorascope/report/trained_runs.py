"""Trainer runs read from their folders: ``TrainedRun``, the files a run folder declares, and finding
the runs of a results folder or of a training sweep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LorascopeError
from ..results import Results


RUN_METRICS = "metrics.json"
HISTORY_CSV = "history.csv"
RANK_HISTORY_CSV = "rank_history.csv"
INDEX_CSV = "index.csv"
POOLED_LOSS = "eval_loss"
RETAIN_PREFIX = "retain"
NO_RANK = "no adapter"  # the group of runs without a rank: full fine-tuning, freezing


@dataclass
class TrainedRun:
    """One trainer run folder, read: its metrics.json, histories, and its spectrum analysis where one
    exists."""

    label: str
    folder: Path
    metrics: dict[str, Any]
    history: pd.DataFrame | None = None
    rank_history: pd.DataFrame | None = None
    results: Results | None = None  # the run's spectrum analysis, where the page has one

    @property
    def method(self) -> str:
        return str(self.metrics.get("method", ""))

    @property
    def rank(self) -> int | None:
        lora = self.metrics.get("lora")
        return int(lora["r"]) if isinstance(lora, dict) and lora.get("r") is not None else None

    @property
    def targets(self) -> str | None:
        lora = self.metrics.get("lora")
        return str(lora["targets"]) if isinstance(lora, dict) and lora.get("targets") is not None else None

    @property
    def sets(self) -> list[str]:
        """The task's evaluation sets in the order the trainer evaluated them (the first: what it was
        taught)."""
        n_eval = (self.metrics.get("task") or {}).get("n_eval") or {}
        return list(n_eval)


# ---- reading ------------------------------------------------------------------------------------------


def is_run_folder(path: str | Path) -> bool:
    """A trainer run folder: ``metrics.json`` beside the fine-tuned model ``tuned/``."""
    p = Path(path)
    return p.is_dir() and (p / RUN_METRICS).is_file() and (p / "tuned").is_dir()


def read_run(folder: str | Path, label: str | None = None, results: Results | None = None) -> TrainedRun:
    """Read a trainer run folder.

    Raises:
        LorascopeError: ``metrics.json`` is missing, unreadable or not the trainer's (no ``run``, ``method``
            and ``final``); a history file that is there but unreadable.
    """
    folder = Path(folder)
    path = folder / RUN_METRICS
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LorascopeError(
            f"{path} could not be read as the trainer's run record ({exc}); re-run "
            "`lorascope train` into that folder."
        ) from None
    missing = [k for k in ("run", "method", "final") if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        raise LorascopeError(f"{path} is not a lorascope trainer run record: it lacks {', '.join(missing)}.")
    return TrainedRun(
        label or str(metrics["run"]),
        folder,
        metrics,
        _table(folder / HISTORY_CSV),
        _table(folder / RANK_HISTORY_CSV),
        results,
    )


def _table(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"{path} could not be read ({exc}).") from None
    return table if "step" in table.columns and len(table) else None


def run_of_results(results: Results) -> Path | None:
    """The trainer run folder whose ``adapter/`` or ``tuned/`` these results analyzed (``summary.json``'s
    inputs), or None: results of anything else, or a run folder no longer where the analysis found it."""
    for entry in (results.summary or {}).get("inputs") or []:
        if not isinstance(entry, dict) or entry.get("role") not in ("adapter", "tuned"):
            continue
        path = Path(str(entry.get("path", "")))
        if path.name in ("adapter", "tuned") and is_run_folder(path.parent):
            return path.parent
    return None


def runs_of_sweep(folder: str | Path) -> list[TrainedRun]:
    """Every run a training sweep's ``index.csv`` lists, in its order.

    Raises:
        LorascopeError: the index lists no runs, or names a run folder that is not there.
    """
    folder = Path(folder)
    try:
        index = pd.read_csv(folder / INDEX_CSV)
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"{folder / INDEX_CSV} could not be read ({exc}).") from None
    if index.empty or "folder" not in index.columns:
        raise LorascopeError(
            f"{folder / INDEX_CSV} lists no runs (expected a 'folder' column and a row per run)."
        )
    missing = [str(f) for f in index["folder"] if not is_run_folder(folder / str(f))]
    if missing:
        raise LorascopeError(
            f"{folder / INDEX_CSV} lists run folder(s) that are not in {folder}: "
            f"{', '.join(missing[:5])}. Re-run the sweep, or remove those rows."
        )
    return [read_run(folder / str(f)) for f in index["folder"]]
