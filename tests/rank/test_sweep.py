"""Truncation sweeps from saved spectra against numpy truncations (Eckart–Young) and brute-force budgets."""

import itertools

import numpy as np
import pytest
from rank.planting import energy_ref, full_finetune, truncate
from refs import planted

import lorascope
from lorascope.rank.spectra import spectra_of
from lorascope.rank.sweep import check_ranks, default_ranks, frontier, truncation_table, uniform_table

SHAPES = {
    "model.layers.0.self_attn.q_proj": (24, 24),
    "model.layers.0.mlp.up_proj": (40, 24),
    "model.layers.1.self_attn.q_proj": (24, 24),
    "model.layers.1.mlp.up_proj": (40, 24),
}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    deltas = {
        name: planted(m, n, np.geomspace(4.0, 0.02, min(m, n)) * (1 + i), seed=i)
        for i, (name, (m, n)) in enumerate(SHAPES.items())
    }
    base, tuned, refs = full_finetune(tmp, deltas)
    return lorascope.analyze(base, tuned), refs


def test_truncation_table_matches_numpy_truncation(dense):
    results, refs = dense
    table = truncation_table(spectra_of(results), [1, 2, 3, 5, 8, 24, 100])
    assert len(table) == 7 * len(SHAPES)
    for row in table.itertuples():
        dw = refs[row.name]
        p = min(dw.shape)
        assert row.rank == min(row.k, p)
        assert row.params == row.rank * sum(dw.shape)
        # energy(k) of the saved spectrum against the float64 SVD of the dense update
        assert row.energy == pytest.approx(energy_ref(dw, row.rank), abs=2e-6)
        # and the relative Frobenius error of the actual best rank-k approximation is sqrt(1 - energy(k))
        err = np.linalg.norm(dw - truncate(dw, row.rank)) / np.linalg.norm(dw)
        assert row.rel_error == pytest.approx(err, rel=1e-3, abs=1e-6)


def test_uniform_table_pools_energy_over_modules(dense):
    results, refs = dense
    uni = uniform_table(spectra_of(results), [1, 4, 16, 24])
    for row in uni.itertuples():
        kept = sum(np.linalg.norm(truncate(dw, min(row.k, min(dw.shape)))) ** 2 for dw in refs.values())
        total = sum(np.linalg.norm(dw) ** 2 for dw in refs.values())
        assert row.energy == pytest.approx(kept / total, abs=2e-6)
        assert row.params == sum(min(row.k, min(dw.shape)) * sum(dw.shape) for dw in refs.values())
        per_module = [energy_ref(dw, row.k) for dw in refs.values()]
        assert row.min_energy == pytest.approx(min(per_module), abs=2e-6)
    assert uni["modules_at_full_rank"].tolist() == [0, 0, 0, 4]


def test_frontier_optimal_beats_uniform_and_equals_brute_force(dense):
    results, refs = dense
    spectra = spectra_of(results)
    fr = frontier(spectra, [1, 2, 3], extra_budgets=0)
    uni = fr[fr["policy"] == "uniform"].set_index("budget")
    opt = fr[fr["policy"] == "optimal"].set_index("budget")
    greedy = fr[fr["policy"] == "greedy"].set_index("budget")
    total = sum(np.linalg.norm(dw) ** 2 for dw in refs.values())
    sig2 = {n: np.linalg.svd(dw, compute_uv=False)[:6] ** 2 for n, dw in refs.items()}
    for budget in uni.index:
        assert opt.loc[budget, "params"] <= budget
        assert opt.loc[budget, "energy"] >= uni.loc[budget, "energy"] - 1e-9
        assert greedy.loc[budget, "energy"] <= opt.loc[budget, "energy"] + 1e-12
        assert bool(opt.loc[budget, "exact"])
        best = 0.0  # brute force over ranks 0..6 per module
        for ranks in itertools.product(range(7), repeat=len(refs)):
            cost = sum(r * sum(refs[n].shape) for r, n in zip(ranks, refs))
            if cost <= budget:
                best = max(best, sum(float(sig2[n][:r].sum()) for r, n in zip(ranks, refs)))
        assert opt.loc[budget, "energy"] == pytest.approx(best / total, abs=2e-6)


def test_randomized_top_k_leaves_unknown_energies_empty(tmp_path):
    dw = planted(30, 30, np.geomspace(3, 0.1, 30), seed=3)
    base, tuned, refs = full_finetune(tmp_path, {"model.layers.0.mlp.down_proj": dw})
    results = lorascope.analyze(base, tuned, top_k=4)
    table = truncation_table(spectra_of(results), [2, 4, 8])
    assert table["energy"].iloc[:2].tolist() == pytest.approx(
        [energy_ref(dw, 2), energy_ref(dw, 4)], abs=1e-5
    )
    assert np.isnan(table["energy"].iloc[2])  # beyond the stored top-4: unknown, not guessed
    assert table["rank"].tolist() == [2, 4, 8]


def test_adapter_ranks_stop_at_the_adapter_rank(tmp_path):
    from rank.planting import adapter

    ad, refs = adapter(
        tmp_path,
        {"model.layers.0.self_attn.q_proj": (32, 16)},
        {"model.layers.0.self_attn.q_proj": [3, 2, 1, 0.5]},
        {"r": 4, "lora_alpha": 8},
    )
    spectra = spectra_of(lorascope.analyze(ad))
    assert default_ranks(spectra) == [1, 2, 4]
    table = truncation_table(spectra, [2, 16])
    assert table["rank"].tolist() == [2, 4] and table["energy"].iloc[1] == pytest.approx(1.0, abs=1e-12)
    assert table["params"].tolist() == [2 * 48, 4 * 48]


def test_rank_grid_is_validated():
    assert check_ranks([4, 1, 4, 2]) == [1, 2, 4]
    for bad in ([], [0], [1.5], [-2]):
        with pytest.raises(ValueError, match="positive integers"):
            check_ranks(bad)


def test_the_uniform_sweep_is_priced_once_and_the_report_renders_that_sweep(dense):
    """``uniform_sweep`` (every k, for the report's curves) agrees with ``uniform_table`` at every k, and the
    report's sweep is that same computation (report.data only renders it)."""
    from lorascope.rank.sweep import uniform_sweep
    from lorascope.report import data

    results, _ = dense
    spectra = spectra_of(results)
    sweep = uniform_sweep(spectra)
    assert sweep.truncated == [] and sweep.k_limit is None and list(sweep.table["k"]) == list(range(1, 25))
    table = uniform_table(spectra, list(sweep.table["k"]))
    np.testing.assert_array_equal(sweep.table["adapter_parameters"], table["params"])
    np.testing.assert_allclose(sweep.table["error"], table["rel_error"], rtol=1e-9, atol=1e-12)
    rendered = data.uniform_rank_sweep(results.modules, results.spectra)
    assert rendered.table.equals(sweep.table)
