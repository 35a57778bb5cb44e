"""The report's rank sections: uniform versus budget-optimal ranks, loss against rank, and a rank selection.

Each section appears when its file is in the results folder (``rank/folders.py`` writes them):
``sweep_frontier.csv`` (``lorascope sweep``), ``functional.csv`` (``lorascope sweep --eval-data``) and
``selection.csv`` with ``selection.json`` (``lorascope select``). Figures are pure functions, tables in,
a matplotlib ``Figure`` out; the section builders read the CSV/JSON files and return blocks.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from ..rank.files import FRONTIER_CSV, FUNCTIONAL_CSV, KNEES_CSV, SELECTION_CSV, SELECTION_JSON, TRAINING_CSV
from . import data
from . import figures as fg
from .blocks import Block, CardsBlock, FigureBlock, NoteBlock, TableBlock
from .formatting import human_count
from .sections import SECTIONS, RunContext

POLICY_STYLE = {  # frontier curve -> (label, colour, line style)
    "uniform": ("uniform rank k", fg.OKABE_ITO[0], "-"),
    "optimal": ("budget-optimal ranks (exact knapsack)", fg.OKABE_ITO[3], "-"),
    "greedy": ("greedy σ²/(m+n)", fg.OKABE_ITO[2], "--"),
}


# ---- figures (pure) -----------------------------------------------------------------------------------


@fg.styled
def frontier_figure(frontier: pd.DataFrame) -> Figure:
    """Energy kept against adapter parameters: uniform ranks (points labelled k) and budget-optimal ranks."""
    fig = Figure(figsize=(fg.FULL_WIDTH * 0.62, 3.8), layout="constrained")
    ax = fig.subplots()
    for policy, (label, color, style) in POLICY_STYLE.items():
        rows = frontier[(frontier["policy"] == policy) & (frontier["params"] > 0)].sort_values("params")
        if rows.empty:
            continue
        ax.plot(
            rows["params"],
            rows["energy"],
            color=color,
            linestyle=style,
            linewidth=1.6,
            label=label,
            marker="o" if policy == "uniform" else None,
            markersize=3.5,
        )
        if policy == "uniform":
            for _, r in rows.iterrows():
                ax.annotate(
                    f"k={int(r['k'])}",
                    (r["params"], r["energy"]),
                    xytext=(3, -10),
                    textcoords="offset points",
                    fontsize=7,
                    color="0.3",
                )
    for level in data.ENERGY_LEVELS:
        ax.axhline(level, color="0.35", linewidth=0.7, linestyle=":")
    ax.set_xscale("log")
    ax.set_ylim(min(0.0, float(frontier["energy"].min())), 1.03)
    ax.set_xlabel("adapter parameters  Σ r·(rows + cols)")
    ax.set_ylabel("energy kept (all modules together)")
    ax.legend(loc="lower right", frameon=False)
    return fig


@fg.styled
def functional_figure(functional: pd.DataFrame, pick: dict[str, Any] | None) -> Figure:
    """Loss with every ΔW truncated to rank k; the base and the untruncated update as horizontal lines."""
    fig = Figure(figsize=(fg.FULL_WIDTH * 0.62, 3.6), layout="constrained")
    ax = fig.subplots()
    trunc = functional[functional["point"] == "truncated"].sort_values("k")
    full = functional.loc[functional["point"] == "full", "loss"]
    base = functional.loc[functional["point"] == "base", "loss"]
    ax.plot(
        trunc["k"],
        trunc["loss"],
        color=fg.OKABE_ITO[0],
        marker="o",
        markersize=3.5,
        linewidth=1.6,
        label="rank-k truncation",
    )
    if not full.empty:
        ax.axhline(
            float(full.iat[0]),
            color=fg.OKABE_ITO[2],
            linestyle="--",
            linewidth=1.1,
            label="untruncated update",
        )
        if pick and not base.empty:
            change = abs(float(base.iat[0]) - float(full.iat[0]))
            ax.axhspan(
                float(full.iat[0]),
                float(full.iat[0]) + pick["tolerance"] * change,
                color=fg.OKABE_ITO[2],
                alpha=0.15,
                label=f"tolerance: {pick['tolerance']:.0%} of the fine-tune's change",
            )
    if not base.empty:
        ax.axhline(float(base.iat[0]), color="0.4", linestyle=":", linewidth=1.1, label="base model (k = 0)")
    if pick:  # named in the legend, not beside the line, where it could sit on the legend or the curve
        ax.axvline(
            pick["k"], color=fg.OKABE_ITO[3], linewidth=1.0, label=f"smallest k within it: {pick['k']}"
        )
    ax.set_xscale("log", base=2)
    ks = sorted({int(k) for k in trunc["k"]})
    ax.set_xticks(ks if len(ks) <= 10 else ks[:: math.ceil(len(ks) / 10)])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("rank k of every update")
    metric = (pick or {}).get("metric", "eval_loss")
    ax.set_ylabel(f"{metric} (nats per token)")
    fig.legend(loc="outside right upper", frameon=False)
    return fig


@fg.styled
def selection_bars(selection: pd.DataFrame, types: list[str], labels: dict[str, str]) -> Figure:
    """Chosen rank against available rank per module type (median, with the min–max range)."""
    fig = Figure(figsize=(fg.FULL_WIDTH * 0.62, 0.35 * len(types) + 1.2), layout="constrained")
    ax = fig.subplots()
    t = data.with_types(selection)
    y = np.arange(len(types))
    for i, name in enumerate(types):
        rows = t[t["type"] == name]
        chosen, avail = rows["rank"].astype(float), rows["available_rank"].astype(float)
        ax.hlines(i, chosen.min(), chosen.max(), color=fg.OKABE_ITO[3], linewidth=3, alpha=0.5)
        ax.plot(chosen.median(), i, "o", color=fg.OKABE_ITO[3], markersize=5)
        ax.plot(avail.median(), i, "|", color="0.3", markersize=12)
    ax.set_yticks(y, [labels.get(tn, tn) for tn in types])
    ax.set_ylim(len(types) - 0.5, -0.5)  # first type at the top
    if float(selection["available_rank"].max()) > 256:
        ax.set_xscale("symlog", linthresh=1)
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel("rank: chosen (dot = median, bar = range) and available (|)")
    return fig


# ---- sections -----------------------------------------------------------------------------------------


def _read_csv(ctx: RunContext, name: str) -> pd.DataFrame:
    return pd.read_csv(ctx.results.path / name)


def _read_json(ctx: RunContext, name: str) -> dict[str, Any]:
    path = ctx.results.path / name
    return json.loads(path.read_text()) if path.is_file() else {}


def frontier_milestones(frontier: pd.DataFrame) -> pd.DataFrame:
    """At each uniform rank's budget: the uniform, exact-optimal and greedy energies side by side."""
    uni = frontier[frontier["policy"] == "uniform"].set_index("budget")
    opt = frontier[frontier["policy"] == "optimal"].set_index("budget")
    gre = frontier[frontier["policy"] == "greedy"].set_index("budget")
    rows = []
    for budget, u in uni.iterrows():
        rows.append(
            {
                "k": int(u["k"]),
                "budget (parameters)": int(budget),
                "uniform energy": u["energy"],
                "optimal energy": opt["energy"].get(budget, np.nan),
                "greedy energy": gre["energy"].get(budget, np.nan),
                "greedy gap": opt["energy"].get(budget, np.nan) - gre["energy"].get(budget, np.nan),
                "optimal rel. error": opt["rel_error"].get(budget, np.nan),
            }
        )
    return pd.DataFrame(rows)


