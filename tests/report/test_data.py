"""The report's numbers against hand-worked and brute-force references: grids, labels, sweeps, bands."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report.synthetic import synthetic_results

from lorascope.report import data
from lorascope.results import modules_frame


def rows(specs):
    """specs: (name, layer, module, rows, cols, fro_norm, metric) -> a modules table."""
    return modules_frame(
        [
            {"name": n, "layer": l, "module": m, "rows": r, "cols": c, "fro_norm": f, "entropy_rank": e}
            for n, l, m, r, c, f, e in specs
        ]
    )


def test_grid_averages_modules_sharing_a_cell_and_leaves_out_unlayered_ones():
    m = rows(
        [
            ("down_blocks.1.attentions.0.to_q", 1, "attentions.0.to_q", 4, 4, 1.0, 2.0),
            ("up_blocks.1.attentions.0.to_q", 1, "attentions.0.to_q", 4, 4, 1.0, 4.0),
            ("up_blocks.1.attentions.1.to_q", 1, "attentions.1.to_q", 4, 4, 1.0, 9.0),
            ("down_blocks.0.attentions.0.to_k", 0, "attentions.0.to_k", 4, 4, 1.0, 1.0),
            ("conv_in", None, "conv_in", 4, 4, 1.0, 100.0),
        ]
    )
    grid = data.layer_grid(m, "entropy_rank")
    assert list(grid.values.columns) == ["attentions.*.to_k", "attentions.*.to_q"]
    assert list(grid.values.index) == [0, 1]
    assert grid.values.loc[1, "attentions.*.to_q"] == pytest.approx(5.0)  # mean of 2, 4, 9
    assert grid.counts.loc[1, "attentions.*.to_q"] == 3
    assert math.isnan(grid.values.loc[0, "attentions.*.to_q"])
    assert grid.averaged_cells == 1
    assert list(data.unlayered(m)["name"]) == ["conv_in"]


def test_types_come_in_model_order_and_labels_are_short_and_unique():
    m = rows(
        [
            ("lm_head", None, "lm_head", 4, 4, 1.0, 1.0),
            ("model.layers.0.self_attn.q_proj", 0, "self_attn.q_proj", 4, 4, 1.0, 1.0),
            ("model.layers.0.mlp.experts.3.w1", 0, "mlp.experts.3.w1", 4, 4, 1.0, 1.0),
            ("model.layers.1.self_attn.k_proj", 1, "self_attn.k_proj", 4, 4, 1.0, 1.0),
        ]
    )
    assert data.type_order(m) == ["self_attn.q_proj", "mlp.experts.*.w1", "self_attn.k_proj", "lm_head"]
    labels = data.short_labels(
        [
            "attentions.*.transformer_blocks.*.attn1.to_q",
            "transformer_blocks.*.attn1.to_q",
            "mlp.experts.*.w1",
        ]
    )
    assert labels == {
        "attentions.*.transformer_blocks.*.attn1.to_q": "attentions…attn1.to_q",
        "transformer_blocks.*.attn1.to_q": "transformer_blocks.attn1.to_q",
        "mlp.experts.*.w1": "mlp.experts.w1",
    }
    clash = data.short_labels(["a.*.bbbbbbbbbbbbbbbbbbbbbbbbb.c.d", "a.*.eeeeeeeeeeeeeeeeeeeeeeeeeeeee.c.d"])
    assert len(set(clash.values())) == 2


def brute_force_sweep(modules, spectra, k):
    """docs/METRICS.md, written out: sqrt(Σ_l Σ_{i>k} σ²_{l,i} / Σ_l ‖ΔW_l‖_F²), the tail summed where the
    spectrum is complete and known only through ‖ΔW‖_F² − Σ_{i≤k} σ² past a top-k; parameters
    Σ_l min(k, p_l)(m_l + n_l)."""
    num = den = 0.0
    params = 0
    truncated = set(data.truncated_modules(modules, spectra))
    for _, r in modules.iterrows():
        s = [float(x) for x in spectra[r["name"]]]
        total = float(r["fro_norm"]) ** 2
        num += total - sum(x * x for x in s[:k]) if r["name"] in truncated else sum(x * x for x in s[k:])
        den += total
        params += min(k, min(int(r["rows"]), int(r["cols"]))) * (int(r["rows"]) + int(r["cols"]))
    return math.sqrt(max(num, 0.0) / den), params


def test_uniform_rank_sweep_matches_the_definition():
    res = synthetic_results(3, kind="full-diff", hidden=16)
    sweep = data.uniform_rank_sweep(res.modules, res.spectra)
    assert sweep.truncated == [] and sweep.k_limit is None
    assert list(sweep.table["k"]) == list(range(1, 17))  # the longest spectrum: 16 × 16 q_proj
    for k in (1, 2, 5, 16):
        err, params = brute_force_sweep(res.modules, res.spectra, k)
        row = sweep.table[sweep.table["k"] == k].iloc[0]
        assert row["error"] == pytest.approx(err, rel=1e-6, abs=1e-7)
        assert row["energy"] == pytest.approx(1 - err**2, rel=1e-6, abs=1e-7)
        assert row["adapter_parameters"] == params
    assert (
        sweep.table["error"].iloc[-1] == 0.0
    )  # the whole spectrum kept: no tail, whatever the float32 rounding


def test_sweep_of_an_adapter_reaches_zero_at_its_rank():
    res = synthetic_results(2, kind="adapter", r=4, hidden=32)
    t = data.uniform_rank_sweep(res.modules, res.spectra).table
    assert list(t["k"]) == [1, 2, 3, 4]
    assert t["error"].iloc[-1] == pytest.approx(0.0, abs=1e-3)
    assert data.actual_adapter_parameters(res.modules) == int(t["adapter_parameters"].iloc[-1])


def test_sweep_of_truncated_spectra_uses_fro_norm_and_stops_at_the_shortest():
    res = synthetic_results(2, kind="full-diff", hidden=32, top_k=5)
    sweep = data.uniform_rank_sweep(res.modules, res.spectra)
    assert len(sweep.truncated) == len(res.modules) and sweep.k_limit == 5
    assert int(sweep.table["k"].max()) == 5
    err, _ = brute_force_sweep(res.modules, res.spectra, 5)
    assert sweep.table["error"].iloc[-1] == pytest.approx(err, rel=1e-6)
    assert err > 0.01  # the tail beyond k is not pretended away


def test_sweep_is_thinned_on_a_log_scale_for_long_spectra():
    ks = data._sweep_ks(4096, 100)
    assert ks[0] == 1 and ks[-1] == 4096 and len(ks) < 130
    assert set(2 ** np.arange(13)) <= set(ks)


def test_energy_band_pads_complete_spectra_and_not_truncated_ones():
    a = data.Curve("a", 0, np.array([0.5, 1.0]))
    b = data.Curve("b", 1, np.array([0.2, 0.4, 0.6]))
    median, low, high = data.energy_band([a, b], 4, complete={"a"})
    assert median == pytest.approx([0.35, 0.7, 0.8, 1.0])  # 4th: only a (padded at 1.0) is known
    assert low[3] == high[3] == 1.0


def test_joined_table_has_a_column_per_metric_and_run_and_keeps_unshared_names():
    a = rows([("l.0.q", 0, "q", 4, 4, 1.0, 2.0), ("l.1.q", 1, "q", 4, 4, 1.0, 3.0)])
    b = rows([("l.1.q", 1, "q", 4, 4, 2.0, 5.0), ("head", None, "head", 4, 4, 1.0, 1.0)])
    j = data.joined_table({"r8": a, "full": b}, ["entropy_rank"])
    assert list(j.columns) == ["name", "layer", "module", "entropy_rank · r8", "entropy_rank · full"]
    assert list(j["name"]) == ["l.0.q", "l.1.q", "head"]
    assert j.set_index("name").loc["l.1.q", "entropy_rank · full"] == 5.0
    assert pd.isna(j.set_index("name").loc["l.0.q", "entropy_rank · full"])


def test_type_summary_and_rank_use():
    res = synthetic_results(3, kind="adapter", r=8)
    types = data.type_order(res.modules)
    summary = data.type_summary(res.modules, types)
    assert list(summary["module type"]) == types and list(summary["modules"]) == [3, 3, 3]
    q = res.modules[res.modules["module"] == types[0]]
    assert summary["entropy_rank median"].iloc[0] == pytest.approx(q["entropy_rank"].median())
    assert summary["r"].iloc[0] == "8"
    use = data.rank_use(res.modules, types)
    assert list(use["nominal r"]) == ["8", "8", "8"]
    assert (use["rank_99 / r"] <= 1).all()


def test_sweep_error_is_summed_from_the_tail_not_cancelled():
    """A module keeping all but a 1e-9 tail: error(k) = sqrt(Σ_{i>k}σ²/‖ΔW‖²) ≈ 1e-9, as float64 says; the old
    sqrt(total − kept) read it as 0 or as the rounding of the total (about 1e-8)."""
    import pandas as pd

    from lorascope.results import modules_frame

    s = np.array([3.0, 2.0, 1.0, 2e-9, 1e-9])
    fro = float(np.sqrt(np.sum(s**2)))
    modules = modules_frame(
        [
            {
                "name": "layers.0.w",
                "layer": 0,
                "module": "w",
                "rows": 8,
                "cols": 5,
                "method": "exact",
                "fro_norm": fro,
                "rank_beyond_k": False,
            }
        ]
    )
    t = data.uniform_rank_sweep(modules, {"layers.0.w": s.astype(np.float32)}).table.set_index("k")
    want = np.sqrt(np.sum(s[3:] ** 2)) / fro
    assert t.loc[3, "error"] == pytest.approx(want, rel=1e-6)
    assert t.loc[4, "error"] == pytest.approx(1e-9 / fro, rel=1e-6) and t.loc[5, "error"] == 0.0
    assert isinstance(t, pd.DataFrame)
