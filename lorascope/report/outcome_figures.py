"""The answer's figures: trainer runs' task outcome against rank and parameters, forgetting, effective rank
during training, and a full fine-tune's functional rank beside its energy.

Pure functions: tables (``trained.py`` derives them) in, a matplotlib ``Figure`` out. ``outcome_blocks.py``
turns them into report blocks with captions that say how to read each figure.
"""

from __future__ import annotations

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
from .formatting import human_count

GROUP_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
REFERENCE_STYLES = [
    ("0.1", (0, (6, 2))),
    ("0.45", (0, (4, 1.5, 1, 1.5))),
    ("0.1", (0, (1, 1.5))),
    ("0.45", (0, (8, 2, 2, 2))),
    ("0.25", "-."),
]
PANEL_W, PANEL_H = 3.2, 2.35


def group_style(i: int) -> dict[str, Any]:
    """Colour, line style and marker of the i-th group (target set) of runs."""
    style = fg.run_style(i)
    return {
        "color": style["color"],
        "linestyle": style["linestyle"],
        "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)],
    }


def reference_style(j: int) -> dict[str, Any]:
    color, dash = REFERENCE_STYLES[j % len(REFERENCE_STYLES)]
    return {"color": color, "linestyle": dash}


def _grid(
    n_panels: int, legend_slot: bool, ncols: int = 3, panel_w: float = PANEL_W, panel_h: float = PANEL_H
):
    """Panels in rows of ``ncols``; with ``legend_slot``, one more cell (hidden axes) holds the legend."""
    cells = n_panels + (1 if legend_slot else 0)
    ncols = max(1, min(ncols, cells))
    nrows = math.ceil(cells / ncols)
    fig = Figure(
        figsize=(min(fg.FULL_WIDTH, panel_w * ncols + 0.4), panel_h * nrows + 0.5), layout="constrained"
    )
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
        legend_ax.legend(
            handles,
            labels,
            loc="center",
            frameon=False,
            ncol=ncol,
            title=title,
            fontsize=8 if ncol == 1 else 7.5,
            handlelength=2.6,
            borderaxespad=0,
        )
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
    else:  # a loss: from 0, with room above the highest point (a reference marker is drawn large)
        finite = values[np.isfinite(values)]
        hi = float(finite.max()) if finite.size else 1.0
        ax.set_ylim(0, hi * 1.08 if hi > 0 else 1.0)


def _knee_handle() -> Line2D:
    return Line2D(
        [],
        [],
        linestyle="none",
        marker="o",
        markersize=9,
        markerfacecolor="none",
        markeredgecolor="0.2",
        markeredgewidth=1.3,
    )


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
            (line,) = ax.plot(
                runs["rank"].astype(float),
                pd.to_numeric(runs[metric], errors="coerce"),
                markersize=4,
                linewidth=1.5,
                **st,
            )
            handles.setdefault(group, line)
            if knees is not None and len(knees):
                k = knees[(knees["group"] == group) & (knees["metric"] == metric)]
                if len(k) and pd.notna(k["knee r"].iloc[0]):
                    ax.plot(
                        [float(k["knee r"].iloc[0])],
                        [float(k["at the knee"].iloc[0])],
                        linestyle="none",
                        marker="o",
                        markersize=9,
                        markerfacecolor="none",
                        markeredgecolor=st["color"],
                        markeredgewidth=1.3,
                        zorder=4,
                    )
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
            (line,) = ax.plot(
                runs["trainable_parameters"].astype(float),
                pd.to_numeric(runs[metric], errors="coerce"),
                markersize=4,
                linewidth=1.5,
                **group_style(i),
            )
            handles.setdefault(group, line)
        for j, (_, ref) in enumerate(refs.iterrows()):
            if pd.notna(ref.get(metric)):
                (point,) = ax.plot(
                    [float(ref["trainable_parameters"])],
                    [float(ref[metric])],
                    linestyle="none",
                    marker=ref_markers[j % len(ref_markers)],
                    markersize=10,
                    color=reference_style(j)["color"],
                    zorder=4,
                )
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
    """Accuracy lost on each retention set (base − final) against r: a line per group, references
    horizontal."""
    return outcome_vs_rank(table, columns)


@fg.styled
def rank_during_training(
    evolutions: Mapping[str, pd.DataFrame], table: pd.DataFrame, column_label: str = "entropy rank"
) -> Figure:
    """The median effective rank over each run's trained matrices against step: a panel per group, a line
    per run, coloured by r (the same r has the same colour in every panel); the runs without a rank share a
    panel."""
    runs = table[table["run"].isin(list(evolutions))]
    panels = tr.groups(runs) + ([tr.NO_RANK] if tr.references(runs).shape[0] else [])
    legend_slot = len(panels) % 3 != 0 and len(panels) > 1
    fig, axes, legend_ax = _grid(len(panels), legend_slot=legend_slot, panel_h=2.3)
    ranks = sorted({int(r) for r in runs["rank"].dropna()})
    norm = fg.depth_norm((0, max(len(ranks) - 1, 1)))
    rank_colors = {r: fg.depth_color(i, norm) for i, r in enumerate(ranks)}
    handles: dict[str, Any] = {}
    many_steps = max((len(e) for e in evolutions.values()), default=0) > 30
    for ax, panel in zip(axes, panels):
        members = runs[runs["group"] == panel].sort_values("rank", na_position="last")
        for j, (_, run) in enumerate(members.iterrows()):
            e = evolutions[run["run"]]
            if pd.notna(run["rank"]):
                r = int(run["rank"])
                label, style = f"r = {r}", {"color": rank_colors[r], "linestyle": "-"}
            else:
                label, style = str(run["run"]), reference_style(j)
            (line,) = ax.plot(
                e.index.to_numpy(dtype=float),
                e["median"].to_numpy(dtype=float),
                linewidth=1.5,
                marker=None if many_steps else "o",
                markersize=3,
                **style,
            )
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
    ax.plot(
        k,
        shares["loss_kept"],
        color=fg.OKABE_ITO[0],
        marker="o",
        markersize=4,
        linewidth=1.7,
        label=f"share of the change in {metric} kept",
    )
    ax.plot(
        k,
        shares["energy"],
        color=fg.OKABE_ITO[2],
        marker="s",
        markersize=4,
        linewidth=1.7,
        linestyle="--",
        label="share of ‖ΔW‖² kept (energy)",
    )
    if pick:
        ax.axhline(
            1 - pick["tolerance"],
            color="0.35",
            linewidth=0.9,
            linestyle=":",
            label=f"{1 - pick['tolerance']:.0%} of the change",
        )
        ax.axvline(
            pick["k"], color=fg.OKABE_ITO[3], linewidth=1.1, label=f"smallest k within it: {pick['k']}"
        )
    _rank_axis(ax, k.astype(int).tolist() or [1])
    values = np.concatenate(
        [shares["loss_kept"].to_numpy(dtype=float), shares["energy"].to_numpy(dtype=float)]
    )
    finite = values[np.isfinite(values)]
    ax.set_ylim(
        min(-0.03, float(finite.min()) - 0.03) if finite.size else -0.03,
        max(1.03, float(finite.max()) + 0.03) if finite.size else 1.03,
    )
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
        ax.plot(
            history["step"].astype(float),
            values,
            color=fg.OKABE_ITO[0],
            marker="o",
            markersize=3.5,
            linewidth=1.5,
        )
        _metric_axis(ax, metric, values.to_numpy(dtype=float))
        ax.set_title(tr.metric_title(metric))
        ax.set_xlabel("training step")
    return fig
