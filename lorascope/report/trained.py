"""Trainer runs as a report reads them: what each run reached on its task, what it forgot, how its rank grew.

A trainer run folder (``lorascope.train.runs``) declares everything shown here: ``metrics.json`` (method,
rank, target set, trainable parameters, the base model's and the final evaluation), ``history.csv``
(evaluations during training) and ``rank_history.csv`` (every ``rank_every`` steps, each trained matrix's
entropy_rank, rank_90 and ‖ΔW‖_F). A spectrum results folder leads to its run through the input it analyzed,
as its ``summary.json`` records it: the run's ``adapter/`` or ``tuned/``.

Reading the folders is ``read_run``, ``run_of_results`` and ``runs_of_sweep``; everything else is pure: lists
of ``TrainedRun`` in, DataFrames and sentences out. Metric names are the trainer's: ``<set>_acc`` and
``<set>_loss`` per evaluation set in the task's order (the first is what the run was trained to change, e.g.
``edit``), ``eval_loss`` pooled over all sets; sets named ``retain*`` hold what the base knew and the
fine-tune should keep (``lorascope.train.data``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


# ---- the outcome table (pure) -------------------------------------------------------------------------


def group_of(method: str, rank: Any, targets: Any, methods: set[str]) -> str:
    """The line a run belongs to in rank figures: its target set (with the method where several adapter
    methods are compared), or ``NO_RANK`` for full fine-tuning and freezing."""
    if rank is None or pd.isna(rank):
        return NO_RANK
    return f"{method} · {targets}" if len(methods) > 1 else str(targets)


def outcome_from_index(index: pd.DataFrame) -> pd.DataFrame:
    """The outcome table (``outcome_table``'s columns less forgetting, which needs each run's base
    evaluation) from a training sweep's ``index.csv`` rows, or the ``training.csv`` that ``lorascope sweep``
    copies of it."""
    table = index.copy()
    table["rank"] = pd.to_numeric(table["rank"], errors="coerce").astype("Int64")
    methods = set(table.loc[table["rank"].notna(), "method"].astype(str))
    targets = table["targets"] if "targets" in table.columns else pd.Series([None] * len(table))
    table["group"] = [
        group_of(str(m), r, t, methods) for m, r, t in zip(table["method"], table["rank"], targets)
    ]
    return table


def outcome_table(runs: list[TrainedRun]) -> pd.DataFrame:
    """One row per run: run, method, targets, rank, group, trainable_parameters, the final metrics, and per
    retention set the accuracy lost against the base model (``<set>_forgetting`` = base − final, in points of
    accuracy: 0.30 means 30 % of the facts the base knew are gone)."""
    methods = {r.method for r in runs if r.rank is not None}
    rows = []
    for r in runs:
        m = r.metrics
        final, base = m.get("final") or {}, m.get("base_eval") or {}
        row: dict[str, Any] = {
            "run": r.label,
            "method": r.method,
            "targets": r.targets,
            "rank": r.rank,
            "group": group_of(r.method, r.rank, r.targets, methods),
            "train_blocks": (m.get("options") or {}).get("train_blocks") if r.method == "freeze" else None,
            "trainable_parameters": m.get("trainable_parameters"),
            "total_parameters": m.get("total_parameters"),
            "train_seconds": m.get("train_seconds"),
        }
        for key, value in final.items():
            if key.endswith(("_acc", "_loss")) and key != "train_loss":
                row[key] = value
        for s in retention_sets(r.sets):
            acc = f"{s}_acc"
            if acc in final and acc in base:
                row[f"{s}_forgetting"] = float(base[acc]) - float(final[acc])
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["rank"] = pd.to_numeric(table["rank"], errors="coerce").astype("Int64")
    return table


def retention_sets(sets: list[str]) -> list[str]:
    return [s for s in sets if s.startswith(RETAIN_PREFIX)]


def outcome_metrics(runs: list[TrainedRun], table: pd.DataFrame) -> list[str]:
    """What a reader compares, in the task's order: each set's accuracy, then the pooled eval loss."""
    sets = next((r.sets for r in runs if r.sets), [])
    metrics = [f"{s}_acc" for s in sets if f"{s}_acc" in table.columns]
    metrics += [c for c in table.columns if c.endswith("_acc") and c not in metrics]
    if POOLED_LOSS in table.columns:
        metrics.append(POOLED_LOSS)
    return [m for m in metrics if pd.to_numeric(table[m], errors="coerce").notna().any()]


def primary_metric(metrics: list[str]) -> str | None:
    """The task's first accuracy (what the runs were trained to change), or the loss where there is none."""
    return next((m for m in metrics if m.endswith("_acc")), metrics[0] if metrics else None)


