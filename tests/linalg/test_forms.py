"""Inner products and cosines of updates from their factors, against numpy on the dense products."""

import numpy as np
import pytest
import torch

from lorascope.compare.pair import update_svd
from lorascope.linalg import Dense, LowRank, cosine, fro_norm, inner, merged


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
    dense_svd = update_svd(Dense(torch.tensor(b @ x.right.numpy())))
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


# ---- Kronecker and Khatri–Rao forms (LoKr, LoHa) against numpy on the dense products ----------------------

from lorascope import linalg  # noqa: E402
from lorascope.linalg import Kronecker, khatri_rao  # noqa: E402


def kron_pair(seed=0):
    rng = np.random.default_rng(seed)
    a = LowRank(rng.standard_normal((4, 2)), rng.standard_normal((2, 3)))  # (4, 3), rank 2
    b = Dense(rng.standard_normal((5, 6)))  # (5, 6), full rank
    return Kronecker(a, b, -1.7), -1.7 * np.kron(a.to_dense(), b.to_dense())


def test_kronecker_singular_values_are_products_and_vectors_reconstruct():
    k, dw = kron_pair()
    got = linalg.svd(k, compute_uv=True)
    want = np.linalg.svd(dw, compute_uv=False)
    np.testing.assert_allclose(got.s, want[: got.s.size], rtol=1e-12, atol=1e-12 * want[0])
    assert np.all(want[got.s.size :] < 1e-12 * want[0])  # the rest are exact zeros: the spectrum is complete
    assert got.method == "kronecker" and got.complete
    assert got.fro_norm == pytest.approx(np.linalg.norm(dw), rel=1e-12)
    u, s, v = np.asarray(got.u), np.asarray(got.s), np.asarray(got.v)
    np.testing.assert_allclose((u * s) @ v.T, dw, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)
    top = linalg.svd(k, compute_uv=True, k=3)  # vectors of the top 3 products only
    assert top.u.shape == (20, 3) and top.s.size == got.s.size


def test_khatri_rao_factors_the_hadamard_product():
    rng = np.random.default_rng(1)
    l1, r1, l2, r2 = (
        rng.standard_normal((7, 2)),
        rng.standard_normal((2, 9)),
        rng.standard_normal((7, 3)),
        rng.standard_normal((3, 9)),
    )
    left, right = khatri_rao(l1, r1, l2, r2)
    assert left.shape == (7, 6) and right.shape == (6, 9)
    np.testing.assert_allclose(left @ right, (l1 @ r1) * (l2 @ r2), atol=1e-12)
    tl, tr = khatri_rao(*(torch.tensor(x) for x in (l1, r1, l2, r2)))  # torch tensors too
    np.testing.assert_allclose((tl @ tr).numpy(), (l1 @ r1) * (l2 @ r2), atol=1e-12)


@pytest.mark.parametrize("other", ["lowrank", "dense", "kron-same", "kron-other"])
def test_inner_with_a_kronecker_form(other):
    k, dw = kron_pair(2)
    rng = np.random.default_rng(3)
    if other == "lowrank":
        y = LowRank(rng.standard_normal((20, 3)), rng.standard_normal((3, 18)), 0.4)
    elif other == "dense":
        y = Dense(rng.standard_normal((20, 18)))
    elif other == "kron-same":
        y = Kronecker(Dense(rng.standard_normal((4, 3))), Dense(rng.standard_normal((5, 6))), 2.0)
    else:
        y = Kronecker(Dense(rng.standard_normal((2, 3))), Dense(rng.standard_normal((10, 6))), 2.0)
    want = float(np.sum(dw * np.asarray(y.to_dense())))
    assert inner(k, y) == pytest.approx(want, rel=1e-10)
    assert inner(y, k) == pytest.approx(want, rel=1e-10)
