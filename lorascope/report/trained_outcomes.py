"""What trainer runs reached, as tables and sentences (pure): the outcome table, its metrics, the knee
of each group, the answer lines, rank during training and the functional sweep beside energy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .trained_runs import NO_RANK, POOLED_LOSS, RETAIN_PREFIX, TrainedRun


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
