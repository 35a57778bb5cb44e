"""The budget solver against brute force and an integer DP; greedy against the exact optimum."""

import itertools
import time

import numpy as np
import pytest

from lorascope.rank.knapsack import RankKnapsack


def brute_force(gains, costs, budget):
    """max Σ_l g_l(r_l) s.t. Σ r_l c_l ≤ B over every rank combination."""
    best, best_ranks = 0.0, (0,) * len(gains)
    for ranks in itertools.product(*[range(len(g) + 1) for g in gains]):
        if sum(r * c for r, c in zip(ranks, costs)) <= budget:
            value = sum(float(np.sum(g[:r])) for g, r in zip(gains, ranks))
            if value > best:
                best, best_ranks = value, ranks
    return best, best_ranks


def dp_reference(gains, costs, budget):
    """The textbook multiple-choice knapsack DP over every integer budget (small integer costs only)."""
    best = np.zeros(budget + 1)
    for g, c in zip(gains, costs):
        prefix = np.concatenate([[0.0], np.cumsum(g)])
        new = best.copy()
        for r in range(1, len(g) + 1):
            if r * c > budget:
                break
            shifted = np.full(budget + 1, -np.inf)
            shifted[r * c :] = best[: budget + 1 - r * c] + prefix[r]
            new = np.maximum(new, shifted)
        best = new
    return float(best[budget])


def random_case(rng, n_modules, max_rank, cost_pool, flat):
    gains = []
    for _ in range(n_modules):
        size = int(rng.integers(0, max_rank + 1))
        values = rng.uniform(0.9, 1.0, size) if flat else rng.random(size) ** 3 * rng.uniform(0.1, 10)
        gains.append(np.sort(values)[::-1])
    return gains, list(rng.choice(cost_pool, size=n_modules))


def value_of(gains, ranks):
    return sum(float(np.sum(g[:r])) for g, r in zip(gains, ranks))


@pytest.mark.parametrize("seed", range(6))
def test_exact_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        gains, costs = random_case(
            rng, int(rng.integers(1, 5)), 4, [3, 4, 5, 7, 8, 12], flat=bool(rng.random() < 0.4)
        )
        knap = RankKnapsack(gains, costs)
        for budget in rng.integers(0, 60, size=4):
            want, _ = brute_force(gains, costs, int(budget))
            got = knap.solve(int(budget))
            assert got.exact
            assert got.cost <= budget
            assert got.cost == sum(int(r) * c for r, c in zip(got.ranks, costs))
            assert value_of(gains, got.ranks) == pytest.approx(got.gain, rel=1e-12, abs=1e-12)
            assert got.gain == pytest.approx(want, rel=1e-12, abs=1e-12)
            greedy = knap.greedy(int(budget))
            assert greedy.cost <= budget and greedy.gain <= want + 1e-12
            assert got.upper_bound >= want - 1e-12


def test_exact_equals_integer_dp_on_larger_cases():
    rng = np.random.default_rng(7)
    for _ in range(40):
        gains, costs = random_case(
            rng, int(rng.integers(2, 12)), 30, rng.integers(5, 40, size=5), flat=bool(rng.random() < 0.5)
        )
        knap = RankKnapsack(gains, costs)
        full = sum(len(g) * c for g, c in zip(gains, costs))
        for budget in rng.integers(0, int(full * 1.1) + 1, size=3):
            got = knap.solve(int(budget))
            assert got.exact and got.cost <= budget
            assert got.gain == pytest.approx(dp_reference(gains, costs, int(budget)), rel=1e-10, abs=1e-12)


