"""Figures from 10 to 600 modules: sizes stay bounded, labels thin out, lines fade; nothing is drawn to
disk."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from report.synthetic import llama_like

from lorascope.report import data
from lorascope.report import figures as fg


@pytest.fixture(scope="module")
def big():
    """Llama-2-70B shaped: 80 layers × 7 module types = 560 modules, plus an lm_head."""
    return llama_like(80, kind="full-diff", hidden=64, unlayered=("lm_head",))


def visible_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_heatmaps_at_80_layers_thin_layer_labels_and_skip_cell_numbers(big):
    types = data.type_order(data.layered(big.modules))
    panels = [fg.HeatPanel(c, data.layer_grid(big.modules, c, types), c) for c in ("entropy_rank", "rank_90")]
    fig = fg.heatmaps(panels, data.short_labels(types))
    w, h = fig.get_size_inches()
    assert w <= 12 and h <= 12
    ax = fig.axes[0]
    assert 10 <= len(visible_labels(ax.yaxis)) <= 25
    assert len(visible_labels(ax.xaxis)) == 7
    assert len(ax.texts) == 0  # 560 numbers would be unreadable


def test_heatmaps_of_a_small_model_print_the_values():
    res = llama_like(2, hidden=32)
    types = data.type_order(res.modules)
    fig = fg.heatmaps(
        [fg.HeatPanel("entropy_rank", data.layer_grid(res.modules, "entropy_rank", types), "u")],
        data.short_labels(types),
    )
    assert len(fig.axes[0].texts) == 14


def test_spectra_fade_lines_as_they_multiply_and_mark_the_adapter_rank(big):
    types = data.type_order(big.modules)
    curves = data.spectra_by_type(big.modules, big.spectra, types)
    fig = fg.spectra(curves, {t: [16] for t in types}, data.short_labels(types))
    assert isinstance(fig, Figure) and fig.get_size_inches()[0] <= fg.FULL_WIDTH
    panel = fig.axes[0]
    lines = panel.collections[0]
    assert len(lines.get_segments()) == 80
    assert lines.get_alpha() < 0.5
    assert any("r = 16" in t.get_text() for t in panel.texts)
    assert panel.get_yscale() == "log"


def test_alpha_and_thinning():
    assert fg.line_alpha(3) > 0.9 and fg.line_alpha(600) == pytest.approx(0.15)
    x, _ = fg.thin_points(np.linspace(1, 0, 8192), log_x=True)
    assert len(x) <= fg.MAX_POINTS and x[0] == 1 and x[-1] == 8192
    x, _ = fg.thin_points(np.ones(8), log_x=False)
    assert list(x) == list(range(1, 9))


def test_category_palette_is_okabe_ito_then_dashed():
    assert fg.category_style(0) == {"color": "#0072B2", "linestyle": "-"}
    assert fg.category_style(8) == {"color": "#0072B2", "linestyle": "--"}


def test_every_figure_function_draws_from_small_data():
    res = llama_like(3, kind="adapter", r=4, hidden=32, unlayered=("lm_head",))
    m, types = res.modules, data.type_order(res.modules)
    labels = data.short_labels(types)
    sweep = data.uniform_rank_sweep(m, res.spectra)
    figs = [
        fg.energy_curves(data.energy_by_type(m, res.spectra, types), {}, labels),
        fg.magnitude_distribution(
            {
                t: m.loc[data.with_types(m)["type"] == t, ["fro_norm", "layer"]].rename(
                    columns={"fro_norm": "value"}
                )
                for t in types
            },
            labels,
            "u",
        ),
        fg.layer_profile(data.layer_grid(m, "fro_norm").values, labels, "u"),
        fg.sweep_error(sweep.table, [4], None),
        fg.sweep_energy_params(sweep.table, data.actual_adapter_parameters(m)),
        fg.energy_overlay(
            {types[0]: {"a": fg.Band(np.array([0.5, 1.0]), np.array([0.4, 1.0]), np.array([0.6, 1.0]), 3)}},
            ["a"],
            labels,
        ),
    ]
    for fig in figs:
        assert isinstance(fig, Figure) and fig.axes
