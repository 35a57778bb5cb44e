"""Comparison pages: zero updates named and left out of every statistic, each run's warnings carried over, and
the answer first where the analyses are of trainer runs (and a note naming those that are not)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from report.synthetic import synthetic_results
from report.synthetic_runs import histories, metrics_of

from lorascope.metrics import module_metrics
from lorascope.report import comparison, data
from lorascope.report.comparison import ComparisonContext, build_comparison_page

TYPES = ("self_attn.q_proj", "self_attn.v_proj")


def frozen(results, names):
    """The same results with ``names`` turned into exact zero updates (ΔW = 0: σ all zero)."""
    m = results.modules.copy()
    for name in names:
        i = m.index[m["name"] == name][0]
        zero = module_metrics(np.zeros(4), (int(m.at[i, "rows"]), int(m.at[i, "cols"])), 0.0, complete=True)
        for key, value in zero.items():
            m.at[i, key] = value
    results.modules = m
    return results


def test_zero_updates_are_named_and_left_out_of_medians_and_heatmaps():
    first = synthetic_results(3, TYPES, kind="full-diff", hidden=16, seed=1)
    zeros = [f"model.layers.0.{t}" for t in TYPES]
    first = frozen(first, zeros)
    second = synthetic_results(3, TYPES, kind="adapter", r=4, hidden=16, seed=2)
    ctx = ComparisonContext([first, second], ["freeze", "lora"])
    assert list(ctx.zeros) == ["freeze"] and sorted(ctx.zeros["freeze"]["name"]) == sorted(zeros)
    assert len(ctx.tables["freeze"]) == 4 and len(ctx.all_tables["freeze"]) == 6
    headline = comparison.headline_section(ctx)[0].data.set_index(["run", "module type"])
    for t in TYPES:
        kept = first.modules[first.modules["name"].str.endswith(t) & ~first.modules["name"].isin(zeros)]
        assert headline.loc[("freeze", t), "rank_90 median"] == kept["rank_90"].median()
        assert headline.loc[("freeze", t), "rank_90 median"] > 0
    grid = data.layer_grid(ctx.tables["freeze"], "entropy_rank", list(TYPES))
    assert list(grid.values.index) == [1, 2] and grid.values.notna().all().all()  # layer 0 had no update
    runs = comparison.runs_section(ctx)
    note = next(b for b in runs if getattr(b, "level", "") == "warn" and "exactly zero" in b.text)
    assert "freeze: 2 of 6" in note.text and all(z in note.text for z in zeros)
    table = next(b for b in runs if getattr(b, "caption", "") == "Zero updates (2)").data
    assert table.to_dict("records") == [{"run": "freeze", "module": z} for z in zeros]
    joined = comparison.joined_section(ctx)[-1].data  # the joined table still lists every module
    assert set(zeros) <= set(joined["name"])


def test_each_runs_warnings_are_carried_over():
    a = synthetic_results(2, TYPES, hidden=16, seed=1)
    b = synthetic_results(2, TYPES, hidden=16, seed=2)
    b.summary = {
        **b.summary,
        "warnings": [
            {"name": "lm_head.weight", "reason": "shape differs"},
            {"name": "model.norm.weight", "reason": "no partner"},
        ],
    }
    ctx = ComparisonContext([a, b], ["a", "b"])
    blocks = comparison.runs_section(ctx)
    note = next(x for x in blocks if getattr(x, "text", "").startswith("3 warnings"))
    assert "a: 1; b: 2" in note.text
    table = next(x for x in blocks if getattr(x, "caption", "").startswith("Warnings of every run")).data
    assert table.to_dict("records") == [
        {"run": "a", "name": "model.norm.weight", "reason": "no partner in the base checkpoint"},
        {"run": "b", "name": "lm_head.weight", "reason": "shape differs"},
        {"run": "b", "name": "model.norm.weight", "reason": "no partner"},
    ]


def test_trainer_runs_open_the_page_with_their_outcome(tmp_path):
    """Results whose input is a run folder's adapter/ lead to that run; the page opens with every run's
    outcome, and an analysis of something else is named as having none."""
    results, labels = [], []
    for rank in (2, 8):
        m = metrics_of("lora", rank, "attn", 0)
        folder = tmp_path / m["run"]
        (folder / "tuned").mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(m))
        for table, name in zip(histories(m), ("history.csv", "rank_history.csv")):
            table.to_csv(folder / name, index=False)
        r = synthetic_results(2, TYPES, r=rank, hidden=16, seed=rank)
        r.summary = {**r.summary, "inputs": [{"role": "adapter", "path": str(folder / "adapter")}]}
        results.append(r)
        labels.append(m["run"])
    other = synthetic_results(2, TYPES, hidden=16, seed=9)
    page = build_comparison_page([*results, other], [*labels, "elsewhere"])
    assert [s.key for s in page.sections][:3] == ["answer", "rank-during-training", "forgetting"]
    answer = page.sections[0].blocks
    assert "1 analysis did not come from a trainer run folder" in answer[0].text
    assert "elsewhere" in answer[0].text
    outcome = next(
        b.data
        for b in answer
        if isinstance(getattr(b, "data", None), pd.DataFrame) and "edit_acc" in b.data.columns
    )
    assert outcome["run"].tolist() == labels
    expected = [metrics_of("lora", r, "attn", 0)["final"]["edit_acc"] for r in (2, 8)]
    assert outcome["edit_acc"].tolist() == expected
    assert {b.key for s in page.sections for b in s.blocks if hasattr(b, "draw")} >= {
        "outcome_rank",
        "outcome_parameters",
        "rank_evolution",
        "forgetting_rank",
    }
