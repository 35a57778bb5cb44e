"""The report's figures: one pure function per figure, data in, a matplotlib ``Figure`` out.

No file access and no pyplot state: each function builds a ``matplotlib.figure.Figure`` (rendered
by Agg when saved) from arrays and tables made in ``data.py``. Sizes, label thinning and line
transparency adapt to the number of modules, so a figure reads the same at 10 modules as at 600.
Palettes are colour-blind safe: viridis for depth (layer), Okabe–Ito for categories.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .data import ENERGY_LEVELS, Curve, Grid, layer_values

# Okabe & Ito (2008), reordered so that the low-contrast yellow comes last.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
LINESTYLES = ["-", "--", ":", "-."]  # cycled after the eight colours, for more categories than that
# one style per run of a comparison: eight colours × five dash patterns, then markers, so that no two of
# 40 runs share a (colour, line style) and no two of 240 share a (colour, line style, marker)
RUN_DASHES = ["-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 1, 2, 1, 6, 1))]
RUN_MARKERS = [None, "o", "s", "^", "D", "v"]
BOX_MIN_MODULES = 5  # magnitude_distribution draws a box over a module type from this many modules on
DEPTH_CMAP = mpl.colormaps["viridis"].resampled(256)
DEPTH_RANGE = (0.0, 0.88)  # viridis without its palest yellows, which vanish on white
HEAT_CMAP = mpl.colormaps["cividis"]
NO_LAYER_COLOR = "0.45"
FULL_WIDTH = 10.0  # inches; at 150 dpi a full-width figure is 1500 px, shown at about 1100 px
HALF_WIDTH = 5.4
# boxplot's orientation keyword arrived in matplotlib 3.10, replacing vert=False
HORIZONTAL = (
    {"orientation": "horizontal"}
    if tuple(map(int, mpl.__version__.split(".")[:2])) >= (3, 10)
    else {"vert": False}
)
MAX_POINTS = 600  # points drawn per line; longer spectra are thinned (they are smooth and monotone)

ENERGY_LABEL = r"energy kept  $\sum_{i\leq k}\sigma_i^2\,/\,\|\Delta W\|_F^2$"

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.5,
    "axes.titlelocation": "left",
    "figure.facecolor": "white",
}


def styled(func):
    """Build the figure under the report's rc settings, without touching the caller's global style."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> Figure:
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


# ---- small helpers -----------------------------------------------------------------------------