@SECTIONS.register("rank_frontier", "Uniform versus budget-optimal ranks", order=72, needs=(FRONTIER_CSV,))
def frontier_section(ctx: RunContext) -> list[Block] | None:
    frontier = _read_csv(ctx, FRONTIER_CSV)
    if frontier.empty:
        return None
    milestones = frontier_milestones(frontier)
    blocks: list[Block] = [
        FigureBlock(
            "rank_frontier",
            "Energy kept against the adapter parameters spent: every module at the same rank k (blue), and "
            "the best ranks per module for the same budget (red, solved exactly as a multiple-choice "
            "knapsack; green dashed, the greedy σ²/(rows+cols) order). The gap between blue and red is what "
            "a per-module rank choice gains.",
            functools.partial(frontier_figure, frontier),
        ),
        TableBlock(
            milestones,
            caption="At each uniform rank's budget: what uniform, exact-optimal and greedy ranks keep",
        ),
    ]
    gap = milestones["greedy gap"].max() if len(milestones) else np.nan
    if np.isfinite(gap):
        blocks.append(
            NoteBlock(
                "The greedy allocation reaches the exact optimum at every budget shown."
                if gap <= 1e-12
                else (
                    f"The greedy allocation falls short of the exact optimum by at most {gap:.2e} "
                    "of the total energy."
                )
            )
        )
    return blocks


@SECTIONS.register("functional", "Loss against rank", order=74, needs=(FUNCTIONAL_CSV,))
def functional_section(ctx: RunContext) -> list[Block] | None:
    table = _read_csv(ctx, FUNCTIONAL_CSV)
    if table.empty:
        return None
    pick = _read_json(ctx, "sweep.json").get("functional_pick")
    blocks: list[Block] = [
        FigureBlock(
            "functional",
            "The loss of the base model with every weight update replaced by its rank-k truncation; "
            "dashed is the untruncated update, dotted the base model, the band the tolerance.",
            functools.partial(functional_figure, table, pick),
        )
    ]
    if pick:
        verdict = (
            "is the smallest rank keeping"
            if pick.get("within")
            else "is the largest rank measured; none keeps"
        )
        recovered = pick.get("recovered")
        blocks.append(
            NoteBlock(
                f"k = {pick['k']} {verdict} {1 - pick['tolerance']:.0%} of the fine-tune's change in "
                f"{pick.get('metric', 'the loss')}: {pick['loss']:.4f} against {pick['full_loss']:.4f} "
                f"untruncated and {pick['base_loss']:.4f} for the base"
                + (f" ({recovered:.0%} of the change kept)." if recovered is not None else ".")
            )
        )
    shown = [c for c in table.columns if c not in ("point",)]
    blocks.append(TableBlock(table[["point"] + shown], caption="Every point of the functional sweep"))
    return blocks


