"""The report's figures: one pure function per figure, data in, a matplotlib ``Figure`` out.

No file access and no pyplot state: each function builds a ``matplotlib.figure.Figure`` (rendered
by Agg when saved) from arrays and tables made in ``data.py``. Sizes, label thinning and line
transparency adapt to the number of modules, so a figure reads the same at 10 modules as at 600.
Palettes are colour-blind safe: viridis for depth (layer), Okabe–Ito for categories.

This module draws the spectra, energy and magnitude figures; the shared style and axis helpers are
``figure_style.py``'s, the heatmaps ``heatmap_figures.py``'s and the rank-sweep figures
``sweep_figures.py``'s. Their names stay importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import cbook
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm as LogNorm  # re-exported: callers use fg.LogNorm
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import ENERGY_LEVELS, Curve, layer_values
from .figure_layout import new_figure

# Names imported 'as' themselves are re-exported: the report's modules and its tests use fg.<name>.
from .figure_style import (
    BOX_MIN_MODULES,
    DEPTH_CMAP as DEPTH_CMAP,
    DEPTH_RANGE as DEPTH_RANGE,
    ENERGY_LABEL,
    FULL_WIDTH,
    HALF_WIDTH as HALF_WIDTH,
    HEAT_CMAP as HEAT_CMAP,
    HORIZONTAL as HORIZONTAL,
    LINESTYLES as LINESTYLES,
    MAX_POINTS as MAX_POINTS,
    NO_LAYER_COLOR as NO_LAYER_COLOR,
    OKABE_ITO as OKABE_ITO,
    RUN_DASHES as RUN_DASHES,
    RUN_MARKERS as RUN_MARKERS,
    STYLE as STYLE,
    category_style,
    depth_color as depth_color,
    depth_colors,
    depth_mappable,
    depth_norm,
    energy_ticks,
    index_axis,
    legend_columns,
    line_alpha,
    log_ticks,
    colorbar_axes,
    lay_out,
    lay_out_small_multiples,
    level_guides,
    mark_ranks,
    panel_grid,
    plain_number as plain_number,
    run_style,
    small_multiples,
    styled,
    thin_points,
)
from .heatmap_figures import (
    ANNOTATED_CELLS as ANNOTATED_CELLS,
    HeatPanel as HeatPanel,
    heat_norm as heat_norm,
    heatmaps as heatmaps,
)
from .sweep_figures import (
    sweep_energy_params as sweep_energy_params,
    sweep_error as sweep_error,
)


def _layer_range(curves: Mapping[str, list[Curve]]) -> tuple[float, float]:
    layers = [c.layer for cs in curves.values() for c in cs if np.isfinite(c.layer)]
    return (min(layers), max(layers)) if layers else (0.0, 1.0)


def _depth_bar(curves: Mapping[str, list[Curve]], norm: Normalize):
    """The layer colour scale to show beside the panels, None when no module has a layer."""
    has_layers = any(np.isfinite(c.layer) for cs in curves.values() for c in cs)
    return depth_mappable(norm) if has_layers else None


def _curves_panel(ax, curves: list[Curve], norm: Normalize, log_x: bool, positive: bool) -> None:
    """One line per module, coloured by layer, drawn as one LineCollection (fast at hundreds of lines)."""
    segments, layers = [], []
    for c in curves:
        x, y = thin_points(c.y, log_x)
        keep = np.isfinite(y) & (y > 0) if positive else np.isfinite(y)  # a NaN or ±inf σ has no place
        x, y = x[keep], y[keep]
        if len(x) == 1:  # a single value draws as a short flat tick
            x, y = np.array([x[0] - 0.2, x[0] + 0.2]), np.repeat(y, 2)
        if len(x):
            segments.append(np.column_stack([x, y]))
            layers.append(c.layer)
    colors = depth_colors(np.array(layers), norm)
    lw = 1.3 if len(segments) <= 16 else 0.9
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=lw, alpha=line_alpha(len(segments))))
    ax.autoscale_view()


# ---- per-module-type small multiples -----------------------------------------------------------


@styled
def spectra(
    curves: Mapping[str, list[Curve]], ranks: Mapping[str, Sequence[int]], labels: Mapping[str, str]
) -> Figure:
    """σ_i against index i, log scale, one panel per module type, one line per module coloured by layer."""
    types = [t for t in curves if curves[t]]
    fig, axes = small_multiples(len(types), 3 if len(types) <= 9 else 4)
    norm = depth_norm(_layer_range(curves))
    k_max = max(len(c.y) for t in types for c in curves[t])
    for ax, t in zip(axes, types):
        ax.set_yscale("log")
        index_axis(ax, max(len(c.y) for c in curves[t]), log=k_max > 64)
        _curves_panel(ax, curves[t], norm, log_x=k_max > 64, positive=True)
        positive = [y[y > 0] for y in (c.y[np.isfinite(c.y)] for c in curves[t]) if (y > 0).any()]
        if positive:  # show down to the smallest σ, but no further than 7 decades below the largest
            top = max(float(y.max()) for y in positive)
            ax.set_ylim(max(min(float(y.min()) for y in positive), top * 1e-7) / 1.5, top * 1.5)
        log_ticks(ax.yaxis)
        mark_ranks(ax, ranks.get(t, []))
        ax.set_title(f"{labels.get(t, t)}  ({len(curves[t])})")
    lay_out_small_multiples(
        fig,
        axes,
        "index i (singular values in descending order)",
        "singular value σᵢ (update units)",
        _depth_bar(curves, norm),
        "layer (depth)",
    )
    return fig


@styled
def energy_curves(
    curves: Mapping[str, list[Curve]],
    ranks: Mapping[str, Sequence[int]],
    labels: Mapping[str, str],
    levels: Sequence[float] = ENERGY_LEVELS,
) -> Figure:
    """Cumulative energy against rank k with 90 / 95 / 99 % guides, one panel per module type."""
    types = [t for t in curves if curves[t]]
    fig, axes = small_multiples(len(types), 3 if len(types) <= 9 else 4, sharey=True)
    norm = depth_norm(_layer_range(curves))
    k_max = max(len(c.y) for t in types for c in curves[t])
    for ax, t in zip(axes, types):
        index_axis(ax, max(len(c.y) for c in curves[t]), log=k_max > 64)
        level_guides(ax, levels)
        _curves_panel(ax, curves[t], norm, log_x=k_max > 64, positive=False)
        ax.set_ylim(0, 1.03)
        mark_ranks(ax, ranks.get(t, []), bottom=True)
        ax.set_title(f"{labels.get(t, t)}  ({len(curves[t])})")
    energy_ticks(axes, levels)
    lay_out_small_multiples(
        fig,
        axes,
        "rank k (number of leading singular values kept)",
        ENERGY_LABEL,
        _depth_bar(curves, norm),
        "layer (depth)",
    )
    return fig


# ---- magnitudes --------------------------------------------------------------------------------


def _spans_decades(values: np.ndarray, factor: float = 20.0) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return v.size > 1 and v.max() / v.min() > factor


@styled
def magnitude_distribution(
    values: Mapping[str, pd.DataFrame], labels: Mapping[str, str], unit: str
) -> Figure:
    """Per module type, a box (quartiles, whiskers at 5–95 %) over one dot per module coloured by layer.

    ``values[type]`` has columns ``value`` and ``layer``.
    """
    types = [t for t in values if len(values[t])]
    fig = new_figure(FULL_WIDTH, 0.5 * len(types) + 1.3)
    ax = fig.add_subplot()
    layers = np.concatenate([layer_values(values[t]) for t in types])
    finite = layers[np.isfinite(layers)]
    norm = depth_norm((finite.min(), finite.max()) if len(finite) else (0, 1))
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    n_all = sum(len(values[t]) for t in types)
    dot = 24 if n_all < 100 else 10 if n_all < 300 else 6
    boxed = []
    for i, t in enumerate(types):
        v = pd.to_numeric(values[t]["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(v)
        if ok.sum() >= BOX_MIN_MODULES:  # a box summarizes five or more modules; fewer are shown as dots only
            boxed.append((i, v[ok]))
        ax.scatter(
            v[ok],
            i + rng.uniform(-0.22, 0.22, ok.sum()),
            s=dot,
            c=depth_colors(layer_values(values[t])[ok], norm),
            alpha=line_alpha(len(v)) if len(v) > 20 else 0.9,
            linewidths=0,
            zorder=2,
        )
    _horizontal_boxes(ax, boxed)
    all_v = np.concatenate(
        [
            pd.to_numeric(values[t]["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            for t in types
        ]
    )
    if _spans_decades(all_v):
        ax.set_xscale("log")
    ax.set_yticks(range(len(types)), [labels.get(t, t) for t in types])
    ax.set_ylim(len(types) - 0.5, -0.5)  # first module type on top
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(unit)
    cax = None
    if len(finite):
        locator = MaxNLocator(integer=True, nbins=6)
        cax = colorbar_axes(fig, depth_mappable(norm), "layer", locator, fontsize=8)
    lay_out(fig, [ax], colorbar=cax, shrink=1.0, aspect=max(8, 12 * len(types) / 3))
    return fig


PROFILE_LEGEND_ROW = 0.19  # inches per legend entry of the layer profile (8 pt text, its spacing)
BOX_HEIGHT = 0.6  # of the unit spacing between module types; caps half as tall


def _horizontal_boxes(ax, boxed: list[tuple[float, np.ndarray]]) -> None:
    """Box-and-whisker marks at y positions: the box from the first to the third quartile, an orange median,
    whiskers to the most extreme values within the 5th and 95th percentiles (matplotlib's
    ``cbook.boxplot_stats`` with ``whis=(5, 95)``, as ``Axes.boxplot`` draws them), without fliers.

    Drawn as one bar container and two line collections: ``Axes.boxplot`` reads every rc setting, and reading
    the backend one imports pyplot and picks a GUI backend, which a report written to files never needs.
    """
    if not boxed:
        return
    y = np.array([pos for pos, _ in boxed], dtype=np.float64)
    stats = cbook.boxplot_stats([v for _, v in boxed], whis=(5, 95))
    q1, med, q3 = (np.array([st[k] for st in stats]) for k in ("q1", "med", "q3"))
    lo, hi = np.array([st["whislo"] for st in stats]), np.array([st["whishi"] for st in stats])
    half, cap = BOX_HEIGHT / 2, BOX_HEIGHT / 4
    box = {"color": "#eef2f7", "edgecolor": "0.35", "linewidth": 1.0, "zorder": 1}
    ax.barh(y, q3 - q1, left=q1, height=BOX_HEIGHT, **box)
    whiskers = [[(lo[i], y[i]), (q1[i], y[i])] for i in range(len(y))]
    whiskers += [[(q3[i], y[i]), (hi[i], y[i])] for i in range(len(y))]
    whiskers += [[(x[i], y[i] - cap), (x[i], y[i] + cap)] for x in (lo, hi) for i in range(len(y))]
    ax.add_collection(LineCollection(whiskers, colors="0.35", linewidths=1.0, zorder=1))
    medians = [[(med[i], y[i] - half), (med[i], y[i] + half)] for i in range(len(y))]
    ax.add_collection(LineCollection(medians, colors="#D55E00", linewidths=1.6, zorder=1.5))
    ax.autoscale_view()


@styled
def layer_profile(profile: pd.DataFrame, labels: Mapping[str, str], unit: str) -> Figure:
    """One line per module type over layer index (``profile``: index layer, a column per type)."""
    ncol = 1 if len(profile.columns) <= 10 else 2 if len(profile.columns) <= 40 else 3
    rows = math.ceil(len(profile.columns) / ncol)
    fig = new_figure(FULL_WIDTH, max(3.6, PROFILE_LEGEND_ROW * rows + 0.8))  # every legend row on the canvas
    ax = fig.add_subplot()
    marker = "o" if len(profile.index) <= 40 else None
    for i, t in enumerate(profile.columns):
        s = profile[t].dropna()
        ax.plot(
            s.index,
            s.to_numpy(),
            marker=marker,
            markersize=3.2,
            linewidth=1.4,
            label=labels.get(t, t),
            **category_style(i),
        )
    if _spans_decades(profile.to_numpy(dtype=np.float64).ravel()):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=20))
    layers = pd.to_numeric(pd.Series(profile.index), errors="coerce").dropna()
    if len(layers) and layers.max() - layers.min() < 2:  # one or two layers: whole-number ticks around them
        ax.set_xlim(layers.min() - 1, layers.max() + 1)
    ax.set_xlabel("layer")
    ax.set_ylabel(unit)
    legend = fig.legend(loc="upper left", ncol=ncol, frameon=False, title="module type")
    lay_out(fig, [ax], legend=legend)
    return fig


# ---- comparisons -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """A median curve with its 25–75 % band, over k = 1..len(median)."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