def test_greedy_can_be_strictly_worse_and_exact_is_not():
    # ratios: module 0 has 10/5 = 2.0, module 1 has 5.9/3 ≈ 1.97 per item; B = 6.
    # Greedy takes module 0 (cost 5) and then nothing fits: 10. The optimum is two items of module 1: 11.8.
    gains, costs = [np.array([10.0]), np.array([5.9, 5.9])], [5, 3]
    knap = RankKnapsack(gains, costs)
    greedy, exact = knap.greedy(6), knap.solve(6)
    assert greedy.gain == pytest.approx(10.0) and list(greedy.ranks) == [1, 0] and not greedy.exact
    assert exact.gain == pytest.approx(11.8) and list(exact.ranks) == [0, 2] and exact.exact
    assert exact.upper_bound == pytest.approx(10.0 + 1 * 5.9 / 3)  # the LP bound: one fractional item


def test_equal_costs_greedy_is_exact():
    rng = np.random.default_rng(3)
    gains = [np.sort(rng.random(5))[::-1] for _ in range(4)]
    knap = RankKnapsack(gains, [10] * 4)
    for budget in range(0, 220, 7):
        greedy = knap.greedy(budget)
        assert greedy.gain == pytest.approx(knap.solve(budget).gain, rel=1e-12, abs=1e-15)
        assert greedy.gain == pytest.approx(brute_force(gains, [10] * 4, budget)[0], rel=1e-12, abs=1e-15)


def test_zero_gains_are_never_bought_and_everything_fits():
    gains, costs = [np.array([4.0, 1.0, 0.0, 0.0]), np.zeros(3)], [2, 2]
    knap = RankKnapsack(gains, costs)
    got = knap.solve(1000)
    assert list(got.ranks) == [2, 0] and got.cost == 4 and got.gain == 5.0 and got.exact
    assert list(knap.max_ranks) == [2, 0]


def test_search_limit_reports_not_proven():
    rng = np.random.default_rng(11)
    gains = [np.sort(rng.uniform(0.99, 1.0, 40))[::-1] for _ in range(12)]
    costs = [101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157]
    knap = RankKnapsack(gains, costs)
    budget = 20_011
    full = knap.solve(budget)
    limited = knap.solve(budget, max_nodes=1)
    assert full.exact and full.nodes > 1
    assert not limited.exact and limited.gain <= full.gain + 1e-12 and limited.cost <= budget


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="descending"):
        RankKnapsack([np.array([1.0, 2.0])], [3])
    with pytest.raises(ValueError, match="positive"):
        RankKnapsack([np.array([1.0])], [0])
    with pytest.raises(ValueError, match="non-negative"):
        RankKnapsack([np.array([1.0])], [3]).solve(-1)


def llama_spectra(seed=0, layers=32):
    """σ² of a Llama-3-8B-shaped full fine-tune: 7 modules per layer, power-law signal over a noise bulk."""
    rng = np.random.default_rng(seed)
    d, d_kv, d_ff = 4096, 1024, 14336
    shapes = [(d, d), (d_kv, d), (d_kv, d), (d, d), (d_ff, d), (d_ff, d), (d, d_ff)]
    gains, costs = [], []
    for _ in range(layers):
        for m, n in shapes:
            p = min(m, n)
            i = np.arange(1, p + 1)
            sigma = rng.uniform(0.5, 2.0) * i ** -rng.uniform(0.6, 1.4) + 0.002 * np.sqrt(1 - i / p)
            gains.append(np.sort(sigma)[::-1] ** 2)
            costs.append(m + n)
    return gains, costs


def test_llama_shaped_budget_is_exact_and_fast():
    gains, costs = llama_spectra(layers=8)
    knap = RankKnapsack(gains, costs)
    assert len(knap.classes) == 3  # q/o, k/v, the three MLP shapes share d + d_ff
    total = sum(float(g.sum()) for g in gains)
    for budget in (1_000_000, 5_000_000, 40_000_000):
        start = time.perf_counter()
        exact = knap.solve(budget)
        assert time.perf_counter() - start < 5.0
        greedy = knap.greedy(budget)
        assert exact.exact and exact.cost <= budget
        assert greedy.gain <= exact.gain + 1e-9 * total <= exact.upper_bound + 1e-9 * total
        # greedy is within one item of the LP bound: at most the largest σ² a module can still add
        assert exact.upper_bound - greedy.gain <= max(float(g[0]) for g in gains)
