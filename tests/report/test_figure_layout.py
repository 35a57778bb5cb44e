"""The explicit figure layout (report/figure_layout.py) and the page figures it lays out: panels placed so
that their labels meet neither each other nor the canvas edge, at 14 to 602 modules, long module-type names,
a randomized top-k, an adapter rank above a matrix's size (602 modules at hidden 32: k/v are 8 wide, r = 16)
and a single module."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.ticker import LogLocator
from report.layout import text_problems
from report.synthetic import llama_like, synthetic_results

from lorascope.report import build_page
from lorascope.report import figure_layout as fl
from lorascope.report.heatmap_figures import MAX_WIDTH

DIFFUSION_TYPES = (
    "down_blocks.*.attentions.*.transformer_blocks.*.attn1.to_q",
    "down_blocks.*.attentions.*.transformer_blocks.*.attn2.to_k",
    "mid_block.attentions.*.transformer_blocks.*.ff.net.0.proj",
    "up_blocks.*.resnets.*.conv1",
)
PAGES = {
    "14 modules": lambda: llama_like(2, r=16, hidden=64),
    "224 modules": lambda: llama_like(32, r=16, hidden=64),
    "224 modules, full-diff and an lm_head": lambda: llama_like(
        32, kind="full-diff", hidden=64, unlayered=("lm_head",)
    ),
    "602 modules": lambda: llama_like(86, r=16, hidden=32),
    "randomized top-k": lambda: llama_like(8, kind="full-diff", hidden=64, top_k=8),
    "long module-type names": lambda: synthetic_results(12, types=DIFFUSION_TYPES, hidden=32),
    "one module": lambda: synthetic_results(1, types=("mlp.up",), hidden=16),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_figures_have_no_clipped_or_overlapping_text(name):
    page = build_page(PAGES[name]())
    assert len(page.figures) == 7
    for block in page.figures:
        fig = block.draw()
        assert text_problems(fig) == [], (name, block.key)
        assert fig.get_size_inches()[0] <= MAX_WIDTH + 1e-9, (name, block.key)


def _labelled_panels(n: int, ylabel: str, title: str):
    fig = fl.new_figure(10, 6)
    spec = fig.add_gridspec(2, 3)
    axes = [fig.add_subplot(spec[i // 3, i % 3]) for i in range(n)]
    for i, ax in enumerate(axes):
        ax.plot([0, 1], [0, 10 ** (i + 3)])  # tick labels of growing width: 0 … 10000000
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xlabel("x")
    return fig, axes


def test_a_grid_of_panels_fits_its_decorations_between_panels_and_inside_the_figure():
    fig, axes = _labelled_panels(5, "a long label of the y axis", "a title")
    fit = fl.fit_grid(fig, fl.grid_of(axes), panel_height=1.5)
    assert text_problems(fig) == []
    boxes = [fl.box_of(fig, ax) for ax in axes]
    assert len({round(b.width, 9) for b in boxes}) == 1 and {round(b.height, 9) for b in boxes} == {1.5}
    width, height = fig.get_size_inches()
    assert width == 10 and fit.outer.x0 >= 0 and fit.outer.y0 >= 0
    assert fit.outer.x1 <= width and fit.outer.y1 <= height
    # each panel's decorations stay out of its neighbours' boxes
    for ax in axes:
        need = fl.decorations(ax)
        box = fl.box_of(fig, ax)
        for other in axes:
            if other is not ax:
                o = fl.box_of(fig, other)
                left, right = box.x0 - need.left, box.x1 + need.right
                bottom, top = box.y0 - need.bottom, box.y1 + need.top
                assert (
                    right <= o.x0 + 1e-9 or left >= o.x1 - 1e-9 or top <= o.y0 + 1e-9 or bottom >= o.y1 - 1e-9
                )


def test_the_room_kept_around_the_grid_and_beside_a_panel_is_left_free():
    fig, axes = _labelled_panels(3, "y", "t")
    around = fl.Margins(left=0.5, right=1.0, top=0.3, bottom=0.4)
    extra = {axes[0]: fl.Margins(bottom=0.7)}
    fit = fl.fit_grid(fig, [axes], around, extra)
    width, height = fig.get_size_inches()
    assert fit.outer.x0 == pytest.approx(fl.EDGE + 0.5)
    assert fit.outer.x1 == pytest.approx(width - fl.EDGE - 1.0)
    assert fit.outer.y1 == pytest.approx(height - fl.EDGE - 0.3)
    assert fit.outer.y0 == pytest.approx(fl.EDGE + 0.4)
    below = fl.box_of(fig, axes[0]).y0 - fit.outer.y0
    assert below >= 0.7 + fl.decorations(axes[0]).bottom - 1e-9


def test_a_panel_resized_onto_other_ticks_is_measured_again():
    """Placing a log axis much taller than it was drawn gives it more decades to label: the layout measures
    the panels whose ticks moved and places the grid again, so the new labels still fit."""
    fig = fl.new_figure(4, 8)
    ax = fig.add_axes((0.3, 0.45, 0.6, 0.1))  # drawn short: few major ticks
    ax.semilogy([1, 2], [1e-12, 1e12])
    ax.yaxis.set_major_locator(LogLocator(numticks="auto"))
    ax.set_ylabel("value")
    before = fl.tick_locations(ax)
    measured = []
    fl.fit_grid(fig, [[ax]], measure=lambda a, rend: measured.append(a) or fl.decorations(a, rend))
    assert fl.tick_locations(ax) != before
    assert measured == [ax, ax]  # once where it was drawn, once where it went
    assert text_problems(fig) == []


def test_a_panel_keeping_its_ticks_is_measured_once():
    fig, axes = _labelled_panels(1, "y", "t")
    axes[0].set_xticks([0, 0.5, 1])
    axes[0].set_yticks([0, 500, 1000])
    measured = []
    fl.fit_grid(fig, [axes], measure=lambda a, rend: measured.append(a) or fl.decorations(a, rend))
    assert measured == axes


def test_margins_add_and_compare():
    a, b = fl.Margins(1, 2, 3, 4), fl.Margins(0.5, 0.5, 0.5, 0.5)
    assert a + b == fl.Margins(1.5, 2.5, 3.5, 4.5)
    assert a.exceeds(b, 0.1) and not b.exceeds(a, 0.0)
    assert not fl.Margins(1, 1, 1, 1.05).exceeds(fl.Margins(1, 1, 1, 1), 0.1)


def test_empty_axis_labels_are_not_laid_out_at_each_draw():
    fig = fl.new_figure(3, 3)
    ax = fig.add_subplot()
    ax.set_ylabel("named")
    fl.unplaced_empty_labels(ax)
    fig.canvas.draw()
    assert ax.xaxis.label.get_position() == (0.5, 0.0)  # left where it was put: no search at each draw
    assert ax.yaxis.label.get_position()[0] != 0.0  # a label with text is placed beside the tick labels


def test_figures_are_measured_on_the_canvas_they_are_saved_with():
    fig = fl.new_figure(4, 3)
    assert fig.dpi == fl.DPI
    assert fl.renderer(fig) is fl.renderer(fig)  # one renderer per size: its text metrics are reused
    np.testing.assert_allclose(fig.get_size_inches(), [4, 3])