def lower_is_better(metric: str) -> bool:
    return metric.endswith(("_loss", "_forgetting"))


def metric_title(metric: str) -> str:
    """'retain_same_acc' -> 'retain-same accuracy', 'eval_loss' -> 'eval loss (nats per token)'."""
    if metric == POOLED_LOSS:
        return "eval loss, all sets (nats per token)"
    for suffix, word in (
        ("_acc", "accuracy"),
        ("_loss", "loss (nats per token)"),
        ("_forgetting", "facts forgotten"),
    ):
        if metric.endswith(suffix):
            return f"{metric.removesuffix(suffix).replace('_', '-')} {word}"
    return metric


def groups(table: pd.DataFrame) -> list[str]:
    """The rank groups in first-seen order (target sets as the sweep listed them)."""
    ranked = table[table["rank"].notna()]
    return list(dict.fromkeys(ranked["group"]))


def references(table: pd.DataFrame) -> pd.DataFrame:
    """The runs without a rank (full fine-tuning, freezing): reference lines in every rank figure."""
    return table[table["rank"].isna()]


def knee_table(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The knee of each metric against r, per group (``lorascope.rank.training.knee``: Kneedle on log2 r), and
    the reference runs' values beside it."""
    from ..rank.training import knee

    rows = []
    refs = references(table)
    for group in groups(table):
        runs = table[table["group"] == group]
        for metric in metrics:
            values = pd.to_numeric(runs[metric], errors="coerce")
            k = knee(runs["rank"].to_numpy(float), values.to_numpy(float), lower_is_better(metric))
            best = values.min() if lower_is_better(metric) else values.max()
            row = {
                "group": group,
                "metric": metric,
                "knee r": k["rank"],
                "at the knee": k["value"],
                "best over r": float(best),
                "best at r": int(
                    runs["rank"].iloc[
                        int(np.nanargmin(values) if lower_is_better(metric) else np.nanargmax(values))
                    ]
                ),
            }
            for _, ref in refs.iterrows():
                row[str(ref["run"])] = ref.get(metric, math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def smallest_rank_reaching(table: pd.DataFrame, group: str, metric: str, target: float) -> int | None:
    """The smallest r of ``group`` whose ``metric`` is at least as good as ``target`` (None: no r is)."""
    runs = table[table["group"] == group].sort_values("rank")
    values = pd.to_numeric(runs[metric], errors="coerce")
    ok = values <= target if lower_is_better(metric) else values >= target
    hit = runs[ok.to_numpy()]
    return int(hit["rank"].iloc[0]) if len(hit) else None


def answer_lines(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The answer in a few sentences: per group, the best value of the primary metric and the smallest r that
    reaches what full fine-tuning reaches; the reference runs' values; what each lost on retention."""
    primary = primary_metric(metrics)
    if primary is None or table.empty:
        return []
    title = metric_title(primary)
    refs = references(table)
    full = refs[refs["method"] == "full"]
    goal = float(full[primary].iloc[0]) if len(full) and pd.notna(full[primary].iloc[0]) else None
    lines = []
    forgetting = [c for c in table.columns if c.endswith("_forgetting")]
    for group in groups(table):
        runs = table[table["group"] == group].sort_values("rank")
        values = pd.to_numeric(runs[primary], errors="coerce")
        i = int(np.nanargmin(values) if lower_is_better(primary) else np.nanargmax(values))
        text = f"{group}: {title} {_v(values.iloc[i])} at best (r = {int(runs['rank'].iloc[i])})"
        if goal is not None:
            reach = smallest_rank_reaching(table, group, primary, goal)
            text += (
                f"; r = {reach} is the smallest rank that matches full fine-tuning ({_v(goal)})"
                if reach
                else f"; no rank matches full fine-tuning ({_v(goal)})"
            )
        if forgetting:
            at = runs.iloc[i]
            text += "; at that rank " + _losses(at, forgetting)
        lines.append(text + ".")
    for _, ref in refs.iterrows():
        params = int(ref["trainable_parameters"])
        text = f"{ref['run']}: {title} {_v(ref[primary])}, {params:,} trainable parameters"
        if forgetting:
            text += "; " + _losses(ref, forgetting)
        lines.append(text + ".")
    return lines


def _v(x: Any) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):.2f}"


def _losses(row: pd.Series, forgetting: list[str]) -> str:
    """'retain-same accuracy is 63 points below the base model's, retain-other 47'."""
    parts = [
        f"{c.removesuffix('_forgetting').replace('_', '-')}{' accuracy' if i == 0 else ''} {_points(row[c])}"
        for i, c in enumerate(forgetting)
    ]
    return ", ".join(parts) + " (against the base model)"


def _points(x: Any) -> str:
    """An accuracy difference in percentage points, signed: 'falls 63 points', 'rises 2 points'."""
    if x is None or pd.isna(x):
        return "–"
    points = round(100 * float(x))
    if points == 0:
        return "unchanged"
    return f"{'falls' if points > 0 else 'rises'} {abs(points)} point{'s' if abs(points) != 1 else ''}"


# ---- during training (pure) ---------------------------------------------------------------------------


def rank_evolution(run: TrainedRun, column: str = "entropy_rank") -> pd.DataFrame | None:
    """The median (and 25–75 % band) over the run's trained matrices of ``column`` at each recorded step.

    Returns:
        DataFrame indexed by step with columns median, low, high; None where the run recorded no rank
        history (``--rank-every 0``).
    """
    h = run.rank_history
    if h is None or column not in h.columns:
        return None
    values = h.assign(v=pd.to_numeric(h[column], errors="coerce")).groupby("step")["v"]
    return pd.DataFrame(
        {"median": values.median(), "low": values.quantile(0.25), "high": values.quantile(0.75)}
    ).sort_index()


# ---- functional sweep beside energy (pure) ------------------------------------------------------------


def kept_shares(functional: pd.DataFrame) -> pd.DataFrame:
    """Per truncation rank k: the share of the fine-tune's loss change kept, (loss_base − loss_k) /
    (loss_base − loss_full), beside the share of ‖ΔW‖_F² kept, energy(k) (docs/METRICS.md 'energy(k)')."""
    base = functional.loc[functional["point"] == "base", "loss"]
    full = functional.loc[functional["point"] == "full", "loss"]
    trunc = functional[functional["point"] == "truncated"].sort_values("k")
    if base.empty or full.empty or trunc.empty:
        return pd.DataFrame(columns=["k", "loss_kept", "energy"])
    change = float(base.iat[0]) - float(full.iat[0])
    kept = (float(base.iat[0]) - trunc["loss"].astype(float)) / change if change else np.nan
    return pd.DataFrame(
        {
            "k": trunc["k"].astype(int).to_numpy(),
            "loss_kept": np.asarray(kept, dtype=float),
            "energy": trunc["energy"].astype(float).to_numpy(),
        }
    )
