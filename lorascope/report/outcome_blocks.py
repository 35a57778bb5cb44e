"""The answer's report blocks: a list of trainer runs (``trained.TrainedRun``) in, figures, tables and notes
out.

Used by comparison pages of trainer runs (``comparison.py``: the demo's page), and by the page of a training
sweep or a single run (``training_page.py``). The figures are ``outcome_figures.py``'s; every caption says in
one line how to read its figure.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import outcome_figures as of
from . import trained as tr
from .blocks import Block, CardsBlock, FigureBlock, NoteBlock, TableBlock
from .formatting import human_count
from .registry import folder_has

FUNCTIONAL_CSV = "functional.csv"  # written by `lorascope sweep` (lorascope.rank.folders)
SWEEP_JSON = "sweep.json"
FUNCTIONAL_TOLERANCE = 0.01  # "which k keeps 99 % of the loss change"


def outcome_columns(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    front = ["run", "method", "targets", "rank", "trainable_parameters"]
    forgetting = [c for c in table.columns if c.endswith("_forgetting")]
    return [c for c in front if c in table.columns] + metrics + forgetting


def answer_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    """The answer: every run's outcome against r and against trainable parameters, the knees, the table."""
    if not runs:
        return None
    table = tr.outcome_table(runs)
    metrics = tr.outcome_metrics(runs, table)
    if not metrics:
        return [NoteBlock("These runs recorded no evaluation metrics (metrics.json 'final').", level="warn")]
    task = (runs[0].metrics.get("task") or {}).get("name", "")
    blocks: list[Block] = []
    lines = tr.answer_lines(table, metrics)
    if lines:
        blocks.append(CardsBlock(answer_cards(table, metrics)))
        blocks.extend(NoteBlock(line) for line in lines)
    ranked = table["rank"].notna().sum()
    knees = tr.knee_table(table, metrics) if ranked else pd.DataFrame()
    if ranked >= 2:
        blocks.append(
            FigureBlock(
                "outcome_rank",
                f"How to read: each panel is one {task} metric against the LoRA rank r; a line per target "
                "set, the horizontal lines are the runs without an adapter (full fine-tuning, freezing), and "
                "a ring marks where a line's gain flattens (its knee).",
                functools.partial(of.outcome_vs_rank, table, metrics, knees),
            )
        )
    if len(runs) >= 2:
        blocks.append(
            FigureBlock(
                "outcome_parameters",
                "How to read: the same metrics against the parameters each run trained (log scale); further "
                "left is cheaper, so the best method for a budget is the highest point left of it.",
                functools.partial(of.outcome_vs_parameters, table, metrics),
            )
        )
    shown = table[outcome_columns(table, metrics)]
    lost = [c for c in shown.columns if c.endswith("_forgetting")]
    shown = shown.rename(
        columns={
            "rank": "r",
            "trainable_parameters": "parameters",
            **{c: c.replace("_forgetting", " lost") for c in lost},
        }
    )
    blocks.append(
        NoteBlock(
            (f"Every run's outcome on {task}" if task else "Every run's outcome")
            + ": accuracies are shares of each evaluation set, eval_loss is in nats per token"
            + ("; '… lost' is the base model's accuracy minus the run's." if lost else ".")
        )
    )
    blocks.append(TableBlock(shown, caption="Every run's outcome", interactive=True, csv_name="outcome.csv"))
    if len(knees):
        blocks.append(
            TableBlock(
                knees,
                caption="Knee of each metric against r per target set (Kneedle on "
                "log2 r: the r farthest above the chord from the smallest to "
                "the largest r; empty where the curve never bends), with the "
                "runs without an adapter beside "
                "it",
                collapsed=len(knees) > 15,
            )
        )
    return blocks


def answer_cards(table: pd.DataFrame, metrics: list[str]) -> list[tuple[str, str, str]]:
    """One card per group and reference run: the best primary metric and where it is reached."""
    primary = tr.primary_metric(metrics)
    cards = []
    for group in tr.groups(table):
        runs = table[table["group"] == group]
        values = pd.to_numeric(runs[primary], errors="coerce")
        i = int(np.nanargmin(values) if tr.lower_is_better(primary) else np.nanargmax(values))
        best = runs.iloc[i]
        cards.append(
            (
                f"{group}: best {tr.metric_title(primary)}",
                _fmt(values.iloc[i], primary),
                f"at r = {int(best['rank'])}, {human_count(best['trainable_parameters'])} parameters",
            )
        )
    for _, ref in tr.references(table).iterrows():
        cards.append(
            (
                f"{ref['run']}: {tr.metric_title(primary)}",
                _fmt(ref[primary], primary),
                f"{human_count(ref['trainable_parameters'])} parameters",
            )
        )
    return cards


