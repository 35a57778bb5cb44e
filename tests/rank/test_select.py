"""Selection policies: planted ranks recovered, budgets equal brute force, functional picks, the words."""

import itertools

import numpy as np
import pandas as pd
import pytest
from rank.planting import adapter, full_finetune, low_rank_plus_noise
from refs import planted

import lorascope
from lorascope.errors import LorascopeError
from lorascope.rank import Policy, select_ranks, spectra_of

# module -> (rows, cols, planted rank)
PLANTED = {
    "model.layers.0.self_attn.q_proj": (64, 64, 3),
    "model.layers.0.self_attn.k_proj": (32, 64, 1),
    "model.layers.0.mlp.up_proj": (96, 64, 7),
    "model.layers.1.self_attn.q_proj": (64, 64, 12),
    "model.layers.1.self_attn.k_proj": (32, 64, 5),
    "model.layers.1.mlp.up_proj": (96, 64, 0),
}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Each ΔW: a sum of r rank-one updates of size 8 over N(0, 0.01²) noise — the noise edge
    0.01·(√m + √n) ≈ 0.18 is far below 8, and the noise keeps < 0.1 % of the energy."""
    deltas = {
        name: low_rank_plus_noise(m, n, r, signal=8.0, noise=0.01, seed=i)
        for i, (name, (m, n, r)) in enumerate(PLANTED.items())
    }
    base, tuned, refs = full_finetune(tmp_path_factory.mktemp("select"), deltas)
    return spectra_of(lorascope.analyze(base, tuned)), refs


def planted_ranks():
    return {name: r for name, (_, _, r) in PLANTED.items()}


def test_noise_policy_recovers_planted_ranks(noisy):
    spectra, _ = noisy
    sel = select_ranks(spectra, Policy("noise"))
    assert sel.ranks() == planted_ranks()


def test_energy_policy_recovers_planted_ranks(noisy):
    # With r equal directions, energy(r − 1) ≤ (r − 1)/r < 0.95 for r ≤ 12 and energy(r) > 0.998:
    # rank_0.95 = r.
    spectra, _ = noisy
    sel = select_ranks(spectra, Policy("energy", energy=0.95))
    want = planted_ranks()
    got = sel.ranks()
    for name, r in want.items():
        if r:
            assert got[name] == r, name
    assert got["model.layers.1.mlp.up_proj"] > 30  # pure noise is flat: τ of its energy needs most directions
    t = sel.table.set_index("name")
    assert (t.loc[[n for n, r in want.items() if r], "energy"] >= 0.95).all()


def test_energy_rank_is_the_smallest_reaching_tau(noisy):
    spectra, refs = noisy
    for tau in (0.5, 0.9, 0.999):
        sel = select_ranks(spectra, Policy("energy", energy=tau)).table.set_index("name")
        for name, dw in refs.items():
            s2 = np.linalg.svd(dw, compute_uv=False) ** 2
            e = np.cumsum(s2) / s2.sum()
            assert sel.loc[name, "rank"] == int(np.argmax(e >= tau - 1e-12)) + 1  # numpy's first crossing


def brute_force(spectra, budget, max_rank=4):
    best, best_ranks = 0.0, None
    sig2 = [s[:max_rank] ** 2 for s in spectra.sigma]
    costs = spectra.unit_costs
    for ranks in itertools.product(range(max_rank + 1), repeat=len(sig2)):
        if sum(r * c for r, c in zip(ranks, costs)) <= budget:
            v = sum(float(g[:r].sum()) for g, r in zip(sig2, ranks))
            if v > best:
                best, best_ranks = v, ranks
    return best, best_ranks


def test_budget_policy_equals_brute_force(tmp_path):
    names = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.1.mlp.up_proj",
    ]
    shapes = [(12, 12), (6, 12), (20, 12), (20, 12)]
    deltas = {
        n: planted(m, k, np.array([3.0, 1.6, 0.9, 0.4]) * (1 + 0.3 * i), seed=i)
        for i, (n, (m, k)) in enumerate(zip(names, shapes))
    }
    spectra = spectra_of(lorascope.analyze(*full_finetune(tmp_path, deltas)[:2]))
    total = float(spectra.totals.sum())
    for budget in (0, 17, 40, 100, 155, 230):
        sel = select_ranks(spectra, Policy("budget", budget=budget))
        want, _ = brute_force(spectra, budget)
        assert sel.totals["params"] <= budget
        assert sel.totals["energy"] == pytest.approx(want / total, abs=1e-6)
        k = sel.notes["knapsack"]
        assert k["exact"] and k["greedy_energy"] <= k["exact_energy"] + 1e-12
        assert k["exact_energy"] == pytest.approx(sel.totals["energy"], abs=1e-6)


def test_functional_policy_uses_the_smallest_k_within_tolerance(noisy):
    spectra, _ = noisy
    table = pd.DataFrame(
        {
            "point": ["base", "truncated", "truncated", "truncated", "full"],
            "k": [0, 2, 4, 8, np.nan],
            "loss": [3.0, 2.5, 2.02, 2.001, 2.0],
        }
    )
    # tolerance = a share of the fine-tune's change (3.0 − 2.0): 2.02 is within 3 %, not within 1.5 %
    sel = select_ranks(spectra, Policy("functional", tolerance=0.03), table)
    assert sel.notes["functional"]["k"] == 4 and sel.notes["functional"]["within"]
    assert set(sel.table["rank"]) == {4}  # uniform k, capped by what a module has (here all have ≥ 4)
    assert sel.notes["functional"]["recovered"] == pytest.approx((3.0 - 2.02) / (3.0 - 2.0))
    assert select_ranks(spectra, Policy("functional", tolerance=0.015), table).notes["functional"]["k"] == 8
    strict = select_ranks(spectra, Policy("functional", tolerance=0.0), table)
    assert strict.notes["functional"]["k"] == 8 and not strict.notes["functional"]["within"]
    assert "No measured rank is within the tolerance" in strict.recommendation
    with pytest.raises(LorascopeError, match="functional sweep"):
        select_ranks(spectra, Policy("functional"))


def test_recommendation_states_the_numbers(tmp_path):
    ad, _ = adapter(
        tmp_path,
        {"model.layers.0.self_attn.q_proj": (32, 32), "model.layers.1.self_attn.q_proj": (32, 32)},
        {
            "model.layers.0.self_attn.q_proj": [4, 2, 1, 0.5, 0.1, 0.05, 0.01, 0.01],
            "model.layers.1.self_attn.q_proj": [1, 0.5],
        },
        {"r": 8, "lora_alpha": 8},
    )
    spectra = spectra_of(lorascope.analyze(ad))
    sel = select_ranks(spectra, Policy("energy", energy=0.9))
    text = sel.recommendation
    assert sel.totals["original_params"] == 2 * 8 * 64
    assert f"{sel.totals['energy']:.1%}" in text and "of the original adapter's" in text
    # energy(1) = 16/21.26 and 1/1.25 are below 0.9, energy(2) above it in both modules
    assert sel.ranks() == {"model.layers.0.self_attn.q_proj": 2, "model.layers.1.self_attn.q_proj": 2}
    assert "2 of 2 modules rank 2 each" in text
    assert "25% of the original adapter's 1.02k parameters" in text
    noise = select_ranks(spectra, Policy("noise"))
    assert (
        "finds no noise" in noise.recommendation
    )  # an exactly low-rank adapter: nothing below the threshold
    budget = select_ranks(spectra, Policy("budget", budget=200))
    assert "proven optimal" in budget.recommendation and "LP bound" in budget.recommendation


def test_policy_is_validated():
    with pytest.raises(ValueError, match="policy must be one of"):
        Policy("magic")
    with pytest.raises(ValueError, match="energy must be in"):
        Policy("energy", energy=1.5)
    with pytest.raises(ValueError, match="budget"):
        Policy("budget")
    with pytest.raises(ValueError, match="tolerance"):
        Policy("functional", tolerance=-1)


def test_noise_policy_refuses_a_top_k_spectrum(tmp_path):
    dw = planted(30, 30, np.geomspace(3, 0.1, 30), seed=3)
    base, tuned, _ = full_finetune(tmp_path, {"model.layers.0.mlp.down_proj": dw})
    with pytest.raises(LorascopeError, match="randomized top-k"):
        select_ranks(spectra_of(lorascope.analyze(base, tuned, top_k=4)), Policy("noise"))


def test_budget_on_a_top_k_spectrum_claims_no_global_optimum(tmp_path):
    from lorascope.rank.sweep import frontier

    dw = planted(30, 30, np.geomspace(3, 0.1, 30), seed=3)
    base, tuned, _ = full_finetune(tmp_path, {"model.layers.0.mlp.down_proj": dw})
    complete = spectra_of(lorascope.analyze(base, tuned))
    partial = spectra_of(lorascope.analyze(base, tuned, top_k=4))
    exact = select_ranks(complete, Policy("budget", budget=200))
    assert exact.notes["knapsack"]["exact"] and "proven optimal (" in exact.recommendation
    sel = select_ranks(partial, Policy("budget", budget=200))
    k = sel.notes["knapsack"]
    assert not k["exact"] and k["top_k_modules"] == 1 and k["upper_bound_energy"] is None
    assert "not proven optimal overall" in sel.recommendation and "LP bound" not in sel.recommendation
    optimal = frontier(partial, [1, 2, 4]).query("policy == 'optimal'")
    assert not optimal["exact"].any() and optimal["upper_bound_energy"].isna().all()
    assert frontier(complete, [1, 2, 4]).query("policy == 'optimal'")["exact"].all()


def test_uniform_baseline_is_priced_as_the_sweep_prices_it(tmp_path):
    from lorascope.rank.sweep import uniform_table

    ad, _ = adapter(
        tmp_path,
        {"model.layers.0.self_attn.q_proj": (32, 32), "model.layers.1.self_attn.q_proj": (32, 32)},
        {
            "model.layers.0.self_attn.q_proj": [1.0],
            "model.layers.1.self_attn.q_proj": list(np.geomspace(4, 1, 8)),
        },
        {"r": 8, "lora_alpha": 8, "rank_pattern": {"layers.0.self_attn.q_proj": 1}},
    )
    spectra = spectra_of(lorascope.analyze(ad))
    sel = select_ranks(spectra, Policy("energy", energy=0.999))
    t = sel.totals
    assert sel.ranks() == {"model.layers.0.self_attn.q_proj": 1, "model.layers.1.self_attn.q_proj": 8}
    assert t["params"] == 9 * 64
    uniform = uniform_table(spectra, range(1, 9))
    affordable = uniform[uniform["params"] <= t["params"]]
    # a uniform rank 8 keeps module 0 at its rank 1, so it costs 9·64, not 16·64: k = 8, not 576 // 128 = 4
    assert t["uniform_rank_same_params"] == int(affordable["k"].max()) == 8
    assert t["uniform_energy_same_params"] == pytest.approx(float(affordable["energy"].iloc[-1]))
