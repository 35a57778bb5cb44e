"""Inner products and cosines of updates from their factors, against numpy on the dense products."""

import numpy as np
import pytest
import torch

from lorascope.compare.updates import Dense, LowRank, cosine, fro_norm, inner, merged, update_svd


def pair(seed=0, m=40, n=30, r1=3, r2=5):
    rng = np.random.default_rng(seed)
    b1, a1 = rng.standard_normal((m, r1)), rng.standard_normal((r1, n))
    b2, a2 = rng.standard_normal((m, r2)), rng.standard_normal((r2, n))
    x = LowRank(torch.tensor(b1), torch.tensor(a1), 0.7)
    y = LowRank(torch.tensor(b2), torch.tensor(a2), 2.5)
    return x, y, 0.7 * b1 @ a1, 2.5 * b2 @ a2


def dense(a):
    return Dense(torch.tensor(a))


@pytest.mark.parametrize("kinds", ["ll", "dl", "ld", "dd"])
def test_inner_and_cosine_match_dense_numpy(kinds):
    x, y, dx, dy = pair()
    ux = dense(dx) if kinds[0] == "d" else x
    uy = dense(dy) if kinds[1] == "d" else y
    want = float((dx * dy).sum())
    assert inner(ux, uy) == pytest.approx(want, rel=1e-12, abs=1e-12)
    cos = want / (np.linalg.norm(dx) * np.linalg.norm(dy))
    assert cosine(ux, uy) == pytest.approx(cos, rel=1e-10, abs=1e-13)
    assert fro_norm(ux) == pytest.approx(np.linalg.norm(dx), rel=1e-12)


def test_cosine_of_a_correlated_pair():
    """ΔW₂ = ΔW₁ + E with E ⟂ ΔW₁ of equal norm: cosine 1/√2 exactly."""
    x, _, dx, _ = pair(1)
    e = np.random.default_rng(2).standard_normal(dx.shape)
    e -= (e * dx).sum() / (dx * dx).sum() * dx
    e *= np.linalg.norm(dx) / np.linalg.norm(e)
    assert cosine(x, dense(dx + e)) == pytest.approx(1 / np.sqrt(2), abs=1e-12)


def test_identical_opposite_and_orthogonal():
    x, *_ = pair(3)
    assert cosine(x, x) == pytest.approx(1.0, abs=1e-12)
    neg = LowRank(x.left, x.right, -x.scale)
    assert cosine(x, neg) == pytest.approx(-1.0, abs=1e-12)
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((40, 6)))
    a = LowRank(torch.tensor(q[:, :3]), torch.tensor(np.random.default_rng(5).standard_normal((3, 30))))
    b = LowRank(torch.tensor(q[:, 3:]), torch.tensor(np.random.default_rng(6).standard_normal((3, 30))))
    assert abs(cosine(a, b)) < 1e-13  # column spaces orthogonal


def test_zero_update_has_no_cosine_and_no_directions():
    x, _, _, _ = pair(7)
    zero = LowRank(torch.zeros(40, 4, dtype=torch.float64), torch.ones(4, 30, dtype=torch.float64))
    assert np.isnan(cosine(x, zero))
    assert update_svd(zero).u.shape == (40, 0)


def test_svd_cut_to_numerical_rank():
    """A rank-8 adapter whose B has 3 zero columns has 5 directions; dense ones keep their rank too."""
    rng = np.random.default_rng(8)
    b = rng.standard_normal((50, 8))
    b[:, 5:] = 0
    x = LowRank(torch.tensor(b), torch.tensor(rng.standard_normal((8, 40))))
    svd = update_svd(x)
    assert svd.u.shape == (50, 5) and svd.v.shape == (40, 5)
    dense_svd = update_svd(Dense(torch.tensor(b @ x.right.numpy())), precision=torch.float64)
    assert dense_svd.u.shape[1] == 5
    np.testing.assert_allclose(dense_svd.s.numpy(), svd.s.numpy(), rtol=1e-10)


def test_merged_forms_w_plus_delta():
    x, _, dx, _ = pair(9)
    w = torch.tensor(np.random.default_rng(10).standard_normal((40, 30)))
    np.testing.assert_allclose(merged(w, x).numpy(), w.numpy() + dx, atol=1e-12)
    np.testing.assert_allclose(merged(w, dense(dx)).numpy(), w.numpy() + dx, atol=1e-12)


def test_shapes_must_agree():
    x, _, _, _ = pair()
    with pytest.raises(ValueError, match="different shapes"):
        inner(x, dense(np.zeros((30, 40))))
    with pytest.raises(ValueError, match="do not chain"):
        LowRank(torch.zeros(4, 2), torch.zeros(3, 5))
