"""Where a figure's panels go: one explicit layout, measured once, in place of constrained layout.

Constrained layout measures every decoration twice per figure and then has the figure drawn twice (once to lay
out, once to render). Here a figure is built on the Agg canvas it will be saved with, each panel's tick
labels, axis labels and title are measured with that canvas' renderer (where the figure keeps its size, the
draw reuses those text metrics), and the panels are placed so that their decorations fit between them and
inside the figure: a grid of equal panels, columns as wide as their widest decorations need, rows as tall.
What sits around the grid (a colour bar, a legend, a figure-wide axis label) is reserved by the caller as
``Margins`` and placed against the ``Region`` the grid takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .html import DPI  # the resolution figures are saved at: measured at it, the draw reuses text metrics

EDGE = 0.06  # inches kept free at the figure's edges
GAP = 0.12  # inches between one panel's decorations and the next panel's
SLACK_PX = 0.5  # a decoration that outgrows its room by more than this after placing is placed again


@dataclass(frozen=True)
class Margins:
    """Room in inches on each side of a box: what a panel's decorations need, or what a figure keeps around
    its grid."""

    left: float = 0.0
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0

    def __add__(self, other: Margins) -> Margins:
        return Margins(
            self.left + other.left,
            self.right + other.right,
            self.top + other.top,
            self.bottom + other.bottom,
        )

    def exceeds(self, other: Margins, by: float) -> bool:
        """Whether any side of this is larger than that side of ``other`` by more than ``by`` inches."""
        return any(
            a > b + by
            for a, b in zip(
                (self.left, self.right, self.top, self.bottom),
                (other.left, other.right, other.top, other.bottom),
            )
        )


@dataclass(frozen=True)
class Region:
    """A box on the figure in inches from its lower left corner."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center_x(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def center_y(self) -> float:
        return (self.y0 + self.y1) / 2


def new_figure(width: float, height: float) -> Figure:
    """A ``width`` × ``height`` inch figure at ``DPI`` on the Agg canvas it is measured and saved with."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def renderer(fig: Figure):
    """The Agg renderer of the figure at its current size (the one ``savefig`` at ``DPI`` reuses)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def place(fig: Figure, ax: Axes, box: Region) -> None:
    """Put ``ax`` at ``box`` (inches)."""
    w, h = fig.get_size_inches()
    ax.set_position((box.x0 / w, box.y0 / h, box.width / w, box.height / h))


def box_of(fig: Figure, ax: Axes) -> Region:
    """Where ``ax`` is, in inches."""
    w, h = fig.get_size_inches()
    x0, y0, x1, y1 = ax.get_position().extents
    return Region(x0 * w, y0 * h, x1 * w, y1 * h)


def decorations(ax: Axes, rend=None) -> Margins:
    """How far the axes' tick labels, axis labels, titles and texts reach beyond its box, in inches (at their
    full width: a title wider than its panel needs room beside it).

    Texts marked ``in_layout=False`` (placed inside the axes) are not counted, nor the spines and tick marks
    (within the tick labels' pad).
    """
    fig = ax.get_figure(root=True)
    rend = rend or renderer(fig)
    box = ax.get_window_extent(rend)
    boxes = [box]
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_visible():
            tight = axis.get_tightbbox(rend)
            if tight is not None and tight.width > 0 and tight.height > 0:
                boxes.append(tight)
    for title in titles(ax):
        boxes.append(title.get_window_extent(rend))
    for text in ax.texts:  # annotations: labels of points and guides, which may stand beyond the axes
        if text.get_visible() and text.get_in_layout() and text.get_text():
            boxes.append(text.get_window_extent(rend))
    x0 = min(b.x0 for b in boxes)
    x1 = max(b.x1 for b in boxes)
    y0 = min(b.y0 for b in boxes)
    y1 = max(b.y1 for b in boxes)
    dpi = fig.dpi
    return Margins(
        max(0.0, box.x0 - x0) / dpi,
        max(0.0, x1 - box.x1) / dpi,
        max(0.0, y1 - box.y1) / dpi,
        max(0.0, box.y0 - y0) / dpi,
    )


def titles(ax: Axes) -> list:
    """The axes' title texts that show something: centre, left and right (matplotlib keeps the last two as
    ``_left_title`` and ``_right_title``; ``get_title(loc)`` gives their strings only)."""
    found = [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)]
    return [t for t in found if t is not None and t.get_visible() and t.get_text()]


def text_extent(text, rend=None) -> tuple[float, float]:
    """Width and height in inches of a drawn text (its rotation included)."""
    fig = text.get_figure(root=True)
    box = text.get_window_extent(rend or renderer(fig))
    return box.width / fig.dpi, box.height / fig.dpi


@dataclass(frozen=True)
class Fit:
    """Where a grid of panels went: the box of the panels themselves and the box their decorations reach."""

    panels: Region
    outer: Region


