"""Figures from 10 to 600 modules: sizes stay bounded, labels thin out, lines fade; nothing is drawn to
disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_magnitude_boxes_are_the_quartiles_and_5_95_whiskers_of_each_module_type():
    """The boxes are drawn from matplotlib's box statistics: checked here against numpy's percentiles (box
    from the 25th to the 75th, median, whiskers to the most extreme values within the 5th and 95th); a type
    of fewer than five modules has dots only."""
    rng = np.random.default_rng(1)
    sizes = {"a": 40, "b": 25, "c": 3}
    values = {
        t: pd.DataFrame({"value": rng.lognormal(size=n), "layer": np.arange(n, dtype=float)})
        for t, n in sizes.items()
    }
    fig = fg.magnitude_distribution(values, {t: t for t in sizes}, "u")
    ax = fig.axes[0]
    boxes = {round(p.get_y() + p.get_height() / 2): p for p in ax.patches}
    assert sorted(boxes) == [0, 1]  # no box for 'c'
    segments = [np.asarray(s) for c in ax.collections if hasattr(c, "get_segments") for s in c.get_segments()]
    for i, t in enumerate(["a", "b"]):
        v = values[t]["value"].to_numpy()
        q1, med, q3, p5, p95 = np.percentile(v, [25, 50, 75, 5, 95])
        low, high = v[v >= p5].min(), v[v <= p95].max()
        assert boxes[i].get_x() == pytest.approx(q1) and boxes[i].get_width() == pytest.approx(q3 - q1)
        ends = {
            (round(float(s[0, 0]), 9), round(float(s[1, 0]), 9)) for s in segments if np.allclose(s[:, 1], i)
        }
        assert (round(low, 9), round(q1, 9)) in ends and (round(q3, 9), round(high, 9)) in ends  # whiskers
        vertical = [s for s in segments if s[0, 0] == s[1, 0] and abs(s[:, 1].mean() - i) < 1e-9]
        assert any(s[0, 0] == pytest.approx(med) for s in vertical)  # the median bar
        assert any(s[0, 0] == pytest.approx(low) for s in vertical)  # the caps
        assert any(s[0, 0] == pytest.approx(high) for s in vertical)


def test_log_axes_label_their_2x_and_5x_ticks_within_two_decades_and_show_decades_beyond():
    fig = Figure()
    narrow, wide = fig.subplots(1, 2)
    for ax, top in ((narrow, 30.0), (wide, 1e5)):
        ax.set_xscale("log")
        ax.set_xlim(1, top)
        fg.log_ticks(ax.xaxis)
    shown = [v for v in narrow.xaxis.get_minorticklocs() if 1 <= v <= 30]  # the locator runs past the view
    assert shown == pytest.approx([2, 5, 20])
    assert [narrow.xaxis.get_minor_formatter()(v) for v in (2, 5, 20)] == ["2", "5", "20"]
    assert len(wide.xaxis.get_minorticklocs()) == 0
    decades = np.log10(wide.xaxis.get_majorticklocs())
    assert len(decades) >= 3 and np.allclose(decades, np.round(decades))  # powers of ten, labelled plainly
    assert wide.xaxis.get_major_formatter()(1000.0) == "1000"


def test_sweep_parameters_axis_names_its_ticks_in_si_units():
    k = np.arange(1, 17)
    table = pd.DataFrame({"k": k, "adapter_parameters": k * 2_300_000, "energy": 1 - 0.5**k})
    fig = fg.sweep_energy_params(table, 36_800_000)
    axis = fig.axes[0].xaxis
    lo, hi = axis.get_view_interval()
    shown = [v for v in [*axis.get_majorticklocs(), *axis.get_minorticklocs()] if lo <= v <= hi]
    labels = {
        v: (axis.get_major_formatter() if v in axis.get_majorticklocs() else axis.get_minor_formatter())(v)
        for v in shown
    }
    assert {"5 M", "10 M", "20 M"} <= set(labels.values())


def _grid_panels(n_panels: int, layers_of=lambda i: 8):
    types = ["q", "k", "v"]
    panels = []
    for i in range(n_panels):
        frame = pd.DataFrame(np.arange(layers_of(i) * 3, dtype=float).reshape(-1, 3), columns=types)
        panels.append(fg.HeatPanel(f"p{i}", data.Grid("m", frame, frame.notna().astype(int)), "u"))
    return panels, {t: t for t in types}


def test_heatmap_panels_with_the_same_rows_name_them_at_the_ends_of_each_row_of_panels():
    panels, labels = _grid_panels(4)
    fig = fg.heatmaps(panels, labels)
    heat = [a for a in fig.axes if a.get_title()]
    assert len(heat) == 4 and len({round(a.get_position().y0, 9) for a in heat}) == 1  # one row of four
    left = [visible_labels(a.yaxis) for a in heat]
    assert left[0] == [str(i) for i in range(8)] and left[1] == left[2] == []
    assert [t.get_text() for t in heat[3].yaxis.get_ticklabels(which="major")] == [str(i) for i in range(8)]
    assert heat[3].yaxis.get_ticks_position() == "right"
    assert [a.get_ylabel() for a in heat] == ["layer", "", "", ""]


def test_heatmap_panels_with_different_rows_each_name_their_own():
    panels, labels = _grid_panels(3, layers_of=lambda i: 4 + 2 * i)
    fig = fg.heatmaps(panels, labels)
    heat = [a for a in fig.axes if a.get_title()]
    assert [len(visible_labels(a.yaxis)) for a in heat] == [4, 6, 8]
    assert all(a.yaxis.get_ticks_position() == "left" for a in heat)


def test_small_multiples_label_a_shared_x_axis_under_each_column_only():
    same = llama_like(4, kind="adapter", r=8, hidden=32)  # every type has 8 singular values: one x axis
    types = data.type_order(same.modules)
    fig = fg.spectra(data.spectra_by_type(same.modules, same.spectra, types), {}, data.short_labels(types))
    panels = [a for a in fig.axes if a.get_title(loc="left")]
    labelled = {a.get_title(loc="left").split()[0]: bool(visible_labels(a.xaxis)) for a in panels}
    # 7 panels in rows of 3 (q k v / o gate up / down): the lowest panel of each column keeps its labels
    assert [t for t, shown in labelled.items() if shown] == ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert len([a for a in panels if a.xaxis.get_gridlines()]) == 7  # every panel keeps its ticks and grid
    dense = llama_like(4, kind="full-diff", hidden=32)  # k/v have a quarter of q's singular values
    fig = fg.spectra(data.spectra_by_type(dense.modules, dense.spectra, types), {}, data.short_labels(types))
    assert all(visible_labels(a.xaxis) for a in fig.axes if a.get_title(loc="left"))
