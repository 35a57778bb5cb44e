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
from matplotlib.figure import Figure

from .data import Grid
from .figure_style import HEAT_CMAP, log_ticks, styled


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
