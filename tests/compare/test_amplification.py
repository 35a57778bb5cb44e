"""Amplification and Hu et al.'s Table 7 quantities against their analytic values."""

import numpy as np
import pytest
import torch
from refs import planted

from lorascope.compare.amplification import (
    own_top_norm,
    projection_norm,
    random_expected,
    random_orthonormal,
    table7,
    top_singular_values,
)
from lorascope.compare.pair import PairOptions, compare_pair
from lorascope.compare.pair import update_svd
from lorascope.linalg import Dense, LowRank

SIGMAS = 5.0 * 0.9 ** np.arange(60) + 0.1


@pytest.fixture(scope="module")
def weight():
    w = planted(80, 60, SIGMAS, seed=0)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return w, u, s, vt.T


@pytest.mark.parametrize("j", [1, 2, 7, 30])
def test_rank_one_update_on_ws_own_pair_amplifies_by_c_over_sigma_j(weight, j):
    w, u, s, v = weight
    c = 3.7
    delta = LowRank(torch.tensor(u[:, j - 1 : j]), torch.tensor(v[:, j - 1 : j].T), c)  # ΔW = c·u_j v_jᵀ
    svd = update_svd(delta)
    row = table7(torch.tensor(w), svd.u, svd.v, svd.fro_norm, s, np.random.default_rng(0))
    assert row["rank"] == 1
    assert row["amplification"] == pytest.approx(c / s[j - 1], rel=1e-6)
    assert row["proj_delta"] == pytest.approx(s[j - 1], rel=1e-6)


@pytest.mark.parametrize("r", [1, 4, 16])
def test_ws_own_top_r_directions_give_sqrt_sum_sigma_squared(weight, r):
    w, u, s, v = weight
    want = np.sqrt(np.sum(s[:r] ** 2))
    assert projection_norm(torch.tensor(w), torch.tensor(u[:, :r]), torch.tensor(v[:, :r])) == pytest.approx(
        want, rel=1e-10
    )
    assert own_top_norm(s, r) == pytest.approx(want, rel=1e-12)
    # an update built on W's top-r pairs (any positive weights, factors mixed) projects W onto exactly those
    mix = np.random.default_rng(r).standard_normal((r, r)) + 3 * np.eye(r)
    delta = LowRank(
        torch.tensor(u[:, :r] * np.linspace(2, 1, r) @ mix), torch.tensor(np.linalg.solve(mix, v[:, :r].T))
    )
    svd = update_svd(delta)
    assert projection_norm(torch.tensor(w), svd.u, svd.v) == pytest.approx(want, rel=1e-8)


def test_random_expectation_reproduces_hu_table7_scaled():
    """E‖UᵀWV‖_F² = r²‖W‖_F²/(d k). Hu et al.: ‖W_q‖_F = 61.95, d = k = 12288 → 0.020 (r=4) and 0.32 (r=64).

    Scaled to d = k = 256 with ‖W‖_F/d kept, r‖W‖_F/d is unchanged; 200 random draws on a power-law W
    reproduce it.
    """
    assert random_expected(61.95, 4, (12288, 12288)) == pytest.approx(0.020, abs=5e-4)
    assert random_expected(61.95, 64, (12288, 12288)) == pytest.approx(0.32, abs=5e-3)
    d = 256
    w = planted(d, d, np.arange(1, d + 1) ** -0.5, seed=3)
    w *= 61.95 * d / 12288 / np.linalg.norm(w)
    wt = torch.tensor(w)
    for r, hu in ((4, 0.020), (64, 0.32)):
        rng = np.random.default_rng(r)
        draws = np.array(
            [
                projection_norm(wt, random_orthonormal(d, r, rng), random_orthonormal(d, r, rng))
                for _ in range(200)
            ]
        )
        rms = np.sqrt(np.mean(draws**2))
        assert rms == pytest.approx(random_expected(np.linalg.norm(w), r, (d, d)), rel=0.05)
        assert rms == pytest.approx(hu, rel=0.06)


def test_random_orthonormal_is_orthonormal_and_seeded():
    a = random_orthonormal(50, 7, np.random.default_rng(1))
    np.testing.assert_allclose(a.numpy().T @ a.numpy(), np.eye(7), atol=1e-12)
    np.testing.assert_array_equal(a.numpy(), random_orthonormal(50, 7, np.random.default_rng(1)).numpy())


@pytest.fixture(scope="module")
def slow_decay():
    """A 512² float32 matrix with σᵢ = i^-0.5 (random orthogonal factors from torch's QR)."""
    d = 512
    gen = torch.Generator().manual_seed(4)
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    sigmas = np.arange(1, d + 1) ** -0.5
    return (u * torch.from_numpy(sigmas)) @ v.T, sigmas  # (d, d) * (d,) @ (d, d)


@pytest.mark.parametrize("r", [4, 16, 64])
def test_randomized_top_r_is_exact_enough(slow_decay, r):
    """sqrt(Σ_{i≤r} σᵢ²) from the randomized top-r within 1e-4 (relative) on a slowly decaying spectrum."""
    w, sigmas = slow_decay
    got = own_top_norm(top_singular_values(w.to(torch.float32), r), r)
    assert got == pytest.approx(own_top_norm(sigmas, r), rel=1e-4)
    assert got <= own_top_norm(sigmas, r) * (1 + 1e-6)  # a range finder never captures more than the optimum


def test_pair_amplification_rank_and_dense_partner(weight):
    """A dense update is projected on as many directions as its low-rank partner has; rows carry Table 7."""
    w, _, s, _ = weight
    rng = np.random.default_rng(5)
    x = LowRank(torch.tensor(rng.standard_normal((80, 4))), torch.tensor(rng.standard_normal((4, 60))), 0.1)
    dy = 0.01 * rng.standard_normal((80, 60))
    res = compare_pair(
        x, Dense(torch.tensor(dy)), torch.tensor(w), PairOptions(intruders=None), ("lora", "full")
    )
    lora, full = res.amplification
    assert lora["update"] == "lora" and lora["rank"] == 4 and full["rank"] == 4
    uy, sy, vyt = np.linalg.svd(dy)
    proj = np.linalg.norm(uy[:, :4].T @ w @ vyt[:4].T)
    assert full["proj_delta"] == pytest.approx(proj, rel=1e-5)  # float32 dense SVD
    assert full["amplification"] == pytest.approx(np.linalg.norm(dy) / proj, rel=1e-5)
    assert full["energy_r"] == pytest.approx(np.sum(sy[:4] ** 2) / np.sum(sy**2), rel=1e-5)
    assert lora["energy_r"] == pytest.approx(1.0)
    assert res.row["amplification_x"] == lora["amplification"]
    assert full["proj_w"] == pytest.approx(np.sqrt(np.sum(s[:4] ** 2)), rel=1e-4)  # randomized top-r of W
    res = compare_pair(x, Dense(torch.tensor(dy)), torch.tensor(w), PairOptions(intruders=None, amp_rank=2))
    assert [a["rank"] for a in res.amplification] == [2, 2]
