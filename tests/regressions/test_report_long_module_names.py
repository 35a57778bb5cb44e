"""Module types with 200-character names ran off every figure of the report: heatmap row labels, panel
titles of the spectra and energy small multiples, legend entries and tick labels were drawn at full length,
wider than the canvas. Type labels are now capped at ``data.LABEL_LIMIT`` characters (cut in the middle,
numbered where cut labels would clash), and panel titles still wider than their panel are shrunk to fit."""

from __future__ import annotations

import matplotlib.pyplot as plt
from report.layout import text_problems
from report.synthetic import synthetic_results

from lorascope.report import build_page, data

LONG = tuple("self_attn." + "very_long_component_" * 10 + f"proj_{j}" for j in range(3))


def test_short_labels_are_capped_and_stay_distinct():
    same_tail = ["a" * 100 + "_x" + "b" * 100, "a" * 100 + "_y" + "b" * 100]
    labels = data.short_labels(list(LONG) + same_tail)
    assert all(len(v) <= data.LABEL_LIMIT for v in labels.values())
    assert len(set(labels.values())) == len(labels)
    assert data.short_labels(["self_attn.q_proj"]) == {"self_attn.q_proj": "self_attn.q_proj"}


def test_every_report_figure_keeps_long_module_names_on_the_canvas():
    results = synthetic_results(3, LONG, kind="full-diff", hidden=16)
    problems = {}
    for block in build_page(results).figures:
        fig = block.draw()
        found = text_problems(fig)
        if found:
            problems[block.key] = found[:3]
        plt.close(fig)
    assert problems == {}
