"""The answer on one page: trainer runs' task outcome against rank and parameters, forgetting, effective rank
during training, and a full fine-tune's functional rank beside its energy.

Figures are pure functions (tables in, a matplotlib ``Figure`` out) of what ``trained.py`` derives; the block
builders at the end turn a list of ``TrainedRun`` into report blocks, for comparison pages of trainer runs
(``comparison.py``), the demo, and the page of a training sweep or a single run (``training_page.py``).
Every figure's caption says in one line how to read it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from . import figures as fg
from . import trained as tr
from .blocks import Block, CardsBlock, FigureBlock, NoteBlock, TableBlock
from .formatting import human_count
from .registry import folder_has

FUNCTIONAL_CSV = "functional.csv"  # written by `lorascope sweep` (lorascope.rank.folders)
SWEEP_JSON = "sweep.json"
GROUP_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
REFERENCE_STYLES = [("0.1", (0, (6, 2))), ("0.45", (0, (4, 1.5, 1, 1.5))), ("0.1", (0, (1, 1.5))),
                    ("0.45", (0, (8, 2, 2, 2))), ("0.25", "-.")]
FUNCTIONAL_TOLERANCE = 0.01  # "which k keeps 99 % of the loss change"
PANEL_W, PANEL_H = 3.2, 2.35


def group_style(i: int) -> dict[str, Any]:
    """Colour, line style and marker of the i-th group (target set) of runs."""
    style = fg.run_style(i)
    return {"color": style["color"], "linestyle": style["linestyle"], "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)]}


def reference_style(j: int) -> dict[str, Any]:
    color, dash = REFERENCE_STYLES[j % len(REFERENCE_STYLES)]
    return {"color": color, "linestyle": dash}


def _grid(n_panels: int, legend_slot: bool, ncols: int = 3, panel_w: float = PANEL_W, panel_h: float = PANEL_H):
    """Panels in rows of ``ncols``; with ``legend_slot``, one more cell (hidden axes) holds the legend."""
    cells = n_panels + (1 if legend_slot else 0)
    ncols = max(1, min(ncols, cells))
    nrows = math.ceil(cells / ncols)
    fig = Figure(figsize=(min(fg.FULL_WIDTH, panel_w * ncols + 0.4), panel_h * nrows + 0.5), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    legend_ax = None
    if legend_slot:
        legend_ax = axes[n_panels]
        legend_ax.axis("off")
    for ax in axes[cells:]:
        ax.remove()
    return fig, axes[:n_panels], legend_ax


def _put_legend(fig: Figure, legend_ax, handles: list, labels: list[str], title: str | None = None) -> None:
    """The legend in its own cell where there is one (two columns when long), else outside on the right."""
    if not handles:
        return
    if legend_ax is not None:
        ncol = 1 if len(handles) <= 7 else 2
        legend_ax.legend(handles, labels, loc="center", frameon=False, ncol=ncol, title=title,
                         fontsize=8 if ncol == 1 else 7.5, handlelength=2.6, borderaxespad=0)
    else:
        fig.legend(handles, labels, loc="outside right upper", frameon=False, title=title, handlelength=2.6)


def _rank_axis(ax, ranks: Sequence[int]) -> None:
    """log2 r with a tick at every rank trained (at most eight labelled)."""
    ranks = sorted({int(r) for r in ranks})
    ax.set_xscale("log", base=2)
    shown = ranks if len(ranks) <= 8 else ranks[:: math.ceil(len(ranks) / 8)]
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = (ranks[0], ranks[-1]) if ranks else (1, 2)
    ax.set_xlim(lo / 1.4, hi * 1.4)


def _metric_axis(ax, metric: str, values: np.ndarray) -> None:
    if metric.endswith("_acc"):
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    elif metric.endswith("_forgetting"):
        finite = values[np.isfinite(values)]
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = max(0.05, float(finite.max())) if finite.size else 1.0
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    else:
        ax.set_ylim(bottom=0)


def _knee_handle() -> Line2D:
    return Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                  markeredgecolor="0.2", markeredgewidth=1.3)


@fg.styled
def outcome_vs_rank(table: pd.DataFrame, metrics: Sequence[str], knees: pd.DataFrame | None = None) -> Figure:
    """Each metric against the trained rank r (log2 axis): a line per group (target set), the runs without a
    rank (full fine-tuning, freezing) as horizontal reference lines, each line's knee (Kneedle) ringed."""
    fig, axes, legend_ax = _grid(len(metrics), legend_slot=len(metrics) % 3 != 0)
    gs = tr.groups(table)
    refs = tr.references(table)
    ranks = table["rank"].dropna().astype(int).tolist()
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes, metrics):
        values = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        for i, group in enumerate(gs):
            runs = table[table["group"] == group].sort_values("rank")
            st = group_style(i)
            (line,) = ax.plot(runs["rank"].astype(float), pd.to_numeric(runs[metric], errors="coerce"),
                              markersize=4, linewidth=1.5, **st)
            handles.setdefault(group, line)
            if knees is not None and len(knees):
                k = knees[(knees["group"] == group) & (knees["metric"] == metric)]
                if len(k) and pd.notna(k["knee r"].iloc[0]):
                    ax.plot([float(k["knee r"].iloc[0])], [float(k["at the knee"].iloc[0])], linestyle="none",
                            marker="o", markersize=9, markerfacecolor="none", markeredgecolor=st["color"],
                            markeredgewidth=1.3, zorder=4)
                    handles.setdefault("knee (Kneedle)", _knee_handle())
        for j, (_, ref) in enumerate(refs.iterrows()):
            if pd.notna(ref.get(metric)):
                line = ax.axhline(float(ref[metric]), linewidth=1.3, **reference_style(j))
                handles.setdefault(str(ref["run"]), line)
        _rank_axis(ax, ranks or [1])
        _metric_axis(ax, metric, values)
        ax.set_title(tr.metric_title(metric))
        ax.set_xlabel("rank r")
        if metric.endswith("_forgetting"):
            ax.set_ylabel("accuracy lost (base − final)")
    knee = handles.pop("knee (Kneedle)", None)  # last in the legend, after the lines it marks
    if knee is not None:
        handles["knee (Kneedle)"] = knee
    _put_legend(fig, legend_ax, list(handles.values()), list(handles), title="target set · reference")
    return fig


