"""The report's rank sections (lorascope/report/rank_figures.py): present exactly when their files are,
drawn right."""

import json

import numpy as np
import pandas as pd
import pytest
from rank.planting import adapter

from lorascope.rank import Policy, run_select, run_sweep
from lorascope.report import build_page, render_report
from lorascope.report.rank_figures import frontier_figure, frontier_milestones, functional_figure
from lorascope.results import load_results

RANK_SECTIONS = {"rank_frontier", "functional", "selection", "training"}


@pytest.fixture
def folder(tmp_path):
    shapes = {f"model.layers.{i}.self_attn.{p}": (24, 16) for i in range(2) for p in ("q_proj", "v_proj")}
    sigmas = {name: list(np.geomspace(4, 0.05, 8) * (1 + i)) for i, name in enumerate(shapes)}
    ad, _ = adapter(tmp_path, shapes, sigmas, {"r": 8, "lora_alpha": 16})
    return ad, tmp_path / "out"


def keys(path):
    return {s.key for s in build_page(load_results(path)).sections}


def test_sections_follow_their_files(folder):
    ad, out = folder
    run_select([ad], out, Policy("energy", energy=0.9))
    assert keys(out) & RANK_SECTIONS == {"selection"}
    run_sweep([ad], out, [1, 2, 4, 8])
    assert keys(out) & RANK_SECTIONS == {"selection", "rank_frontier"}
    from lorascope.outputs import writing

    with writing(out, "sweep", mode="update") as tx:  # tables a functional and a training sweep would add
        pd.DataFrame(
            {
                "point": ["base", "truncated", "truncated", "full"],
                "k": [0, 1, 2, None],
                "loss": [3.0, 2.5, 2.01, 2.0],
            }
        ).to_csv(tx.stage / "functional.csv", index=False)
        info = json.loads((tx.stage / "sweep.json").read_text())
        info["functional_pick"] = {
            "k": 2,
            "loss": 2.01,
            "full_loss": 2.0,
            "base_loss": 3.0,
            "tolerance": 0.05,
            "within": True,
            "metric": "eval_loss",
            "recovered": 0.99,
        }
        tx.file("sweep.json").write_text(json.dumps(info))
        pd.DataFrame(
            {
                "run": ["a", "b", "f"],
                "method": ["lora", "lora", "full"],
                "rank": [1, 4, None],
                "trainable_parameters": [10, 40, 500],
                "edit_acc": [0.5, 0.9, 1.0],
            }
        ).to_csv(tx.stage / "training.csv", index=False)
    page = build_page(load_results(out))
    assert {s.key for s in page.sections} & RANK_SECTIONS == RANK_SECTIONS
    html = render_report(out)
    for png in ("rank_frontier", "functional", "selection_ranks", "selection_heatmap", "training"):
        assert (html.parent / "figures" / f"{png}.png").stat().st_size > 1000, png
    text = html.read_text()
    assert "Uniform versus budget-optimal ranks" in text and "k = 2 is the smallest rank keeping 95%" in text


def test_frontier_figure_and_milestones(folder):
    ad, out = folder
    result = run_sweep([ad], out, [1, 2, 4])
    fig = frontier_figure(result.frontier)
    lines = fig.axes[0].get_lines()
    labels = [ln.get_label() for ln in lines]
    assert {"uniform rank k", "budget-optimal ranks (exact knapsack)", "greedy σ²/(m+n)"} <= set(labels)
    uniform = lines[labels.index("uniform rank k")]
    assert list(uniform.get_xdata()) == list(result.uniform["params"])
    m = frontier_milestones(result.frontier)
    assert list(m["k"]) == [1, 2, 4]
    assert (m["optimal energy"] >= m["uniform energy"] - 1e-12).all() and (m["greedy gap"] >= -1e-12).all()


def test_functional_figure_marks_the_pick():
    table = pd.DataFrame(
        {
            "point": ["base", "truncated", "truncated", "full"],
            "k": [0, 1, 2, None],
            "loss": [3.0, 2.5, 2.01, 2.0],
        }
    )
    fig = functional_figure(table, {"k": 2, "tolerance": 0.05, "metric": "edit_loss"})
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("edit_loss")
    truncated = ax.get_lines()[0]
    assert list(truncated.get_xdata()) == [1, 2] and list(truncated.get_ydata()) == [2.5, 2.01]
    band = ax.patches[0]  # the tolerance band: 2.0 .. 2.0 + 0.05 · (3.0 − 2.0)
    assert band.get_y() == pytest.approx(2.0) and band.get_height() == pytest.approx(0.05)
