"""lorascope/linalg/__init__.py: ``svd`` is the one route chooser — by form, and for a dense top-k by
method."""

import numpy as np
import pytest
import torch
from refs import assert_sigma_close, planted, ref_sigma

from lorascope import linalg
from lorascope.linalg import Dense, LowRank


@pytest.fixture(scope="module")
def matrix():
    sig = np.geomspace(50.0, 0.05, 120)
    return planted(200, 120, sig, seed=4), sig


@pytest.mark.parametrize(
    "method, k, route, complete",
    [
        ("exact", None, "exact", True),
        ("exact", 5, "exact", True),  # a top-k asked exactly: every value, the caller keeps the first k
        ("randomized", 5, "randomized", False),
        ("randomized", 60, "randomized", False),
        ("auto", 5, "randomized", False),  # 5 ≤ 0.1 · 120
        ("auto", 12, "randomized", False),  # exactly on the 10 % line
        ("auto", 13, "exact", True),
        ("auto", None, "exact", True),
        ("randomized", 120, "exact", True),  # k = min(m, n): nothing to find faster
    ],
)
def test_dense_route_follows_method_and_k(matrix, method, k, route, complete):
    x, sig = matrix
    got = linalg.svd(Dense(torch.tensor(x)), compute_uv=True, k=k, method=method)
    assert got.method == route and got.complete is complete
    assert len(got.s) == (k if route == "randomized" else 120)
    assert_sigma_close(np.asarray(got.s)[:5], sig[:5], rtol=1e-6)
    u = np.asarray(got.u)
    assert u.shape[0] == 200 and u.shape[1] == len(got.s)
    assert got.fro_norm == pytest.approx(np.linalg.norm(x), rel=1e-12)  # from the entries, whatever the route


def test_the_auto_line_is_randomized_below():
    assert linalg.RANDOMIZED_BELOW == 0.1 and linalg.SVD_METHODS == ("auto", "exact", "randomized")
    assert linalg.randomized("auto", 10, (100, 300)) and not linalg.randomized("auto", 11, (100, 300))
    assert linalg.randomized("randomized", 99, (100, 300)) and not linalg.randomized(
        "randomized", 100, (100, 300)
    )
    assert not linalg.randomized("exact", 1, (100, 300)) and not linalg.randomized("auto", None, (100, 300))


def test_factored_forms_are_exact_whatever_the_method():
    rng = np.random.default_rng(1)
    b, a = rng.standard_normal((40, 6)), rng.standard_normal((6, 30))
    for method in linalg.SVD_METHODS:
        got = linalg.svd(LowRank(b, a, 2.0), k=3, method=method)
        assert got.method == "factored" and got.complete
        assert_sigma_close(got.s, ref_sigma(2.0 * b @ a)[:6], rtol=1e-10)


def test_bad_methods_are_refused():
    x = Dense(torch.eye(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="one of auto, exact, randomized"):
        linalg.svd(x, method="lanczos")
    with pytest.raises(ValueError, match="give k"):
        linalg.svd(x, method="randomized")
