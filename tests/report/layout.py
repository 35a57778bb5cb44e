"""Text layout checks for figures: nothing cut off by the canvas, no two labels on top of each other.

``text_problems(fig)`` draws the figure with Agg and records the bounding box of every text actually drawn
(from ``fig.canvas.get_renderer()``): titles, axis and tick labels, colour-bar labels, annotations, legend
entries. A rotated text is the rotated rectangle of its glyphs (its size at rotation 0, turned about the
centre of its window extent), not the much larger upright box around it. A text is *clipped* when a corner
leaves the canvas, and two texts *overlap* when their rectangles intersect by more than ``slack`` pixels
(separating axis test). A legend's frame counts as one box: no text outside the legend may sit on it, and no
two legends may meet.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox


@contextmanager
def _recording(drawn: dict[int, tuple[Text, Bbox]]):
    """Record each text as Agg draws it: only texts that reach the canvas are checked (a tick label
    outside the view, an empty or hidden text is never drawn)."""
    original = Text.draw

    def draw(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            box = self.get_window_extent(renderer)
            if box.width > 0 and box.height > 0:
                drawn[id(self)] = (self, box)

    Text.draw = draw
    try:
        yield
    finally:
        Text.draw = original


def _legends(fig: Figure) -> list[Legend]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [lg for lg in legends if lg.get_visible()]


def _overlap(a: Bbox, b: Bbox, slack: float) -> bool:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > slack and h > slack


def _rectangle(box: Bbox) -> np.ndarray:
    return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])


def _glyph_box(t: Text, box: Bbox, renderer) -> np.ndarray:
    """The four corners of the text's own rectangle: upright texts are their box; a rotated one is its size at
    rotation 0 turned by its angle about the centre of its (upright) window extent."""
    angle = t.get_rotation() % 180
    if min(angle, 180 - angle) < 1e-6 or abs(angle - 90) < 1e-6:
        return _rectangle(box)
    t.set_rotation(0)
    flat = t.get_window_extent(renderer)
    t.set_rotation(angle)
    w, h = flat.width, flat.height
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    turned = corners @ np.array([[c, s], [-s, c]])  # (4, 2) @ (2, 2): rotated by +angle
    return turned + np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])


def _shrunk(poly: np.ndarray, by: float) -> np.ndarray:
    centre = poly.mean(axis=0)
    out = []
    for p in poly:
        d = p - centre
        n = np.linalg.norm(d)
        out.append(centre + d * max(0.0, (n - by) / n) if n else p)
    return np.array(out)


def _polygons_meet(a: np.ndarray, b: np.ndarray, slack: float) -> bool:
    """Separating axis test of two convex quadrilaterals, each shrunk by ``slack`` pixels."""
    a, b = _shrunk(a, slack), _shrunk(b, slack)
    for poly in (a, b):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            if not axis.any():
                continue
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def _name(t: Text) -> str:
    return repr(t.get_text().replace("\n", " ")[:48])


def text_boxes(fig: Figure) -> list[tuple[Text, Bbox]]:
    """(text, window bounding box in pixels) of every text drawn on the figure's canvas."""
    drawn: dict[int, tuple[Text, Bbox]] = {}
    canvas = FigureCanvasAgg(fig)
    with _recording(drawn):
        canvas.draw()
    return list(drawn.values())


def text_problems(fig: Figure, slack: float = 1.0) -> list[str]:
    """Every clipped text and every overlapping pair of texts or legends, as readable lines (empty: fine)."""
    texts = text_boxes(fig)
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    shapes = [(t, box, _glyph_box(t, box, renderer)) for t, box in texts]
    problems = []
    for t, box, poly in shapes:
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        if lo[0] < -slack or lo[1] < -slack or hi[0] > width + slack or hi[1] > height + slack:
            problems.append(
                f"clipped by the canvas: {_name(t)} at {tuple(round(v) for v in (*lo, *hi))} "
                f"(canvas {width:.0f}×{height:.0f})"
            )
    for (a, box_a, poly_a), (b, box_b, poly_b) in itertools.combinations(shapes, 2):
        if _overlap(box_a, box_b, slack) and _polygons_meet(poly_a, poly_b, slack / 2):
            problems.append(f"overlap: {_name(a)} and {_name(b)}")
    legends = _legends(fig)
    for lg in legends:
        own = {id(t) for t in [*lg.get_texts(), lg.get_title()]}
        frame = lg.get_window_extent(renderer)
        for t, box, poly in shapes:
            if (
                id(t) not in own
                and _overlap(frame, box, slack)
                and _polygons_meet(_rectangle(frame), poly, slack / 2)
            ):
                entries = [x.get_text() for x in lg.get_texts()][:3]
                problems.append(f"on a legend: {_name(t)} sits on the legend {entries}")
    for a, b in itertools.combinations(legends, 2):
        if _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer), slack):
            problems.append(
                f"two legends overlap: {[x.get_text() for x in a.get_texts()][:2]} and "
                f"{[x.get_text() for x in b.get_texts()][:2]}"
            )
    return problems
