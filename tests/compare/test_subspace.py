"""φ(i, j) (Hu et al. 2021, Eq. 4) against its analytic values: random subspaces, identical and rotated
updates."""

import numpy as np
import pytest
import torch
from refs import planted

from lorascope.compare.subspace import (
    GridOptions,
    grid_points,
    random_expectation,
    similarity_grid,
    similarity_summary,
    subspace_similarity,
)
from lorascope.compare.pair import update_svd
from lorascope.linalg import Dense, LowRank


def lowrank(m, n, r, rng, scale=1.0):
    return LowRank(
        torch.tensor(rng.standard_normal((m, r))), torch.tensor(rng.standard_normal((r, n))), scale
    )


def ref_phi(dw1, dw2, i, j, side="left"):
    """Straight from Eq. 4 on numpy's SVD of the dense updates."""
    u1, _, v1 = np.linalg.svd(dw1)
    u2, _, v2 = np.linalg.svd(dw2)
    a, b = (u1, u2) if side == "left" else (v1.T, v2.T)
    return np.linalg.norm(a[:, :i].T @ b[:, :j]) ** 2 / min(i, j)


def test_independent_random_subspaces_give_max_ij_over_m():
    """Mean φ over 32 independent pairs (r = 8 against r = 64 in R^512) within 10 % of max(i, j)/m."""
    m, n, draws = 512, 384, 32
    acc = np.zeros((8, 64))
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        x, y = lowrank(m, n, 8, rng), lowrank(m, n, 64, rng)
        acc += subspace_similarity(update_svd(x).u.numpy(), update_svd(y).u.numpy())
    acc /= draws
    i, j = np.meshgrid(np.arange(1, 9), np.arange(1, 65), indexing="ij")
    expected = random_expectation(i, j, m)
    assert acc.mean() == pytest.approx(expected.mean(), rel=0.10)
    # cells with i·j ≥ 64 sum enough squared cosines that 32 draws pin them to a few per cent
    big = i * j >= 64
    assert np.all(np.abs(acc[big] / expected[big] - 1) < 0.10), np.abs(acc[big] / expected[big] - 1).max()
    # and the whole grid sits far below the identical-subspace value 1
    assert acc.max() < 0.2


@pytest.mark.parametrize("side", ["left", "right"])
def test_identical_updates_give_one_everywhere(side):
    rng = np.random.default_rng(1)
    x = lowrank(60, 40, 12, rng, scale=0.5)
    svd = update_svd(x)
    vec = (svd.u if side == "left" else svd.v).numpy()
    phi = subspace_similarity(vec, vec)
    np.testing.assert_allclose(phi, 1.0, atol=1e-10)
    grid = similarity_grid(vec, vec, GridOptions(side=side))
    np.testing.assert_allclose(grid["phi"], 1.0, atol=1e-10)


def test_rotated_copy_sharing_the_top_direction():
    """ΔW₂ = Q ΔW₁ with Q a reflection fixing u₁: φ(1, 1) = 1, the other directions rotate away."""
    m, n, r = 50, 40, 6
    dw = planted(m, n, [10, 6, 5, 4, 3, 2], seed=2)
    u1 = np.linalg.svd(dw)[0][:, 0]
    w = np.random.default_rng(3).standard_normal(m)
    w -= (w @ u1) * u1  # w ⟂ u₁, so Q u₁ = u₁
    w /= np.linalg.norm(w)
    q = np.eye(m) - 2 * np.outer(w, w)
    x, y = Dense(torch.tensor(dw)), Dense(torch.tensor(q @ dw))
    ux, uy = (update_svd(a).u.numpy() for a in (x, y))
    phi = subspace_similarity(ux, uy)
    assert phi[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert phi[r - 1, r - 1] < 0.99  # not everything is shared
    # every cell agrees with Eq. 4 on numpy's SVD
    for i, j in [(1, 1), (2, 3), (6, 6), (4, 2)]:
        assert phi[i - 1, j - 1] == pytest.approx(ref_phi(dw, q @ dw, i, j), abs=1e-10)


def test_right_side_matches_reference():
    rng = np.random.default_rng(4)
    x, y = lowrank(30, 20, 5, rng), lowrank(30, 20, 7, rng)
    dx = x.scale * x.left.numpy() @ x.right.numpy()
    dy = y.scale * y.left.numpy() @ y.right.numpy()
    phi = subspace_similarity(update_svd(x).v.numpy(), update_svd(y).v.numpy())
    for i, j in [(1, 1), (3, 7), (5, 2)]:
        assert phi[i - 1, j - 1] == pytest.approx(ref_phi(dx, dy, i, j, "right"), abs=1e-10)


def test_grid_points_dense_then_log_spaced():
    assert grid_points(8).tolist() == list(range(1, 9))
    g = grid_points(64)
    assert g[:16].tolist() == list(range(1, 17)) and g[-1] == 64 and np.all(np.diff(g) > 0)
    assert len(g) < 30  # log-spaced beyond 16
    assert grid_points(0).size == 0


def test_grid_caps_and_random_column():
    rng = np.random.default_rng(5)
    x, y = lowrank(100, 80, 10, rng), lowrank(100, 80, 40, rng)
    grid = similarity_grid(update_svd(x).u.numpy(), update_svd(y).u.numpy(), GridOptions(cap=20))
    assert grid["i"].max() == 10 and grid["j"].max() == 20
    np.testing.assert_allclose(grid["random"], np.maximum(grid["i"], grid["j"]) / 100)


def test_summary_numbers():
    rng = np.random.default_rng(6)
    x, y = lowrank(40, 30, 4, rng), lowrank(40, 30, 8, rng)
    ux, uy = update_svd(x).u.numpy(), update_svd(y).u.numpy()
    s = similarity_summary(ux, uy)
    phi = subspace_similarity(ux, uy)
    assert (s["k_x"], s["k_y"]) == (4, 8)
    assert s["phi_1_1"] == pytest.approx(phi[0, 0]) and s["phi_all"] == pytest.approx(phi[3, 7])
    assert s["shared_dims"] == pytest.approx(4 * phi[3, 7])
    assert s["random_all"] == pytest.approx(8 / 40) and s["random_dims"] == pytest.approx(32 / 40)


def test_options_are_validated():
    with pytest.raises(ValueError, match="side"):
        GridOptions(side="top")
    with pytest.raises(ValueError, match="cap"):
        GridOptions(cap=0)