def category_style(i: int) -> dict:
    """Colour and line style of the i-th category (Okabe–Ito, then the same colours dashed …)."""
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def run_style(i: int) -> dict:
    """Colour, line style and marker of the i-th run of a comparison: distinct for every run up to 240.

    Okabe–Ito's yellow, too faint for a line on white, is replaced by a mid grey."""
    colors = OKABE_ITO[:7] + ["#8C8C8C"]
    n_c, n_d = len(colors), len(RUN_DASHES)
    return {
        "color": colors[i % n_c],
        "linestyle": RUN_DASHES[(i // n_c) % n_d],
        "marker": RUN_MARKERS[(i // (n_c * n_d)) % len(RUN_MARKERS)],
    }


def legend_columns(labels: Sequence[str], width_in: float, fontsize: float = 8.0, handle: float = 3.0) -> int:
    """How many legend columns fit ``width_in`` inches for these labels: per column a handle of ``handle`` em,
    the text (about 0.6 em a character) and matplotlib's padding (0.8 em) and column spacing (2 em)."""
    longest = max((len(s) for s in labels), default=1)
    per = (handle + 0.8 + 2.0 + 0.6 * longest) * fontsize / 72
    return max(1, min(len(labels), int(width_in // per)))


def line_alpha(n: int) -> float:
    """Opacity for n overlaid lines: opaque for a few, faint enough at hundreds that density shows."""
    return float(np.clip(3.5 / math.sqrt(max(n, 1)), 0.15, 0.95))


def depth_norm(layer_range: tuple[float, float]) -> Normalize:
    lo, hi = layer_range
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)


def depth_color(layer: float, norm: Normalize):
    if not np.isfinite(layer):
        return mpl.colors.to_rgba(NO_LAYER_COLOR)
    a, b = DEPTH_RANGE
    return DEPTH_CMAP(a + (b - a) * float(norm(layer)))


def depth_mappable(norm: Normalize) -> mpl.cm.ScalarMappable:
    a, b = DEPTH_RANGE
    cmap = mpl.colors.ListedColormap(DEPTH_CMAP(np.linspace(a, b, 256)))
    return mpl.cm.ScalarMappable(norm=norm, cmap=cmap)


def thin_points(y: np.ndarray, log_x: bool, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) with x = 1..len(y), thinned to about n points (geometrically spaced on a log axis)."""
    m = len(y)
    if m <= n:
        idx = np.arange(m)
    elif log_x:
        idx = np.unique(np.round(np.geomspace(1, m, n)).astype(np.int64) - 1)
    else:
        idx = np.unique(np.round(np.linspace(0, m - 1, n)).astype(np.int64))
    return idx + 1.0, y[idx]


def index_axis(ax, k_max: int, log: bool) -> None:
    """An x axis over indices 1..k_max: integer ticks when linear, a log scale when long."""
    if log:
        ax.set_xscale("log")
        ax.set_xlim(0.9, k_max * 1.1)
        log_ticks(ax.xaxis)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        ax.set_xlim(0.5, k_max + 0.5)


def panel_grid(n: int, ncols: int, panel_w: float, panel_h: float, sharey: bool = False):
    """A figure of n small panels in rows of ``ncols``; unused panels are removed."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(
        figsize=(min(FULL_WIDTH, panel_w * ncols + 1.2), panel_h * nrows + 0.6), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def plain_number(v: float) -> str:
    """A tick label without exponents: 0.001, 0.5, 3, 1000, 20000."""
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def log_ticks(axis) -> None:
    """Plain-number labels on a log axis ('0.02', '3'); minor ones at 2× and 5× only when it spans under
    two decades, so a narrow axis still has labels and a wide one is not crowded."""
    lo, hi = sorted(axis.get_view_interval())
    axis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    axis.set_minor_locator(
        LogLocator(subs=(2.0, 5.0))
    )  # two minor ticks a decade: fewer to lay out, as readable
    labelled = lo > 0 and hi / lo < 100
    axis.set_minor_formatter(FuncFormatter(lambda v, _: plain_number(v)) if labelled else NullFormatter())


def mark_ranks(ax, ranks: Sequence[int], bottom: bool = False) -> None:
    """Dashed vertical lines at the adapter ranks r of a panel, labelled at the top (or bottom)."""
    shown = list(ranks) if len(ranks) <= 3 else [min(ranks), max(ranks)]
    for r in shown:
        ax.axvline(r, color="0.2", linestyle="--", linewidth=0.9, zorder=3)
        ax.annotate(
            f"r = {r}",
            (r, 0.0 if bottom else 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 3 if bottom else -3),
            textcoords="offset points",
            ha="right",
            va="bottom" if bottom else "top",
            fontsize=7.5,
            color="0.2",
            in_layout=False,
        )


def energy_ticks(axes: list, levels: Sequence[float]) -> None:
    """Percent ticks on shared energy axes: quarters and the lowest and highest guide (95 % is drawn
    but not labelled: too close to its neighbours)."""
    ticks = [0, 0.25, 0.5, 0.75, min(levels), max(levels)]
    for ax in axes:
        ax.set_yticks(ticks, [f"{t:.0%}" for t in ticks])


def _layer_range(curves: Mapping[str, list[Curve]]) -> tuple[float, float]:
    layers = [c.layer for cs in curves.values() for c in cs if np.isfinite(c.layer)]
    return (min(layers), max(layers)) if layers else (0.0, 1.0)


def _add_depth_colorbar(fig: Figure, axes: list, norm: Normalize, has_layers: bool) -> None:
    if has_layers:
        cb = fig.colorbar(depth_mappable(norm), ax=axes, shrink=0.9, aspect=30, pad=0.01)
        cb.set_label("layer (depth)")
        cb.ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


def _curves_panel(ax, curves: list[Curve], norm: Normalize, log_x: bool, positive: bool) -> None:
    """One line per module, coloured by layer, drawn as one LineCollection (fast at hundreds of lines)."""
    segments, colors = [], []
    for c in curves:
        x, y = thin_points(c.y, log_x)
        if positive:
            keep = y > 0
            x, y = x[keep], y[keep]
        if len(x) == 1:  # a single value draws as a short flat tick
            x, y = np.array([x[0] - 0.2, x[0] + 0.2]), np.repeat(y, 2)
        if len(x):
            segments.append(np.column_stack([x, y]))
            colors.append(depth_color(c.layer, norm))
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
    fig, axes = panel_grid(len(types), 3 if len(types) <= 9 else 4, 3.2, 2.5)
    norm = depth_norm(_layer_range(curves))
    k_max = max(len(c.y) for t in types for c in curves[t])
    for ax, t in zip(axes, types):
        ax.set_yscale("log")
        index_axis(ax, max(len(c.y) for c in curves[t]), log=k_max > 64)
        _curves_panel(ax, curves[t], norm, log_x=k_max > 64, positive=True)
        positive = [c.y[c.y > 0] for c in curves[t] if (c.y > 0).any()]
        if positive:  # show down to the smallest σ, but no further than 7 decades below the largest
            top = max(float(y.max()) for y in positive)
            ax.set_ylim(max(min(float(y.min()) for y in positive), top * 1e-7) / 1.5, top * 1.5)
        log_ticks(ax.yaxis)
        mark_ranks(ax, ranks.get(t, []))
        ax.set_title(f"{labels.get(t, t)}  ({len(curves[t])})")
    fig.supxlabel("index i (singular values in descending order)", fontsize=9)
    fig.supylabel("singular value σᵢ (update units)", fontsize=9)
    _add_depth_colorbar(fig, axes, norm, any(np.isfinite(c.layer) for t in types for c in curves[t]))
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
    fig, axes = panel_grid(len(types), 3 if len(types) <= 9 else 4, 3.2, 2.5, sharey=True)
    norm = depth_norm(_layer_range(curves))
    k_max = max(len(c.y) for t in types for c in curves[t])
    for ax, t in zip(axes, types):
        index_axis(ax, max(len(c.y) for c in curves[t]), log=k_max > 64)
        for level in levels:
            ax.axhline(level, color="0.35", linewidth=0.7, linestyle=":", zorder=1)
        _curves_panel(ax, curves[t], norm, log_x=k_max > 64, positive=False)
        ax.set_ylim(0, 1.03)
        mark_ranks(ax, ranks.get(t, []), bottom=True)
        ax.set_title(f"{labels.get(t, t)}  ({len(curves[t])})")
    energy_ticks(axes, levels)
    fig.supxlabel("rank k (number of leading singular values kept)", fontsize=9)
    fig.supylabel(ENERGY_LABEL, fontsize=9)
    _add_depth_colorbar(fig, axes, norm, any(np.isfinite(c.layer) for t in types for c in curves[t]))
    return fig


# ---- heatmaps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatPanel:
    title: str
    grid: Grid
    unit: str  # colour bar label, with units
    log: bool = False  # a logarithmic colour scale (magnitudes spanning decades)
    rows: str = "layer"  # what the rows are: layers (labels thinned when many), or runs (every one labelled)


def heat_norm(panels: Sequence[HeatPanel], span: float | None = None) -> Normalize:
    """One colour scale over all the panels' finite values: logarithmic where positive values span more than
    ``span``× — default 30× (10× for magnitudes, ``log``); a comparison passes 10, so that an r = 8 adapter
    beside a full fine-tune is not one flat colour."""
    vals = np.concatenate([p.grid.values.to_numpy(dtype=np.float64).ravel() for p in panels])
    vals = vals[np.isfinite(vals)]
    span = span if span is not None else (10 if panels[0].log else 30)
    if vals.size and (vals > 0).all() and vals.max() > span * vals.min():
        return LogNorm(vmin=vals.min(), vmax=max(vals.max(), vals.min() * 1.0001))
    if not vals.size:
        return Normalize(0, 1)
    return Normalize(vmin=vals.min(), vmax=vals.max() if vals.max() > vals.min() else vals.min() + 1)


# Cells that carry their value as text: up to 16 layers of 7 module types. Larger grids are read from their
# colour and the page's table; at 32 layers the text costs as much to draw as the rest of the figure and is
# hard to read.
ANNOTATED_CELLS = 112


@styled
def heatmaps(panels: Sequence[HeatPanel], labels: Mapping[str, str], shared_scale: bool = False) -> Figure:
    """Panels side by side, each layer (rows, top = first) × module type (columns), one colour bar each
    (or one shared bar for all panels when ``shared_scale``)."""
    n_layers = max(len(p.grid.values.index) for p in panels)
    n_types = max(len(p.grid.values.columns) for p in panels)
    named_rows = panels[0].rows != "layer"  # named rows (runs) need room for their labels
    row_text = max(len(str(r)) for p in panels for r in p.grid.values.index) if named_rows else 0
    panel_w = max(2.0, 0.42 * n_types + 0.9 + 0.065 * row_text)
    ncols = max(1, min(len(panels), int(12.0 // (panel_w + 0.1))))  # as many as fit 12 inches at full size
    nrows = math.ceil(len(panels) / ncols)
    panel_h = (
        float(np.clip(0.24 * n_layers, 1.6, 9.0))
        + 1.0
        + 0.055 * max(len(labels.get(t, t)) for t in panels[0].grid.values.columns)
    )
    fig = Figure(figsize=(min(12.0, panel_w * ncols + 0.4), panel_h * nrows + 0.3), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[len(panels) :]:
        ax.remove()
    shared = heat_norm(panels, span=10) if shared_scale else None
    for ax, panel in zip(axes, panels):
        norm = shared or heat_norm([panel])
        im = _heat_panel(
            ax, panel, norm, labels, annotate=n_layers * n_types <= ANNOTATED_CELLS and n_layers <= 16
        )
        if not shared_scale:
            cb = fig.colorbar(
                im, ax=ax, orientation="horizontal", location="bottom", shrink=0.9, aspect=25, pad=0.02
            )
            cb.set_label(panel.unit, fontsize=8.5)
            cb.ax.tick_params(labelsize=7.5)
            if isinstance(norm, LogNorm):
                log_ticks(cb.ax.xaxis)
    if shared_scale:
        cb = fig.colorbar(
            im, ax=axes[: len(panels)], orientation="horizontal", location="bottom", shrink=0.6, aspect=40
        )
        cb.set_label(panels[0].unit)
        if isinstance(shared, LogNorm):
            log_ticks(cb.ax.xaxis)
    return fig


def _heat_panel(ax, panel: HeatPanel, norm: Normalize, labels: Mapping[str, str], annotate: bool):
    v = panel.grid.values
    data = np.ma.masked_invalid(v.to_numpy(dtype=np.float64))
    cmap = HEAT_CMAP.with_extremes(bad="#e4e4e4")
    im = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.grid(False)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(panel.title, loc="center", pad=4, fontsize=10, fontweight="bold")
    ax.xaxis.tick_top()
    ax.set_xticks(
        range(len(v.columns)),
        [labels.get(t, t) for t in v.columns],
        rotation=50,
        ha="left",
        rotation_mode="anchor",
        fontsize=8.5,
    )
    layers = list(v.index)
    step = max(1, math.ceil(len(layers) / 24)) if panel.rows == "layer" else 1  # ~24 layer labels at most
    ticks = list(range(0, len(layers), step))
    ax.set_yticks(ticks, [str(layers[i]) for i in ticks], fontsize=8.5 if len(layers) <= 24 else 7.5)
    ax.set_ylabel(panel.rows, fontsize=9)
    ax.tick_params(length=0)
    if annotate:
        for (i, j), val in np.ndenumerate(data.filled(np.nan)):
            if np.isfinite(val):
                lum = np.dot(mpl.colors.to_rgb(cmap(norm(val))), [0.299, 0.587, 0.114])
                ax.text(
                    j,
                    i,
                    f"{val:.3g}",
                    ha="center",
                    va="center",
                    fontsize=7.5 if len(v.columns) <= 6 else 6.8,
                    color="black" if lum > 0.55 else "white",
                    in_layout=False,
                )  # inside the axes: layout skips them
    return im


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
    fig = Figure(figsize=(FULL_WIDTH, 0.5 * len(types) + 1.3), layout="constrained")
    ax = fig.subplots()
    layers = np.concatenate([layer_values(values[t]) for t in types])
    finite = layers[np.isfinite(layers)]
    norm = depth_norm((finite.min(), finite.max()) if len(finite) else (0, 1))
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    n_all = sum(len(values[t]) for t in types)
    dot = 24 if n_all < 100 else 10 if n_all < 300 else 6
    for i, t in enumerate(types):
        v = pd.to_numeric(values[t]["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(v)
        if ok.sum() >= BOX_MIN_MODULES:  # a box summarizes five or more modules; fewer are shown as dots only
            ax.boxplot(
                v[ok],
                positions=[i],
                **HORIZONTAL,
                widths=0.6,
                whis=(5, 95),
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": "#eef2f7", "edgecolor": "0.35"},
                medianprops={"color": "#D55E00", "linewidth": 1.6},
                whiskerprops={"color": "0.35"},
                capprops={"color": "0.35"},
                zorder=1,
            )
        colors = [depth_color(lay, norm) for lay in layer_values(values[t])[ok]]
        ax.scatter(
            v[ok],
            i + rng.uniform(-0.22, 0.22, ok.sum()),
            s=dot,
            c=colors,
            alpha=line_alpha(len(v)) if len(v) > 20 else 0.9,
            linewidths=0,
            zorder=2,
        )
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
    if len(finite):
        cb = fig.colorbar(depth_mappable(norm), ax=ax, pad=0.01, aspect=max(8, 12 * len(types) / 3))
        cb.set_label("layer", fontsize=8)
        cb.ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    return fig


@styled
def layer_profile(profile: pd.DataFrame, labels: Mapping[str, str], unit: str) -> Figure:
    """One line per module type over layer index (``profile``: index layer, a column per type)."""
    fig = Figure(figsize=(FULL_WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
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
    ax.set_xlabel("layer")
    ax.set_ylabel(unit)
    ncol = 1 if len(profile.columns) <= 10 else 2
    fig.legend(loc="outside right upper", ncol=ncol, frameon=False, title="module type")
    return fig


# ---- rank sweep --------------------------------------------------------------------------------


def _energy_error_guides(ax, levels: Sequence[float]) -> None:
    for level in levels:
        err = math.sqrt(1 - level)
        ax.axhline(err, color="0.35", linewidth=0.7, linestyle=":")
        ax.annotate(
            f"{level:.0%} energy",
            (1.0, err),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
        )


@styled
def sweep_error(
    table: pd.DataFrame, ranks: Sequence[int], k_limit: int | None, levels: Sequence[float] = ENERGY_LEVELS
) -> Figure:
    """Aggregate relative Frobenius error of a uniform rank-k truncation against k."""
    fig = Figure(figsize=(HALF_WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
    k = table["k"].to_numpy()
    ax.plot(
        k,
        table["error"],
        color=OKABE_ITO[0],
        linewidth=1.8,
        marker="o" if len(k) <= 40 else None,
        markersize=3,
    )
    index_axis(ax, int(k.max()), log=k.max() > 64)
    _energy_error_guides(ax, levels)
    mark_ranks(ax, ranks)
    ax.set_ylim(0, max(1.0, float(table["error"].max())) * 1.03)
    ax.set_xlabel("uniform rank k (every module truncated to k)")
    ax.set_ylabel(
        r"relative error  $\|\Delta W - \Delta W_k\|_F\,/\,\|\Delta W\|_F$" "\n(all modules together)"
    )
    if k_limit:
        ax.set_title(f"stops at k = {k_limit}: spectra beyond it were not computed", fontsize=8, color="0.3")
    return fig


@styled
def sweep_energy_params(
    table: pd.DataFrame, actual_params: int | None, levels: Sequence[float] = ENERGY_LEVELS
) -> Figure:
    """Retained energy against the adapter parameters a uniform rank k costs, ranks k labelled."""
    fig = Figure(figsize=(HALF_WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
    x, y, k = table["adapter_parameters"].to_numpy(), table["energy"].to_numpy(), table["k"].to_numpy()
    ax.plot(x, y, color=OKABE_ITO[2], linewidth=1.8)
    pow2 = [i for i, kk in enumerate(k) if kk & (kk - 1) == 0]
    ax.scatter(x[pow2], y[pow2], s=14, color=OKABE_ITO[2], zorder=3)
    for n, i in enumerate(pow2[:: max(1, math.ceil(len(pow2) / 10))]):
        ax.annotate(
            f"k={k[i]}",
            (x[i], y[i]),
            xytext=(5, -11 if n % 2 == 0 else 5),
            textcoords="offset points",
            fontsize=7,
            color="0.25",
        )
    for level in levels:
        ax.axhline(level, color="0.35", linewidth=0.7, linestyle=":")
        ax.annotate(
            f"{level:.0%}",
            (0.0, level),
            xycoords=("axes fraction", "data"),
            xytext=(2, 1),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
            va="bottom",
        )
    if actual_params:
        ax.axvline(actual_params, color=OKABE_ITO[3], linestyle="--", linewidth=1.1)
        ax.annotate(
            f"this adapter\n{_si(actual_params)} parameters",
            (actual_params, 0.03),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 0),
            textcoords="offset points",
            fontsize=7,
            color=OKABE_ITO[3],
            ha="right",
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(min(0.0, float(y.min())), 1.03)
    ax.set_xlabel("adapter parameters at uniform rank k  Σ k·(rows + cols)")
    ax.set_ylabel("energy kept (all modules together)")
    return fig


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f}"


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
        for level in levels:
            ax.axhline(level, color="0.35", linewidth=0.7, linestyle=":", zorder=1)
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