@styled
def energy_overlay(
    bands: Mapping[str, Mapping[str, Band]],
    runs: Sequence[str],
    labels: Mapping[str, str],
    levels: Sequence[float] = ENERGY_LEVELS,
    bands_shown: bool = True,
) -> Figure:
    """Per module type, each run's median cumulative energy (band: middle half of its modules, where
    ``bands_shown``); each run its own colour and line style (``run_style``), the legend below the panels."""
    types = [t for t in bands if bands[t]]
    fig, axes = panel_grid(len(types), 3, 3.2, 2.5, sharey=True)
    width, height = fig.get_size_inches()
    ncol = legend_columns(runs, width - 0.3)
    fig.set_size_inches(width, height + 0.19 * math.ceil(len(runs) / ncol))  # room for the legend's rows
    k_max = max(len(b.median) for t in types for b in bands[t].values())
    log_x = k_max > 64
    for ax, t in zip(axes, types):
        index_axis(ax, max(len(b.median) for b in bands[t].values()), log=log_x)
        level_guides(ax, levels)
        for i, run in enumerate(runs):
            b = bands[t].get(run)
            if b is None:
                continue
            x = np.arange(1, len(b.median) + 1)
            st = run_style(i)
            if bands_shown:
                ax.fill_between(x, b.low, b.high, color=st["color"], alpha=0.18, linewidth=0)
            ax.plot(x, b.median, linewidth=1.5, label=run, markersize=3, markevery=max(1, len(x) // 6), **st)
        ax.set_ylim(0, 1.03)
        ax.set_title(labels.get(t, t))
    energy_ticks(axes, levels)
    fig.supxlabel("rank k (number of leading singular values kept)", fontsize=9)
    fig.supylabel(ENERGY_LABEL, fontsize=9)
    handles = {}
    for ax in axes:  # every run once, in run order, even where a run lacks some module type
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    order = [r for r in runs if r in handles]
    fig.legend(
        [handles[r] for r in order],
        order,
        loc="outside upper center",
        frameon=False,
        ncol=ncol,
        handlelength=3.0,
    )
    return fig
