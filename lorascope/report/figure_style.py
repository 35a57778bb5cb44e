"""The report's figure style: palettes, sizes, rc settings (``styled``), and the axis, tick and colour
helpers every figure shares.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from .figure_layout import EDGE, GAP, Margins, Region, decorations, fit_grid, grid_of, new_figure, place
from .figure_layout import text_extent, titles


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

# labels in plain Unicode (DejaVu Sans has every glyph): a first mathtext label costs ~0.1 s of parser setup
ENERGY_LABEL = "energy kept  Σᵢ≤ₖ σᵢ² / ‖ΔW‖²"

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
    "axes.titley": 1.0,  # titles just above the axes; matplotlib's search for a place above top ticks is off
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


def depth_color(layer: float, norm: Normalize) -> tuple[float, float, float, float]:
    """The RGBA colour of one layer (NaN: a module outside the layers), as ``depth_colors``."""
    return tuple(float(c) for c in depth_colors(np.array([layer]), norm)[0])


def depth_colors(layers: np.ndarray, norm: Normalize) -> np.ndarray:
    """``depth_color`` of many layers at once: (n,) layers (NaN: none) -> (n, 4) RGBA."""
    layers = np.asarray(layers, dtype=np.float64)
    a, b = DEPTH_RANGE
    known = np.isfinite(layers)
    out = np.tile(mpl.colors.to_rgba(NO_LAYER_COLOR), (len(layers), 1))
    if known.any():
        out[known] = DEPTH_CMAP(a + (b - a) * np.asarray(norm(layers[known]), dtype=np.float64))
    return out


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
        lo, hi = 0.5, k_max + 0.5
        ax.set_xlim(lo, hi)
        ticks = MaxNLocator(integer=True, nbins=8).tick_values(lo, hi)
        ax.set_xticks([t for t in ticks if lo <= t <= hi])  # only those shown: each tick costs a few artists


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


SMALL_ROW_H = 2.5  # inches per row of small multiples: a panel of about 2 in with its title and tick labels
LABEL_GAP = 0.08  # inches between a figure-wide axis label and the panels' tick labels


def small_multiples(n: int, ncols: int, sharey: bool = False) -> tuple[Figure, list]:
    """A full-width figure of n panels in rows of ``ncols`` (y shared: tick labels on the first column only),
    to be laid out by ``lay_out_small_multiples`` once drawn."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure(FULL_WIDTH, SMALL_ROW_H * nrows + 0.5)
    spec = fig.add_gridspec(nrows, ncols)
    axes: list = []
    for i in range(n):
        ax = fig.add_subplot(spec[i // ncols, i % ncols], sharey=axes[0] if sharey and axes else None)
        if sharey and i % ncols:
            ax.yaxis.set_tick_params(which="both", labelleft=False)
        axes.append(ax)
    return fig, axes


def lay_out_small_multiples(
    fig: Figure,
    axes: list,
    xlabel: str,
    ylabel: str,
    colorbar: mpl.cm.ScalarMappable | None = None,
    colorbar_label: str = "",
) -> None:
    """Place the panels of ``small_multiples`` (sharing the figure's width and height, which stay as they
    were made: the text measured for the layout is then measured at the draw), a figure-wide x label under
    them, a y label left of them and, given a ``colorbar``, a vertical colour bar at their right (0.9 of their
    height, as thick as a 30th of that). Where every panel has the same x axis, only the lowest panel of each
    column labels it."""
    label_lowest_x(axes)
    cax = None
    if colorbar is not None:
        cax = colorbar_axes(fig, colorbar, colorbar_label, MaxNLocator(integer=True, nbins=8))
    lay_out(fig, axes, xlabel, ylabel, cax)
    fit_titles(fig, axes)


def fit_titles(fig: Figure, axes: list, smallest: float = 5.0) -> None:
    """Shrink a panel title wider than its panel until it fits (no smaller than ``smallest`` points): a
    long module-type name must not run into the next panel's title or off the canvas. Only shrinking, after
    the layout: the title's height can only fall, so nothing placed around it comes to overlap."""
    rend = fig.canvas.get_renderer()
    for ax, title in ((ax, t) for ax in axes for t in titles(ax)):
        width, room = title.get_window_extent(rend).width, ax.get_window_extent(rend).width
        if width > room > 0:
            title.set_fontsize(max(smallest, title.get_fontsize() * room / width * 0.98))


def label_lowest_x(axes: list) -> None:
    """Hide the x tick labels of panels with another panel below them, where all panels have the same x
    limits, scale and ticks (their ticks and grid lines stay)."""
    first = axes[0].xaxis

    def same(ax) -> bool:
        return (
            ax.get_xlim() == axes[0].get_xlim()
            and ax.get_xscale() == axes[0].get_xscale()
            and list(ax.xaxis.get_majorticklocs()) == list(first.get_majorticklocs())
        )

    if not all(same(ax) for ax in axes):
        return
    cells = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes}
    for ax in axes:
        row, col = ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start
        if any((below, col) in cells for below in range(row + 1, row + 1 + len(axes))):
            ax.xaxis.set_tick_params(which="both", labelbottom=False)


def colorbar_axes(
    fig: Figure, mappable: mpl.cm.ScalarMappable, label: str, locator, fontsize: float | None = None
):
    """A vertical colour bar of ``mappable`` on axes of its own, for ``lay_out`` to place; returns those
    axes."""
    cax = fig.add_axes((0.9, 0.1, 0.02, 0.8))
    cb = fig.colorbar(mappable, cax=cax)
    cb.set_label(label, fontsize=fontsize)
    cb.ax.yaxis.set_major_locator(locator)
    return cax


def lay_out(
    fig: Figure,
    axes: list,
    xlabel: str = "",
    ylabel: str = "",
    colorbar=None,
    legend=None,
    panel_height: float | None = None,
    shrink: float = 0.9,
    aspect: float = 30.0,
) -> None:
    """Place panels (subplots of one grid, equal in size), figure-wide axis labels (``xlabel`` under the
    panels, ``ylabel`` left of them) and what stands at their right: the axes of a vertical colour bar
    (``colorbar_axes``; ``shrink`` of the panels' height, as thick as a 1/``aspect`` of its length) or a
    figure legend (its top level with the panels' top).

    ``panel_height``: each panel's height in inches, the figure's height then set to fit; None keeps the
    figure's size."""
    around = Margins()
    sx = sy = None
    if xlabel:
        sx = fig.supxlabel(xlabel, fontsize=9)
        around = around + Margins(bottom=text_extent(sx)[1] + LABEL_GAP)
    if ylabel:
        sy = fig.supylabel(ylabel, fontsize=9)
        around = around + Margins(left=text_extent(sy)[0] + LABEL_GAP)
    grid = grid_of(axes)
    width, height = fig.get_size_inches()
    cb_w = 0.0
    if colorbar is not None:
        length = shrink * (panel_height * len(grid) if panel_height else 0.8 * height)
        cb_w = max(0.12, length / aspect)
        colorbar.set_position((0.9, 0.1, cb_w / width, min(0.9, length / height)))
        around = around + Margins(right=GAP + cb_w + decorations(colorbar).right)
    if legend is not None:  # its box, and the pad matplotlib keeps between the anchor and the box
        pad = legend.borderaxespad * legend.prop.get_size_in_points() / 72
        around = around + Margins(right=GAP + pad + text_extent(legend)[0])
    fit = fit_grid(fig, grid, around, panel_height=panel_height)
    width, height = fig.get_size_inches()
    panels, outer = fit.panels, fit.outer
    if sx is not None:
        sx.set_position((panels.center_x / width, EDGE / height))
    if sy is not None:
        sy.set_position((EDGE / width, panels.center_y / height))
    if colorbar is not None:
        inset = (1 - shrink) / 2 * panels.height
        place(
            fig, colorbar, Region(outer.x1 + GAP, panels.y0 + inset, outer.x1 + GAP + cb_w, panels.y1 - inset)
        )
    if legend is not None:
        legend.set_bbox_to_anchor(((outer.x1 + GAP) / width, panels.y1 / height), transform=fig.transFigure)


def plain_number(v: float) -> str:
    """A tick label without exponents from 0.0001 to 999 999 (0.001, 0.5, 3, 1000, 20000); beyond, the short
    scientific form of ``short_number`` ('2e30', '1e−30'), not thirty digits."""
    if v != 0 and not 1e-4 <= abs(v) < 1e6:
        return short_number(v, 3)
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def short_number(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits, with a bare exponent where it has one: '1.2e30', '3e−7',
    '0.25', '120' (no '+', no leading zeros, a Unicode minus)."""
    text = f"{v:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text.replace("-", "−")


def log_ticks(axis, label=plain_number) -> None:
    """Labels on a log axis written by ``label`` (default plain numbers: '0.02', '3'); minor ticks at 2×
    and 5×, labelled too, only when it spans under two decades, so a narrow axis still has labels and a
    wide one is not crowded."""
    lo, hi = sorted(axis.get_view_interval())
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    if lo > 0 and hi / lo < 100:  # two labelled minor ticks a decade
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: label(v)))
    else:  # the decades alone: unlabelled marks between them cost as much to draw as labels
        axis.set_minor_locator(NullLocator())


def level_guides(ax, levels: Sequence[float], zorder: float = 1) -> None:
    """Dotted horizontal lines across the axes at y = each level, as one collection (cheaper to draw than a
    line each)."""
    segments = [[(0.0, level), (1.0, level)] for level in levels]
    ax.add_collection(
        LineCollection(
            segments,
            transform=ax.get_yaxis_transform(),  # x in axes fraction, y in data
            colors="0.35",
            linewidths=0.7,
            linestyles=":",
            zorder=zorder,
        ),
        autolim=False,
    )


def mark_ranks(ax, ranks: Sequence[int], bottom: bool = False) -> None:
    """Dashed vertical lines at the adapter ranks r of a panel, labelled at the top (or bottom); a rank beyond
    the x axis (r above the matrix's smaller side, so past its last σ) is not marked: its label would stand
    outside the panel."""
    shown = list(ranks) if len(ranks) <= 3 else [min(ranks), max(ranks)]
    lo, hi = sorted(ax.get_xlim())
    for r in [r for r in shown if lo <= r <= hi]:
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
    done: list = []
    for ax in axes:  # axes sharing y share their ticks: set them once per group
        if not any(ax.get_shared_y_axes().joined(ax, other) for other in done):
            ax.set_yticks(ticks, [f"{t:.0%}" for t in ticks])
            done.append(ax)
