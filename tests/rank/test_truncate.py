"""lorascope/rank/truncate.py: one module's top-k triplets — the route is linalg.svd's — and the error they
leave, measured entry by entry in float64."""

import numpy as np
import pytest
import torch
from refs import planted

from lorascope.linalg import Dense, LowRank
from lorascope.rank.truncate import TruncateOptions, dense_top_k, form_top_k, residual_sq


@pytest.mark.parametrize(
    "svd, k, route",
    [
        ("auto", 4, "randomized"),
        ("auto", 30, "exact"),
        ("exact", 4, "exact"),
        ("randomized", 30, "randomized"),
    ],
)
def test_dense_top_k_follows_linalgs_rule(svd, k, route):
    sig = np.geomspace(5.0, 1e-3, 60)
    dw = planted(80, 60, sig, seed=0)
    tk = dense_top_k(torch.tensor(dw), k, TruncateOptions(svd=svd))
    assert tk.method == route and tk.rank == k
    u, s, vt = np.linalg.svd(dw, full_matrices=False)
    best = (u[:, :k] * s[:k]) @ vt[:k]
    np.testing.assert_allclose(tk.matrix(), best, atol=1e-6 * s[0])
    err = np.linalg.norm(dw - tk.matrix()) / np.linalg.norm(dw)
    assert tk.rel_error() == pytest.approx(err, rel=1e-6)
    b, a = tk.factors()
    np.testing.assert_allclose(b @ a, tk.matrix(), rtol=1e-12, atol=1e-14 * sig[0])
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(a), rel=1e-12)  # balanced: B = U√S, A = √S Vᵀ


def test_a_factored_form_is_exact_and_its_loss_is_the_float64_tail():
    rng = np.random.default_rng(1)
    b, a = rng.standard_normal((20, 5)), rng.standard_normal((5, 15))
    tk = form_top_k(LowRank(b, a, 0.5), 3, TruncateOptions())
    s = np.linalg.svd(0.5 * b @ a, compute_uv=False)
    assert tk.method == "factored" and tk.lost == pytest.approx(float(np.sum(s[3:] ** 2)), rel=1e-10)
    assert tk.energy() == pytest.approx(float(np.sum(s[:3] ** 2) / np.sum(s**2)), rel=1e-12)


def test_residual_is_summed_by_blocks_and_options_are_checked():
    m = np.arange(12.0).reshape(4, 3)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    assert residual_sq(m, u[:, :1], s[:1], vt[:1].T, block_bytes=8) == pytest.approx(
        float(np.sum(s[1:] ** 2))
    )
    with pytest.raises(ValueError, match="svd must be one of"):
        TruncateOptions(svd="lanczos")
    with pytest.raises(ValueError, match="precision"):
        TruncateOptions(precision="float16")
    assert Dense  # the dense route is chosen in linalg.svd, not here
