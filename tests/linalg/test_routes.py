"""lorascope/linalg.py: factored, exact and randomized SVDs against dense float64 numpy."""

import numpy as np
import pytest
import torch
from refs import assert_sigma_close, planted, planted_factors, ref_sigma

from lorascope import linalg


@pytest.mark.parametrize("m,n,r", [(200, 120, 8), (64, 300, 16), (6, 768, 8), (30, 20, 40)])
def test_factored_matches_dense_float64(m, n, r):
    rng = np.random.default_rng(0)
    b = rng.standard_normal((m, r))
    a = rng.standard_normal((r, n))
    scale = 2.5
    got = linalg.factored_svd(torch.tensor(b, dtype=torch.float32), torch.tensor(a, dtype=torch.float32), scale)
    ref = ref_sigma(scale * (b.astype(np.float32).astype(np.float64) @ a.astype(np.float32).astype(np.float64)))
    assert got.complete and got.method == "factored"
    assert len(got.s) == min(m, n, r)
    assert_sigma_close(got.s, ref, rtol=1e-9, atol_rel=1e-12)
    assert got.fro_norm == pytest.approx(float(np.sqrt((ref**2).sum())), rel=1e-12)


def test_factored_recovers_planted_spectrum_with_non_orthogonal_factors():
    sig = [10.0, 4.0, 1.0, 0.25, 1e-3]
    b, a = planted_factors(500, 400, sig, seed=1)
    got = linalg.factored_svd(torch.tensor(b), torch.tensor(a), 1.0)
    assert_sigma_close(got.s, sig, rtol=1e-10)


def test_factored_vectors_reconstruct_the_product_and_are_orthonormal():
    b, a = planted_factors(50, 40, [5.0, 3.0, 1.0], seed=2)
    got = linalg.factored_svd(torch.tensor(b), torch.tensor(a), 0.5, compute_uv=True)
    u, s, v = got.u.numpy(), got.s.numpy(), got.v.numpy()
    np.testing.assert_allclose((u * s) @ v.T, 0.5 * b @ a, atol=1e-12)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-12)
    assert np.all(u[np.abs(u).argmax(axis=0), range(3)] > 0)  # deterministic signs


def test_factored_numpy_and_torch_inputs_agree():
    b, a = planted_factors(70, 50, [4.0, 2.0, 0.5], seed=6)
    from_numpy = linalg.factored_svd(b, a, 1.5, compute_uv=True)
    from_torch = linalg.factored_svd(torch.tensor(b), torch.tensor(a), 1.5, compute_uv=True)
    assert isinstance(from_numpy.s, np.ndarray) and isinstance(from_torch.s, torch.Tensor)
    np.testing.assert_allclose(from_numpy.s, from_torch.s.numpy(), rtol=1e-12)
    np.testing.assert_allclose(from_numpy.u, from_torch.u.numpy(), atol=1e-12)  # same deterministic signs
    np.testing.assert_allclose(from_numpy.v, from_torch.v.numpy(), atol=1e-12)


def test_exact_matches_numpy():
    x = np.random.default_rng(3).standard_normal((90, 70))
    got = linalg.exact_svd(torch.tensor(x))
    assert_sigma_close(got.s, ref_sigma(x), rtol=1e-12)
    assert got.complete and got.fro_norm == pytest.approx(np.linalg.norm(x))


def test_randomized_top_k_is_close_and_fro_exact():
    sig = np.geomspace(100, 0.01, 150)
    x = planted(400, 300, sig, seed=4) + 1e-4 * np.random.default_rng(5).standard_normal((400, 300))
    got = linalg.randomized_svd(torch.tensor(x, dtype=torch.float32), k=20, seed=0)
    assert not got.complete and len(got.s) == 20
    assert_sigma_close(got.s, ref_sigma(x)[:20], rtol=1e-4)
    assert got.fro_norm == pytest.approx(np.linalg.norm(x), rel=1e-6)


def test_randomized_is_seeded():
    x = torch.randn(120, 90, generator=torch.Generator().manual_seed(0))
    a = linalg.randomized_svd(x, 5, seed=7).s
    b = linalg.randomized_svd(x, 5, seed=7).s
    assert torch.equal(a, b)


def test_randomized_with_k_covering_everything_is_exact():
    x = torch.randn(30, 20, dtype=torch.float64)
    got = linalg.randomized_svd(x, 25)
    assert got.method == "exact" and got.complete


def test_resolve_device_without_gpu_falls_back_or_refuses_clearly():
    assert linalg.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert linalg.resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            linalg.resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        linalg.resolve_device("tpu")


def test_factors_that_do_not_chain_are_rejected():
    with pytest.raises(ValueError, match="do not chain"):
        linalg.factored_svd(torch.zeros(4, 3), torch.zeros(2, 5))