@SECTIONS.register("selection", "Rank selection", order=76, needs=(SELECTION_CSV,))
def selection_section(ctx: RunContext) -> list[Block] | None:
    table = _read_csv(ctx, SELECTION_CSV)
    if table.empty:
        return None
    info = _read_json(ctx, SELECTION_JSON)
    totals = info.get("totals", {})
    blocks: list[Block] = []
    if info.get("recommendation"):
        blocks.append(NoteBlock(info["recommendation"]))
    if totals:
        cards = [
            (
                "adapter parameters",
                human_count(totals.get("params")),
                f"largest rank {totals.get('max_rank')}",
            ),
            (
                "energy kept",
                f"{totals.get('energy', float('nan')):.1%}",
                f"relative error {totals.get('rel_error', float('nan')):.3f}",
            ),
            (
                "modules kept",
                f"{totals.get('modules_selected')} of {totals.get('modules')}",
                "rank 0 = left out",
            ),
        ]
        blocks.append(CardsBlock(cards))
    typed = data.with_types(table)
    types = data.type_order(typed)
    labels = data.short_labels(types)
    blocks.append(
        FigureBlock(
            "selection_ranks",
            "Per module type: the chosen ranks (dot = median, bar = range) and the "
            "rank available in the update (|).",
            functools.partial(selection_bars, table, types, labels),
        )
    )
    if table["layer"].notna().any():
        grid = data.layer_grid(
            table, "rank", [t for t in types if t in set(data.with_types(data.layered(table))["type"])]
        )
        blocks.append(
            FigureBlock(
                "selection_heatmap",
                "The chosen rank of every module, layer (rows) × module type.",
                functools.partial(fg.heatmaps, [fg.HeatPanel("chosen rank", grid, "rank")], labels),
            )
        )
    blocks.append(
        TableBlock(
            table,
            caption=f"{len(table)} modules: chosen rank, parameters and energy kept",
            interactive=True,
            csv_name=SELECTION_CSV,
        )
    )
    export = info.get("export")
    if export:
        text = (
            f"Exported to {export.get('path')}: {export.get('modules')} module(s), r = "
            f"{(export.get('config') or {}).get('r')}, scale 1 (lora_alpha = r per module)."
        )
        excess = export.get("max_excess_rel_error")
        if excess is not None and math.isfinite(excess):
            text += (
                " The largest excess of a module's relative error over the optimal sqrt(1 − energy) "
                f"is {excess:.2e}."
            )
        blocks.append(NoteBlock(text))
        blocks += [NoteBlock(note, level="warn") for note in export.get("notes") or []]
        skipped = export.get("not_exported") or []
        if skipped:
            blocks.append(
                TableBlock(
                    pd.DataFrame(skipped),
                    caption=f"Not exported ({len(skipped)})",
                    collapsed=len(skipped) > 12,
                )
            )
    return blocks


@SECTIONS.register("training", "Training sweep: metrics against rank", order=71, needs=(TRAINING_CSV,))
def training_section(ctx: RunContext) -> list[Block] | None:
    """The training sweep this folder's update came from (``lorascope sweep TRAIN_SWEEP_DIR``): every metric
    against r, one line per target set, full fine-tuning and freezing as references, the knees."""
    from . import outcome_figures as of
    from . import trained as tr

    training = _read_csv(ctx, TRAINING_CSV)
    if training.empty or "rank" not in training.columns:
        return None
    table = tr.outcome_from_index(training)
    metrics = tr.outcome_metrics([], table)
    blocks: list[Block] = []
    if metrics and table["rank"].notna().sum() >= 2:
        knees = tr.knee_table(table, metrics)
        blocks.append(
            FigureBlock(
                "training",
                "How to read: each panel is one evaluation metric of the training runs against their "
                "LoRA rank r; a line per target set, horizontal lines are the runs without an "
                "adapter (full fine-tuning, freezing), and a ring marks a line's knee.",
                functools.partial(of.outcome_vs_rank, table, metrics, knees),
            )
        )
    if ctx.has_file(KNEES_CSV):
        knees = _read_csv(ctx, KNEES_CSV)
        if not knees.empty:
            blocks.append(
                TableBlock(
                    knees,
                    caption="Knee of each metric against r per method and target set "
                    "(Kneedle: the rank farthest above the chord from the "
                    "smallest to the largest r, on log2 r); empty = "
                    "none",
                    collapsed=True,
                )
            )
    cols = [
        c
        for c in (
            "run",
            "method",
            "targets",
            "rank",
            "trainable_parameters",
            "train_seconds",
            "peak_rss_bytes",
        )
        if c in training
    ]
    blocks.append(
        TableBlock(training[cols + metrics], caption="Runs: trainable parameters, time, memory and metrics")
    )
    blocks.append(
        NoteBlock(
            "Forgetting against the base model and effective rank during training are on the "
            "training sweep's own page: `lorascope report TRAIN_SWEEP_DIR`."
        )
    )
    return blocks