def fit_grid(
    fig: Figure,
    grid: Sequence[Sequence[Axes | None]],
    around: Margins = Margins(),
    extra: Mapping[Axes, Margins] | None = None,
    panel_height: float | None = None,
    gap: float = GAP,
    measure: Callable[[Axes, object], Margins] | None = None,
) -> Fit:
    """Place the axes of ``grid`` (rows of columns, None where a cell is empty) as equal panels filling the
    figure's width, each column as wide apart as its panels' decorations need.

    Args:
        fig: the figure; its width is kept.
        grid: the panels by row and column.
        around: room kept between the grid and the figure's edges (beyond ``EDGE``): colour bars, legends,
            figure-wide labels.
        extra: more room beside particular panels (a colour bar under a heatmap), added to what their own
            decorations need.
        panel_height: the height of each panel in inches; the figure's height is set to fit. None: the
            figure's height is kept and the panels share what is left.
        gap: inches between neighbouring panels' decorations.
        measure: ``measure(ax, renderer)``: the room a panel's decorations need, where that is less than
            ``decorations`` says (labels that may reach over a neighbour without meeting its own).

    Returns:
        The boxes the panels take together, without and with their decorations (``extra`` included), in
        inches.
    """
    extra = dict(extra or {})
    measure = measure or decorations
    panels = [ax for row in grid for ax in row if ax]
    for ax in panels:
        unplaced_empty_labels(ax)
    rend = renderer(fig)
    need = {ax: measure(ax, rend) + extra.get(ax, Margins()) for ax in panels}
    ticks = {ax: tick_locations(ax) for ax in panels}
    fit = _place_grid(fig, grid, need, around, panel_height, gap)
    moved = [ax for ax in panels if tick_locations(ax) != ticks[ax]]  # a resized axis may pick other ticks
    if moved:
        rend = renderer(fig)
        grown = dict(need)
        for ax in moved:
            grown[ax] = _larger(need[ax], measure(ax, rend) + extra.get(ax, Margins()))
        if any(grown[ax].exceeds(need[ax], SLACK_PX / fig.dpi) for ax in moved):
            fit = _place_grid(fig, grid, grown, around, panel_height, gap)
    return fit


def tick_locations(ax: Axes) -> tuple:
    """Where the axes' major and minor ticks are (what its tick labels depend on)."""
    return tuple(
        tuple(locs)
        for axis in (ax.xaxis, ax.yaxis)
        for locs in (axis.get_majorticklocs(), axis.get_minorticklocs())
    )


def unplaced_empty_labels(ax: Axes) -> None:
    """Fix the position of axis labels without text, so that matplotlib does not lay each one out against
    the tick labels at every draw (``Axis.set_label_coords`` turns that off); an empty label draws nothing."""
    for axis, coords in ((ax.xaxis, (0.5, 0.0)), (ax.yaxis, (0.0, 0.5))):
        if not axis.label.get_text():
            axis.set_label_coords(*coords)


def _larger(a: Margins, b: Margins) -> Margins:
    return Margins(max(a.left, b.left), max(a.right, b.right), max(a.top, b.top), max(a.bottom, b.bottom))


def _place_grid(
    fig: Figure,
    grid: Sequence[Sequence[Axes | None]],
    need: Mapping[Axes, Margins],
    around: Margins,
    panel_height: float | None,
    gap: float,
) -> Fit:
    nrows, ncols = len(grid), max(len(row) for row in grid)
    cells = [[row[c] if c < len(row) else None for c in range(ncols)] for row in grid]
    left = [max((need[r[c]].left for r in cells if r[c]), default=0.0) for c in range(ncols)]
    right = [max((need[r[c]].right for r in cells if r[c]), default=0.0) for c in range(ncols)]
    top = [max((need[ax].top for ax in row if ax), default=0.0) for row in cells]
    bottom = [max((need[ax].bottom for ax in row if ax), default=0.0) for row in cells]
    width, height = fig.get_size_inches()
    fixed_w = 2 * EDGE + around.left + around.right + sum(left) + sum(right) + gap * (ncols - 1)
    fixed_h = 2 * EDGE + around.top + around.bottom + sum(top) + sum(bottom) + gap * (nrows - 1)
    panel_w = max((width - fixed_w) / ncols, 0.2)
    if panel_height is not None:
        height = fixed_h + panel_height * nrows
        fig.set_size_inches(width, height)
    panel_h = max((height - fixed_h) / nrows, 0.2)
    xs, x = [], EDGE + around.left
    for c in range(ncols):
        xs.append(x + left[c])
        x += left[c] + panel_w + right[c] + gap
    ys, y = [], height - EDGE - around.top
    for r in range(nrows):
        ys.append(y - top[r] - panel_h)
        y -= top[r] + panel_h + bottom[r] + gap
    for r in range(nrows):
        for c in range(ncols):
            if cells[r][c]:
                place(fig, cells[r][c], Region(xs[c], ys[r], xs[c] + panel_w, ys[r] + panel_h))
    panels = Region(xs[0], ys[-1], xs[-1] + panel_w, ys[0] + panel_h)
    outer = Region(panels.x0 - left[0], panels.y0 - bottom[-1], panels.x1 + right[-1], panels.y1 + top[0])
    return Fit(panels, outer)


def grid_of(axes: Sequence[Axes]) -> list[list[Axes | None]]:
    """The panels by row and column of their subplot specs (None where a cell holds none)."""
    specs = [ax.get_subplotspec() for ax in axes]
    nrows, ncols = specs[0].get_gridspec().get_geometry()
    grid: list[list[Axes | None]] = [[None] * ncols for _ in range(nrows)]
    for ax, spec in zip(axes, specs):
        grid[spec.rowspan.start][spec.colspan.start] = ax
    return grid