def _fmt(v: Any, metric: str) -> str:
    if v is None or pd.isna(v):
        return "–"
    return f"{float(v):.0%}" if metric.endswith("_acc") else f"{float(v):.3g}"


def forgetting_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    table = tr.outcome_table(runs)
    columns = [c for c in table.columns if c.endswith("_forgetting")]
    if not columns or table["rank"].notna().sum() < 2:
        return None
    return [
        FigureBlock(
            "forgetting_rank",
            "How to read: the share of facts the base model knew that each run no longer states (base "
            "accuracy minus final accuracy on the retention sets) against r; lower is better, 0 means "
            "nothing forgotten.",
            functools.partial(of.forgetting_vs_rank, table, columns),
        )
    ]


def evolution_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    evolutions = {r.label: e for r in runs if (e := tr.rank_evolution(r)) is not None}
    if not evolutions:
        return None
    table = tr.outcome_table(runs)
    missing = [r.label for r in runs if r.label not in evolutions]
    blocks: list[Block] = [
        FigureBlock(
            "rank_evolution",
            "How to read: each line is one run's median entropy rank (effective number of directions) of its "
            "trained matrices at each recorded step, from rank_history.csv; a line that flattens early "
            "stopped adding directions.",
            functools.partial(of.rank_during_training, evolutions, table),
        )
    ]
    if missing:
        blocks.append(
            NoteBlock(
                f"{len(missing)} run(s) recorded no rank history (trained with --rank-every "
                f"0): {', '.join(missing)}.",
                level="warn",
            )
        )
    return blocks


def functional_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    """For each run whose results folder holds a functional sweep (``lorascope sweep RUN_DIR``): which rank-k
    truncation keeps 99 % of its loss change, beside the energy that k keeps."""
    from ..rank.functional import pick_rank

    blocks: list[Block] = []
    for run in runs:
        path = run.results.path if run.results is not None else None
        if path is None or not folder_has(path, FUNCTIONAL_CSV):
            continue
        functional = pd.read_csv(path / FUNCTIONAL_CSV)
        info = _json(path / SWEEP_JSON)
        metric = str((info.get("functional_pick") or {}).get("metric", "eval_loss"))
        functional.attrs["loss_metric"] = metric
        if functional.empty or not (functional["point"] == "truncated").any():
            continue
        pick = pick_rank(functional, FUNCTIONAL_TOLERANCE)
        shares = tr.kept_shares(functional)
        at = shares[shares["k"] == pick["k"]]
        energy = float(at["energy"].iloc[0]) if len(at) else math.nan
        verdict = (
            "is the smallest rank that keeps"
            if pick["within"]
            else "is the largest rank measured, and even it does not keep"
        )
        blocks.append(
            NoteBlock(
                f"{run.label}: truncating every ΔW to rank k = {pick['k']} {verdict} "
                f"{1 - pick['tolerance']:.0%} of the fine-tune's change in {metric} ({pick['loss']:.4f} "
                f"against {pick['full_loss']:.4f} untruncated and {pick['base_loss']:.4f} for the base); "
                f"that k keeps {energy:.1%} of ‖ΔW‖²."
            )
        )
        blocks.append(
            FigureBlock(
                f"functional_energy_{_slug(run.label)}",
                f"How to read: for {run.label}, every ΔW truncated to its top k singular directions; blue is "
                "the share of the loss change kept, green the share of ‖ΔW‖² kept: where blue passes the "
                "dotted line first is the rank the update needed.",
                functools.partial(of.functional_beside_energy, shares, pick, metric),
            )
        )
        accuracies = [c for c in functional.columns if c.endswith("_acc")]
        shown = [c for c in ("point", "k", "energy", "loss", *accuracies) if c in functional.columns]
        blocks.append(
            TableBlock(
                functional[shown], caption=f"{run.label}: every point of the functional sweep", collapsed=True
            )
        )
    return blocks or None


def history_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    """For a page of one run: its metrics against step (history.csv)."""
    if len(runs) != 1 or runs[0].history is None:
        return None
    run = runs[0]
    metrics = [m for m in [f"{s}_acc" for s in run.sets] + [tr.POOLED_LOSS] if m in run.history.columns]
    if not metrics:
        return None
    return [
        FigureBlock(
            "history",
            "How to read: each panel is one evaluation metric of the run at each "
            "evaluation step (history.csv); step 0 is the base model.",
            functools.partial(of.history_figure, run.history, metrics),
        )
    ]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"
