"""The report's heatmaps: layer × module-type grids (``HeatPanel``), their colour scale and how cells
are labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FuncFormatter
from matplotlib.figure import Figure

from .data import Grid
from .figure_layout import Margins, Region, box_of, decorations, fit_grid, new_figure, place, renderer
from .figure_style import HEAT_CMAP, log_ticks, plain_number, short_number, styled


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
    low, high = float(vals.min()), float(vals.max())
    if high - low <= 1e-9 * max(abs(low), abs(high)) or high == low:  # equal but for rounding: one colour
        pad = 0.1 * abs(low) if low else 1.0  # a scale around the value at any magnitude (1e30 + 1 == 1e30)
        return Normalize(vmin=low, vmax=low + pad)
    return Normalize(vmin=low, vmax=high)


# Cells that carry their value as text: up to 16 layers of 7 module types. Larger grids are read from their
# colour and the page's table; at 32 layers the text costs as much to draw as the rest of the figure and is
# hard to read.
ANNOTATED_CELLS = 112
MAX_WIDTH = 12.0  # inches: the widest heatmap figure (shown at the page's width)
CELL_W = {True: 0.42, False: 0.28}  # inches per module-type column, with and without the value printed in it
CELL_H = 0.24  # inches per row, the panel's height kept within PANEL_H
PANEL_H = (1.6, 9.0)
CB_GAP = 0.1  # inches between a panel and its colour bar below
PANEL_GAP = 0.3  # inches between one panel's cells and the next panel's row labels


@styled
def heatmaps(panels: Sequence[HeatPanel], labels: Mapping[str, str], shared_scale: bool = False) -> Figure:
    """Panels side by side, each layer (rows, top = first) × module type (columns), one colour bar each
    (or one shared bar for all panels when ``shared_scale``).

    As many panels share a row as fit ``MAX_WIDTH`` inches, and the rows are balanced (four panels that do not
    fit one row make two rows of two, not three and one). Where every panel has the same rows, a row of panels
    names them once at its left (and again at its right from three panels on), as small multiples do."""
    n_layers = max(len(p.grid.values.index) for p in panels)
    n_types = max(len(p.grid.values.columns) for p in panels)
    annotate = n_layers * n_types <= ANNOTATED_CELLS and n_layers <= 16
    named_rows = panels[0].rows != "layer"  # named rows (runs) need room for their labels
    row_text = max(len(str(r)) for p in panels for r in p.grid.values.index) if named_rows else 0
    panel_w = max(1.4, CELL_W[annotate] * n_types)  # the cells alone
    slot = panel_w + 0.75 + 0.065 * row_text  # with the row labels and the gap to the next panel (estimate)
    fit = max(1, min(len(panels), int((MAX_WIDTH - 0.2) // slot)))
    nrows = math.ceil(len(panels) / fit)
    ncols = math.ceil(len(panels) / nrows)
    panel_h = float(np.clip(CELL_H * n_layers, *PANEL_H))
    fig = new_figure(min(MAX_WIDTH, slot * ncols + 0.5), (panel_h + 2.0) * nrows)
    spec = fig.add_gridspec(nrows, ncols)
    axes = [fig.add_subplot(spec[i // ncols, i % ncols]) for i in range(len(panels))]
    shared = heat_norm(panels, span=10) if shared_scale else None
    same_rows = all(list(p.grid.values.index) == list(panels[0].grid.values.index) for p in panels)
    rend = renderer(fig)
    bars, extra = [], {}
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        norm = shared or heat_norm([panel])
        side = _row_label_side(i % ncols, min(ncols, len(panels) - i // ncols * ncols), same_rows)
        im = _heat_panel(ax, panel, norm, labels, annotate=annotate, row_labels=side)
        if not shared_scale:
            cax = _colorbar(fig, im, norm, panel.unit, panel_w * 0.9, 25, fontsize=(8.5, 7.5))
            below = decorations(cax, rend)
            overhang = max(below.left, below.right) - 0.05 * panel_w  # ends of the bar's tick labels
            room = max(0.0, overhang)
            extra[ax] = Margins(room, room, 0.0, CB_GAP + _thickness(panel_w * 0.9, 25) + below.bottom)
            bars.append((ax, cax))
    around = Margins()
    if shared_scale:
        length = 0.6 * (panel_w * ncols + 0.9 * (ncols - 1))
        cax = _colorbar(fig, im, shared, panels[0].unit, length, 40, fontsize=(9.0, 8.0))
        around = Margins(bottom=CB_GAP + _thickness(length, 40) + decorations(cax, rend).bottom)
    grid = [axes[r * ncols : (r + 1) * ncols] for r in range(nrows)]
    last = {row[-1] for row in grid}
    placed = fit_grid(
        fig,
        grid,
        around,
        extra,
        panel_height=panel_h,
        gap=PANEL_GAP,
        measure=lambda ax, rend: _room(ax, rend, ax in last),
    )
    rend = renderer(fig)
    for ax in axes:
        lift_title(ax, rend)
    for ax, cax in bars:
        box = box_of(fig, ax)
        length = 0.9 * box.width
        thick = _thickness(length, 25)
        x0 = box.center_x - length / 2
        place(fig, cax, Region(x0, box.y0 - CB_GAP - thick, x0 + length, box.y0 - CB_GAP))
    if shared_scale:
        length = 0.6 * placed.panels.width
        thick = _thickness(length, 40)
        x0 = placed.panels.center_x - length / 2
        y1 = placed.outer.y0 - CB_GAP
        place(fig, cax, Region(x0, y1 - thick, x0 + length, y1))
    return fig


def _row_label_side(column: int, in_row: int, same_rows: bool) -> str | None:
    """Where a panel's row labels go: left on the first panel of a row; with the same rows in every panel,
    none on the others but the last of three or more, which has them at its right."""
    if column == 0 or not same_rows:
        return "left"
    return "right" if column == in_row - 1 and in_row >= 3 else None


def _room(ax, rend, last: bool) -> Margins:
    """The room a heatmap panel needs around it. Its tilted module-type labels rise to the right over the
    next panel's corner, parallel to that panel's own labels and below its title, so only the last panel of a
    row keeps room for them at its right (a title wider than the panel still counts on both sides)."""
    lift_title(ax, rend)
    need = decorations(ax, rend)
    if last:
        return need
    box, title = ax.get_window_extent(rend), ax.title.get_window_extent(rend)
    dpi = ax.get_figure(root=True).dpi
    overflow = max(0.0, title.x1 - box.x1, box.x0 - title.x0) / dpi
    return Margins(max(need.left, overflow), overflow, need.top, need.bottom)


def lift_title(ax, rend) -> None:
    """Set the panel's title just above its module-type labels (at the top of the panel)."""
    box = ax.get_window_extent(rend)
    top = ax.xaxis.get_tightbbox(rend).y1
    ax.title.set_y(1.0)
    lift = max(0.0, top - ax.title.get_window_extent(rend).y0)
    ax.title.set_y(1.0 + lift / box.height)