@fg.styled
def outcome_vs_parameters(table: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Each metric against trainable parameters (log axis): a line per group through its ranks, and each run
    without a rank as one large point."""
    fig, axes, legend_ax = _grid(len(metrics), legend_slot=len(metrics) % 3 != 0)
    gs = tr.groups(table)
    refs = tr.references(table)
    handles: dict[str, Any] = {}
    ref_markers = ["*", "P", "X", "h", "8"]
    params = pd.to_numeric(table["trainable_parameters"], errors="coerce").to_numpy(dtype=float)
    for ax, metric in zip(axes, metrics):
        values = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        for i, group in enumerate(gs):
            runs = table[table["group"] == group].sort_values("rank")
            (line,) = ax.plot(runs["trainable_parameters"].astype(float), pd.to_numeric(runs[metric], errors="coerce"),
                              markersize=4, linewidth=1.5, **group_style(i))
            handles.setdefault(group, line)
        for j, (_, ref) in enumerate(refs.iterrows()):
            if pd.notna(ref.get(metric)):
                (point,) = ax.plot([float(ref["trainable_parameters"])], [float(ref[metric])], linestyle="none",
                                   marker=ref_markers[j % len(ref_markers)], markersize=10,
                                   color=reference_style(j)["color"], zorder=4)
                handles.setdefault(str(ref["run"]), point)
        ax.set_xscale("log")
        finite = params[np.isfinite(params) & (params > 0)]
        if finite.size:
            ax.set_xlim(finite.min() / 2, finite.max() * 2)
        fg.log_ticks(ax.xaxis)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_count(v).replace(" ", "")))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        _metric_axis(ax, metric, values)
        ax.set_title(tr.metric_title(metric))
        ax.set_xlabel("trainable parameters")
    _put_legend(fig, legend_ax, list(handles.values()), list(handles), title="target set · reference")
    return fig


def forgetting_vs_rank(table: pd.DataFrame, columns: Sequence[str]) -> Figure:
    """Accuracy lost on each retention set (base − final) against r: a line per group, references horizontal."""
    return outcome_vs_rank(table, columns)


@fg.styled
def rank_during_training(evolutions: Mapping[str, pd.DataFrame], table: pd.DataFrame,
                         column_label: str = "entropy rank") -> Figure:
    """The median effective rank over each run's trained matrices against step: a panel per group, a line
    per run, coloured by r (the same r has the same colour in every panel); the runs without a rank share a
    panel."""
    runs = table[table["run"].isin(list(evolutions))]
    panels = tr.groups(runs) + ([tr.NO_RANK] if tr.references(runs).shape[0] else [])
    fig, axes, legend_ax = _grid(len(panels), legend_slot=len(panels) % 3 != 0 and len(panels) > 1, panel_h=2.3)
    ranks = sorted({int(r) for r in runs["rank"].dropna()})
    rank_colors = {r: fg.depth_color(i, fg.depth_norm((0, max(len(ranks) - 1, 1)))) for i, r in enumerate(ranks)}
    handles: dict[str, Any] = {}
    many_steps = max((len(e) for e in evolutions.values()), default=0) > 30
    for ax, panel in zip(axes, panels):
        members = runs[runs["group"] == panel].sort_values("rank", na_position="last")
        for j, (_, run) in enumerate(members.iterrows()):
            e = evolutions[run["run"]]
            if pd.notna(run["rank"]):
                label, style = f"r = {int(run['rank'])}", {"color": rank_colors[int(run["rank"])], "linestyle": "-"}
            else:
                label, style = str(run["run"]), reference_style(j)
            (line,) = ax.plot(e.index.to_numpy(dtype=float), e["median"].to_numpy(dtype=float), linewidth=1.5,
                              marker=None if many_steps else "o", markersize=3, **style)
            handles.setdefault(label, line)
        ax.set_ylim(bottom=0)
        ax.set_title(panel if panel != tr.NO_RANK else "without an adapter")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"median {column_label}")
    _put_legend(fig, legend_ax, list(handles.values()), list(handles), title="rank · run")
    return fig


@fg.styled
def functional_beside_energy(shares: pd.DataFrame, pick: Mapping[str, Any] | None, metric: str) -> Figure:
    """Against the truncation rank k of every ΔW: the share of the fine-tune's loss change kept, and the share
    of ‖ΔW‖_F² kept (energy); the dotted line is the tolerance, the vertical line the smallest k within it."""
    fig = Figure(figsize=(fg.FULL_WIDTH * 0.62, 3.5), layout="constrained")
    ax = fig.subplots()
    k = shares["k"].to_numpy(dtype=float)
    ax.plot(k, shares["loss_kept"], color=fg.OKABE_ITO[0], marker="o", markersize=4, linewidth=1.7,
            label=f"share of the change in {metric} kept")
    ax.plot(k, shares["energy"], color=fg.OKABE_ITO[2], marker="s", markersize=4, linewidth=1.7, linestyle="--",
            label="share of ‖ΔW‖² kept (energy)")
    if pick:
        ax.axhline(1 - pick["tolerance"], color="0.35", linewidth=0.9, linestyle=":",
                   label=f"{1 - pick['tolerance']:.0%} of the change")
        ax.axvline(pick["k"], color=fg.OKABE_ITO[3], linewidth=1.1, label=f"smallest k within it: {pick['k']}")
    _rank_axis(ax, k.astype(int).tolist() or [1])
    values = np.concatenate([shares["loss_kept"].to_numpy(dtype=float), shares["energy"].to_numpy(dtype=float)])
    finite = values[np.isfinite(values)]
    ax.set_ylim(min(-0.03, float(finite.min()) - 0.03) if finite.size else -0.03,
                max(1.03, float(finite.max()) + 0.03) if finite.size else 1.03)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("rank k of every ΔW (truncated SVD)")
    ax.set_ylabel("share kept")
    fig.legend(loc="outside right upper", frameon=False)
    return fig


@fg.styled
def history_figure(history: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """One run's evaluation metrics against training step (history.csv)."""
    fig, axes, legend_ax = _grid(len(metrics), legend_slot=False)
    for ax, metric in zip(axes, metrics):
        values = pd.to_numeric(history[metric], errors="coerce")
        ax.plot(history["step"].astype(float), values, color=fg.OKABE_ITO[0], marker="o", markersize=3.5,
                linewidth=1.5)
        _metric_axis(ax, metric, values.to_numpy(dtype=float))
        ax.set_title(tr.metric_title(metric))
        ax.set_xlabel("training step")
    return fig


# ---- blocks -------------------------------------------------------------------------------------------


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
        blocks.append(FigureBlock(
            "outcome_rank",
            f"How to read: each panel is one {task} metric against the LoRA rank r; a line per target set, "
            "grey horizontal lines are the runs without an adapter, and a ring marks where a line's gain "
            "flattens (its knee).",
            functools.partial(outcome_vs_rank, table, metrics, knees)))
    if len(runs) >= 2:
        blocks.append(FigureBlock(
            "outcome_parameters",
            "How to read: the same metrics against the parameters each run trained (log scale); further left "
            "is cheaper, so the best method for a budget is the highest point left of it.",
            functools.partial(outcome_vs_parameters, table, metrics)))
    blocks.append(TableBlock(table[outcome_columns(table, metrics)].rename(columns={"rank": "r"}),
                             caption=f"Every run's outcome on {task}" if task else "Every run's outcome",
                             interactive=True, csv_name="outcome.csv"))
    if len(knees):
        blocks.append(TableBlock(knees, caption="Knee of each metric against r per target set (Kneedle on log2 r: "
                                                "the r farthest above the chord from the smallest to the largest "
                                                "r; empty where the curve never bends), with the runs without "
                                                "an adapter beside it", collapsed=len(knees) > 15))
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
        cards.append((f"{group}: best {tr.metric_title(primary)}", _fmt(values.iloc[i], primary),
                      f"at r = {int(best['rank'])}, {human_count(best['trainable_parameters'])} parameters"))
    for _, ref in tr.references(table).iterrows():
        cards.append((f"{ref['run']}: {tr.metric_title(primary)}", _fmt(ref[primary], primary),
                      f"{human_count(ref['trainable_parameters'])} parameters"))
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
    return [FigureBlock(
        "forgetting_rank",
        "How to read: the share of facts the base model knew that each run no longer states (base accuracy "
        "minus final accuracy on the retention sets) against r; lower is better, 0 means nothing forgotten.",
        functools.partial(forgetting_vs_rank, table, columns))]


def evolution_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    evolutions = {r.label: e for r in runs if (e := tr.rank_evolution(r)) is not None}
    if not evolutions:
        return None
    table = tr.outcome_table(runs)
    missing = [r.label for r in runs if r.label not in evolutions]
    blocks: list[Block] = [FigureBlock(
        "rank_evolution",
        "How to read: each line is one run's median entropy rank (effective number of directions) of its "
        "trained matrices at each recorded step, from rank_history.csv; a line that flattens early stopped "
        "adding directions.",
        functools.partial(rank_during_training, evolutions, table))]
    if missing:
        blocks.append(NoteBlock(f"{len(missing)} run(s) recorded no rank history (trained with --rank-every 0): "
                                f"{', '.join(missing)}.", level="warn"))
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
        verdict = ("is the smallest rank that keeps" if pick["within"] else
                   "is the largest rank measured, and even it does not keep")
        blocks.append(NoteBlock(
            f"{run.label}: truncating every ΔW to rank k = {pick['k']} {verdict} {1 - pick['tolerance']:.0%} of "
            f"the fine-tune's change in {metric} ({pick['loss']:.4f} against {pick['full_loss']:.4f} untruncated "
            f"and {pick['base_loss']:.4f} for the base); that k keeps {energy:.1%} of ‖ΔW‖²."))
        blocks.append(FigureBlock(
            f"functional_energy_{_slug(run.label)}",
            f"How to read: for {run.label}, every ΔW truncated to its top k singular directions; blue is the "
            f"share of the loss change kept, green the share of ‖ΔW‖² kept: where blue passes the dotted line "
            "first is the rank the update needed.",
            functools.partial(functional_beside_energy, shares, pick, metric)))
        shown = [c for c in ("point", "k", "energy", "loss", *[c for c in functional.columns if c.endswith("_acc")])
                 if c in functional.columns]
        blocks.append(TableBlock(functional[shown], caption=f"{run.label}: every point of the functional sweep",
                                 collapsed=True))
    return blocks or None


def history_blocks(runs: list[tr.TrainedRun]) -> list[Block] | None:
    """For a page of one run: its metrics against step (history.csv)."""
    if len(runs) != 1 or runs[0].history is None:
        return None
    run = runs[0]
    metrics = [m for m in [f"{s}_acc" for s in run.sets] + [tr.POOLED_LOSS] if m in run.history.columns]
    if not metrics:
        return None
    return [FigureBlock("history", "How to read: each panel is one evaluation metric of the run at each "
                                   "evaluation step (history.csv); step 0 is the base model.",
                        functools.partial(history_figure, run.history, metrics))]


def _json(path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"
