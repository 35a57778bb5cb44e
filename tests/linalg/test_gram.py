"""lorascope/linalg/gram.py: the Gram route's eigenvalues and their floor, against float64 numpy SVDs."""

import numpy as np
import pytest
from refs import planted, ref_sigma

from lorascope.linalg.gram import eigvalsh_upper, gram_floor, gram_svd, gram_svd_dense, gram_update


def test_gram_update_accumulates_the_upper_triangle_of_xtx():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((7, 4)), np.asfortranarray(rng.standard_normal((5, 4)))
    g = gram_update(gram_update(None, x1), x2)
    want = x1.T @ x1 + x2.T @ x2
    np.testing.assert_allclose(np.triu(g), np.triu(want), rtol=1e-13)


def test_blocks_give_every_singular_value_within_the_floor():
    sig = np.geomspace(10.0, 1e-3, 120)
    m = planted(360, 120, sig, seed=1)
    got = gram_svd((m[i : i + 50] for i in range(0, 360, 50)), 360, 120)
    assert got.method == "gram" and got.complete and got.s.size == 120
    assert np.max(np.abs(got.s - ref_sigma(m))) <= got.floor
    assert got.fro_norm == pytest.approx(np.linalg.norm(m), rel=1e-12)
    dense = gram_svd_dense(m)
    np.testing.assert_allclose(dense.s, got.s, rtol=1e-12, atol=dense.floor)
    delta, floor = gram_floor(360, 120, float(np.sum(sig**2)), float(sig[0] ** 2))
    assert delta == pytest.approx(np.finfo(np.float64).eps * (360 * np.sum(sig**2) + 120 * sig[0] ** 2))
    assert floor == pytest.approx(np.sqrt(delta)) and got.floor == pytest.approx(floor, rel=1e-6)


def test_eigvalsh_upper_reads_only_the_upper_triangle():
    a = np.array([[2.0, 1.0], [99.0, 3.0]])  # the lower entry is garbage
    np.testing.assert_allclose(
        np.sort(eigvalsh_upper(a)), np.linalg.eigvalsh(np.array([[2.0, 1.0], [1.0, 3.0]]))
    )