def _thickness(length: float, aspect: float) -> float:
    """A colour bar's thickness in inches: its length over ``aspect``, never thinner than 0.09 in."""
    return max(0.09, length / aspect)


def _colorbar(fig: Figure, im, norm: Normalize, unit: str, length: float, aspect: float, fontsize):
    """A horizontal colour bar of ``im`` on axes of its own (placed once the panels are), labelled ``unit``;
    returns those axes."""
    width, height = fig.get_size_inches()
    cax = fig.add_axes((0.05, 0.02, length / width, _thickness(length, aspect) / height))
    cb = fig.colorbar(im, cax=cax, orientation="horizontal")
    cb.set_label(unit, fontsize=fontsize[0])
    cb.ax.tick_params(labelsize=fontsize[1])
    if isinstance(norm, LogNorm):
        log_ticks(cb.ax.xaxis)
    else:  # whole tick values: an offset ('1e−6+1') would sit at the bar's end, on its label
        cb.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    return cax


def _heat_panel(
    ax,
    panel: HeatPanel,
    norm: Normalize,
    labels: Mapping[str, str],
    annotate: bool,
    row_labels: str | None = "left",
):
    v = panel.grid.values
    data = np.ma.masked_invalid(v.to_numpy(dtype=np.float64))
    cmap = HEAT_CMAP.with_extremes(bad="#e4e4e4")
    rows, cols = data.shape
    # one filled quadrilateral per cell, centred on integer (column, row) like an image's pixels, first row on
    # top; grey (the colour map's 'bad') where no module is
    im = ax.pcolormesh(np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5, data, cmap=cmap, norm=norm)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
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
    ticks = list(range(0, len(layers), step)) if row_labels else []
    ax.set_yticks(ticks, [str(layers[i]) for i in ticks], fontsize=8.5 if len(layers) <= 24 else 7.5)
    if row_labels == "right":
        ax.yaxis.tick_right()
    if row_labels == "left":
        ax.set_ylabel(panel.rows, fontsize=9)
    ax.tick_params(length=0)
    if annotate:
        for (i, j), val in np.ndenumerate(data.filled(np.nan)):
            if np.isfinite(val):
                lum = np.dot(mpl.colors.to_rgb(cmap(norm(val))), [0.299, 0.587, 0.114])
                ax.text(
                    j,
                    i,
                    short_number(val, 3 if 1e-3 <= abs(val) < 1e4 or val == 0 else 2),  # fits a cell
                    ha="center",
                    va="center",
                    fontsize=7.5 if len(v.columns) <= 6 else 6.8,
                    color="black" if lum > 0.55 else "white",
                    in_layout=False,
                )  # inside the axes: layout skips them
    return im
