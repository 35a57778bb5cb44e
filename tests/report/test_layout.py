"""Figures at 1, 3, 17 and 40 runs: no text cut off by the canvas, no label on another label or on a legend.

The checks read matplotlib's own text bounding boxes (``layout.text_problems``); every figure of the answer
(outcome against rank and parameters, forgetting, effective rank during training, functional rank beside
energy) and of the comparison page (energy overlay, heatmaps) is drawn from synthetic runs of each size.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from report.layout import text_boxes, text_problems
from report.synthetic import llama_like, synthetic_results
from report.synthetic_runs import trained_runs

from lorascope.report import comparison, data
from lorascope.report import figures as fg
from lorascope.report import outcome_figures as of
from lorascope.report import trained as tr

SIZES = [1, 3, 17, 40]


def answer_figures(n: int) -> dict[str, Figure]:
    runs = trained_runs(n)
    table = tr.outcome_table(runs)
    metrics = tr.outcome_metrics(runs, table)
    knees = tr.knee_table(table, metrics) if table["rank"].notna().any() else None
    evolutions = {r.label: tr.rank_evolution(r) for r in runs}
    forgetting = [c for c in table.columns if c.endswith("_forgetting")]
    return {
        "outcome_rank": of.outcome_vs_rank(table, metrics, knees),
        "outcome_parameters": of.outcome_vs_parameters(table, metrics),
        "forgetting_rank": of.forgetting_vs_rank(table, forgetting),
        "rank_evolution": of.rank_during_training(evolutions, table),
    }


def comparison_figures(n: int) -> dict[str, Figure]:
    runs = [
        synthetic_results(4, kind="adapter" if i % 3 else "full-diff", r=2 ** (i % 6), hidden=32, seed=i)
        for i in range(n)
    ]
    labels = [f"lora-r{2 ** (i % 6)}-all-linear-{i}" for i in range(n)]
    ctx = comparison.ComparisonContext(runs, labels)
    figs = {}
    for section in (comparison.energy_section, comparison.heatmap_section):
        for block in section(ctx) or []:
            if hasattr(block, "draw"):
                figs[block.key] = block.draw()
    return figs


@pytest.mark.parametrize("n", SIZES)
def test_answer_figures_have_no_clipped_or_overlapping_text(n):
    for name, fig in answer_figures(n).items():
        assert text_problems(fig) == [], (n, name)
        assert fig.get_size_inches()[0] <= fg.FULL_WIDTH + 1e-9, (n, name)


@pytest.mark.parametrize("n", SIZES)
def test_comparison_figures_have_no_clipped_or_overlapping_text(n):
    figs = comparison_figures(n)
    assert {"compare_energy"} <= set(figs)
    for name, fig in figs.items():
        assert text_problems(fig) == [], (n, name)


def test_functional_beside_energy_reads_cleanly():
    shares = pd.DataFrame(
        {
            "k": [1, 2, 4, 8, 16, 32, 64],
            "loss_kept": [0.3, 0.6, 0.9, 0.995, 1, 1, 1],
            "energy": [0.27, 0.41, 0.62, 0.83, 0.93, 0.97, 0.99],
        }
    )
    pick = {"k": 8, "tolerance": 0.01}
    assert text_problems(of.functional_beside_energy(shares, pick, "edit_loss")) == []


def test_every_run_has_its_own_colour_and_line_style_up_to_40():
    styles = [fg.run_style(i) for i in range(40)]
    assert len({(s["color"], str(s["linestyle"])) for s in styles}) == 40
    many = [fg.run_style(i) for i in range(240)]
    assert len({(s["color"], str(s["linestyle"]), s["marker"]) for s in many}) == 240
    fig = comparison_figures(17)["compare_energy"]
    lines = [ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len(lines) == 17  # every run drawn, each in the style of its position
    for i, line in enumerate(lines):
        assert line.get_color() == fg.run_style(i)["color"], line.get_label()
        assert line.get_linestyle() == ("-" if fg.run_style(i)["linestyle"] == "-" else "--")


# ---- the checker itself: it must find what it is meant to find ----------------------------------------


def test_the_checker_finds_clipped_overlapping_and_covered_text():
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="upper left")
    ax.text(0.02, 0.95, "under the legend", transform=ax.transAxes)  # on the legend
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    ax.text(0.5, 0.5, "another label", transform=ax.transAxes)  # on the first
    fig.text(0.9, 0.5, "runs off the right edge of the figure")  # clipped
    problems = text_problems(fig)
    assert any(p.startswith("clipped") and "runs off" in p for p in problems)
    assert any(p.startswith("overlap") and "one label" in p and "another label" in p for p in problems)
    assert any(p.startswith("on a legend") and "under the legend" in p for p in problems)


def test_the_checker_passes_a_clean_figure_and_sees_only_drawn_text():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(5), label="x")
    ax.set_xlim(0, 4)
    ax.set_title("a title")
    fig.legend(loc="outside right upper")
    assert text_problems(fig) == []
    drawn = [t.get_text() for t, _ in text_boxes(fig)]
    assert "a title" in drawn and "x" in drawn
    assert all(isinstance(t, Text) for t, _ in text_boxes(fig))
    plt.close("all")


def test_a_big_model_heatmap_comparison_switches_to_runs_by_type():
    n = comparison.PANELS_PER_RUN_UP_TO + 1
    runs = [llama_like(8, kind="adapter", r=4, hidden=16, seed=i) for i in range(n)]
    ctx = comparison.ComparisonContext(runs, [f"run-{i}" for i in range(len(runs))])
    blocks = comparison.heatmap_section(ctx)
    assert [b.key for b in blocks] == ["compare_heatmap_runs"]
    fig = blocks[0].draw()
    panels = [a for a in fig.axes if a.get_title()]  # one heatmap per metric (colour bars have no title)
    assert len(panels) == 4
    named = [a for a in panels if [t.get_text() for t in a.get_yticklabels()] == ctx.labels]
    assert named and all(a.get_ylabel() == "run" for a in named)
    for a in panels:  # every panel sits in a row of panels that names every run
        assert any(abs(a.get_position().y0 - b.get_position().y0) < 1e-9 for b in named)
    assert text_problems(fig) == []
    grid = data.run_type_grid(ctx.tables, "entropy_rank", data.type_order(runs[0].modules))
    assert list(grid.values.index) == ctx.labels


def test_legends_sit_beside_the_lines_and_labels_of_sweep_and_compare_figures():
    """The functional sweep names its pick in the legend, and the compare figures put one legend under their
    panels: no label on a legend, at 4 and at 32 layers."""
    from lorascope.report.compare_figures import amplification_by_layer, overlap_by_layer
    from lorascope.report.rank_figures import functional_figure

    functional = pd.DataFrame(
        {
            "point": ["base"] + ["truncated"] * 5 + ["full"],
            "k": [0, 1, 2, 4, 8, 16, None],
            "loss": [7.7, 5.2, 3.1, 0.86, 0.23, 0.18, 0.17],
            "energy": [0, 0.27, 0.42, 0.62, 0.83, 0.93, 1],
        }
    )
    pick = {"k": 8, "tolerance": 0.05, "metric": "edit_loss"}
    assert text_problems(functional_figure(functional, pick)) == []
    rng = np.random.default_rng(0)
    for layers in (4, 32):
        rows = [
            {
                "name": f"model.layers.{i}.self_attn.{p}",
                "module": f"self_attn.{p}",
                "layer": i,
                "cosine": rng.random(),
                "phi_1_1": rng.random(),
                "phi_all": rng.random(),
                "random_all": 0.5,
                "amplification": 0.1 + rng.random(),
                "update": u,
            }
            for i in range(layers)
            for p in ("q_proj", "k_proj", "v_proj", "o_proj")
            for u in ("r8", "full")
        ]
        table = pd.DataFrame(rows)
        for fig in (overlap_by_layer(table[table["update"] == "r8"]), amplification_by_layer(table)):
            assert text_problems(fig) == [], layers
            assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
