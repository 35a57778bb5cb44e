"""Intruder dimensions (Shuttleworth et al. 2024, Algorithm 1): planted intruders are found, noise gives
none."""

import numpy as np
import pandas as pd
import pytest
import torch
from refs import planted

from lorascope.compare.intruders import (
    EPSILONS,
    IntruderOptions,
    base_directions,
    count_intruders,
    find_intruders,
    intruder_counts,
    intruder_sweep,
    max_cosines,
)
from lorascope.linalg import Dense, LowRank, merged

M = 128
SIGMAS = 10 * 0.9 ** np.arange(M) + 0.05  # well-separated top singular values


@pytest.fixture(scope="module")
def base():
    w = torch.tensor(planted(M, M, SIGMAS, seed=1))
    return w, base_directions(w)


def unit(n, seed):
    v = np.random.default_rng(seed).standard_normal(n)
    return v / np.linalg.norm(v)


def ref_max_cos(w, w_tuned, k):
    """Algorithm 1 straight from numpy's SVDs: max_i |cos(y_j, x_i)| for the top-k y_j."""
    x = np.linalg.svd(w)[0]
    y = np.linalg.svd(w_tuned)[0][:, :k]
    return np.abs(x.T @ y).max(axis=0)


@pytest.mark.parametrize("lam_over_sigma1", [1.2, 2.0, 5.0])
def test_planted_intruder_is_found(base, lam_over_sigma1):
    """W + λ·v vᵀ with λ > σ₁(W) and a random unit v: the new top direction is an intruder at ε = 0.5."""
    w, (bs, bu) = base
    v = unit(M, 7)
    lam = lam_over_sigma1 * SIGMAS[0]
    update = LowRank(torch.tensor(v[:, None]), torch.tensor(v[None, :]), lam)
    table = find_intruders(merged(w, update), bu, bs, IntruderOptions(epsilon=0.5))
    assert table["intruder"].sum() >= 1
    top = table.iloc[0]
    assert top["intruder"] and top["max_cos"] < 0.5  # the λ direction outranks every base direction
    tuned = w.numpy() + lam * np.outer(v, v)
    y1 = np.linalg.svd(tuned)[0][:, 0]
    assert abs(y1 @ v) > 0.9  # and it is v's direction
    np.testing.assert_allclose(table["max_cos"], ref_max_cos(w.numpy(), tuned, 10), atol=1e-8)


def test_small_dense_noise_gives_no_intruders(base):
    w, (bs, bu) = base
    noise = Dense(torch.tensor(1e-3 * np.random.default_rng(8).standard_normal((M, M))))
    table = find_intruders(merged(w, noise), bu, bs)
    assert table["intruder"].sum() == 0
    assert table["max_cos"].min() > 0.99
    assert (
        table["base_index"] == np.arange(1, 11)
    ).all()  # each top direction matches its own base direction


def test_fine_tune_within_ws_directions_is_no_intruder(base):
    """Amplifying W's own 3rd direction reorders the spectrum but adds no new direction."""
    w, (bs, bu) = base
    u, _, vt = np.linalg.svd(w.numpy())
    update = LowRank(torch.tensor(u[:, 2:3]), torch.tensor(vt[2:3]), 3 * SIGMAS[0])
    table = find_intruders(merged(w, update), bu, bs)
    assert table["intruder"].sum() == 0
    assert table.iloc[0]["base_index"] == 3


def test_tall_matrix_counts_directions_outside_ws_column_space():
    """m > n: base vectors span only W's column space; a tuned direction outside it is an intruder."""
    m, n = 90, 40
    w = planted(m, n, 5 * 0.9 ** np.arange(n) + 0.1, seed=2)
    bs, bu = base_directions(torch.tensor(w))
    assert bu.shape == (m, n)
    q = np.linalg.svd(w)[0]
    outside = q[:, n + 3]  # ⟂ to every column of W
    right = unit(n, 3)
    update = LowRank(torch.tensor(outside[:, None]), torch.tensor(right[None, :]), 20.0)
    tuned = merged(torch.tensor(w), update)
    table = find_intruders(tuned, bu, bs)
    # y₁ = (W z + 20·o (rᵀz)) / σ₁: its part inside W's column space is at most σ₁(W)/σ₁(W_tuned)
    assert table.iloc[0]["max_cos"] < 5.1 / table.iloc[0]["sigma"] < 0.3 and table.iloc[0]["intruder"]
    y1 = np.linalg.svd(tuned.numpy())[0][:, 0]
    assert abs(y1 @ outside) > 0.95
    thin = np.linalg.svd(w, full_matrices=False)[0]  # (m, n): the reference takes the thin basis too
    np.testing.assert_allclose(table.iloc[0]["max_cos"], np.abs(thin.T @ y1).max(), atol=1e-10)


def test_float32_path_matches_float64_reference():
    rng = np.random.default_rng(4)
    w = planted(60, 80, np.linspace(4, 0.1, 60), seed=5)  # distinct σ: every base direction well defined
    dw = 0.8 * rng.standard_normal((60, 3)) @ rng.standard_normal((3, 80)) / 9
    bs, bu = base_directions(torch.tensor(w, dtype=torch.float32))
    table = find_intruders(torch.tensor(w + dw, dtype=torch.float32), bu, bs, IntruderOptions(intruder_k=6))
    np.testing.assert_allclose(table["max_cos"], ref_max_cos(w, w + dw, 6), atol=1e-4)
    assert len(table) == 6 and table["j"].tolist() == list(range(1, 7))


def test_randomized_tuned_svd_agrees_on_separated_spectra(base):
    w, (bs, bu) = base
    v = unit(M, 9)
    tuned = w + 2 * SIGMAS[0] * torch.tensor(np.outer(v, v))
    exact = find_intruders(tuned, bu, bs)
    fast = find_intruders(tuned, bu, bs, IntruderOptions(svd="randomized"))
    np.testing.assert_allclose(fast["max_cos"], exact["max_cos"], atol=1e-3)


def test_max_cosines_on_a_basis():
    basis = torch.eye(4, dtype=torch.float64)
    y = torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64).T
    best, index = max_cosines(basis, y)
    np.testing.assert_allclose(best, [0.8, 0.5])
    assert index.tolist()[0] == 1


def test_sweep_and_counts():
    table = pd.DataFrame(
        {
            "name": ["a"] * 3 + ["b"] * 3,
            "layer": [0] * 3 + [1] * 3,
            "module": ["q"] * 6,
            "update": ["lora"] * 6,
            "max_cos": [0.2, 0.6, 0.95, 0.45, 0.9, 0.99],
        }
    )
    assert count_intruders(table["max_cos"].to_numpy(), 0.5) == 2
    sweep = intruder_sweep(table, (0.1, 0.5, 0.7, 0.96))
    assert sweep["intruders"].tolist() == [0, 2, 3, 5]
    assert sweep["modules_with_intruders"].tolist() == [0, 2, 2, 2]
    counts = intruder_counts(table, 0.5)
    assert counts["intruders"].tolist() == [1, 1] and counts["min_max_cos"].tolist() == [0.2, 0.45]
    assert EPSILONS[0] == 0.1 and EPSILONS[-1] == 0.9


def test_options_are_validated():
    with pytest.raises(ValueError, match="epsilon"):
        IntruderOptions(epsilon=1.5)
    with pytest.raises(ValueError, match="intruder_k"):
        IntruderOptions(intruder_k=0)
    with pytest.raises(ValueError, match="svd must be one of"):
        IntruderOptions(svd="lanczos")
