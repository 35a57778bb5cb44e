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
    got = linalg.factored_svd(
        torch.tensor(b, dtype=torch.float32), torch.tensor(a, dtype=torch.float32), scale
    )
    ref = ref_sigma(
        scale * (b.astype(np.float32).astype(np.float64) @ a.astype(np.float32).astype(np.float64))
    )
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


# ---- error bounds: every route's values lie within its own floor of a float64 LAPACK SVD ----------------


def within_floor(got, ref, floor, per_value=None):
    got = np.asarray(got, np.float64)
    n = max(len(got), len(ref))
    g, w = np.pad(got, (0, n - len(got))), np.pad(np.asarray(ref, np.float64), (0, n - len(ref)))
    bound = np.full(n, floor) if per_value is None else per_value
    err = np.abs(g - w)
    assert np.all(err <= bound), f"worst excess {np.max(err - bound):.3g} at index {np.argmax(err - bound)}"


@pytest.mark.parametrize("shape", [(700, 300), (300, 700), (512, 512)])
def test_gram_route_is_within_its_bound(shape):
    m, n = shape
    rng = np.random.default_rng(11)
    x = planted(m, n, np.geomspace(3, 1e-4, min(m, n)), seed=12) + 1e-9 * rng.standard_normal((m, n))
    got = linalg.gram_svd_dense(x)
    ref = ref_sigma(x)
    assert got.method == "gram" and got.complete and len(got.s) == min(m, n)
    delta, floor = linalg.gram_floor(max(m, n), min(m, n), float(np.sum(x * x)), float(got.s[0]) ** 2)
    assert got.floor == pytest.approx(floor)
    # every value within √δ, and within δ/σ̂ (nearly all digits) where it stands above the floor
    within_floor(got.s, ref, floor, np.minimum(floor, delta / np.maximum(got.s, 1e-300)))
    resolved = got.s > 100 * floor
    np.testing.assert_allclose(got.s[resolved], ref[resolved], rtol=1e-9)
    assert got.fro_norm == pytest.approx(np.linalg.norm(x), rel=1e-12)


def test_gram_route_streamed_in_blocks_equals_in_memory_within_bound():
    x = planted(900, 260, np.geomspace(2, 1e-3, 260), seed=13)
    whole = linalg.gram_svd_dense(x)
    blocks = linalg.gram_svd((x[i : i + 128] for i in range(0, 900, 128)), 900, 260)
    within_floor(blocks.s, ref_sigma(x), blocks.floor)
    np.testing.assert_allclose(blocks.s, whole.s, rtol=1e-10, atol=whole.floor)
    with pytest.raises(ValueError, match="blocks held"):
        linalg.gram_svd(iter([x[:100]]), 900, 260)


@pytest.mark.parametrize(
    "dtype,eps", [(np.float32, np.finfo(np.float32).eps), (np.float64, np.finfo(np.float64).eps)]
)
def test_exact_route_floor_bounds_its_error(dtype, eps):
    x = planted(400, 300, np.geomspace(5, 1e-6, 300), seed=14)
    got = linalg.exact_svd(x.astype(dtype))
    assert got.floor == pytest.approx(eps * 400 * got.s[0])
    within_floor(got.s, ref_sigma(x.astype(dtype).astype(np.float64)), got.floor)


@pytest.mark.parametrize("m,n,r", [(4096, 1024, 16), (300, 5000, 8), (64, 48, 40)])
def test_factored_route_is_within_its_bound(m, n, r):
    rng = np.random.default_rng(15)
    b = (rng.standard_normal((m, r)) * np.geomspace(1, 1e-3, r)).astype(np.float16).astype(np.float64)
    a = (rng.standard_normal((r, n)) / np.sqrt(n)).astype(np.float16).astype(np.float64)
    got = linalg.factored_svd(b, a, 2.0)
    ref = ref_sigma(2.0 * (b @ a))[: min(m, n, r)]
    assert got.floor == pytest.approx(
        linalg.factored_floor((m, n), r, 2.0, np.linalg.norm(b), np.linalg.norm(a))
    )
    within_floor(got.s, ref, got.floor)
    np.testing.assert_allclose(got.s, ref, rtol=1e-10)


def test_factored_route_falls_back_to_householder_when_ill_conditioned():
    # a factor of condition 1e12 breaks CholeskyQR2's condition; Householder QR keeps the small values exact
    sig = [1.0, 1e-3, 1e-6, 1e-9, 1e-12]
    b, a = planted_factors(300, 200, sig, seed=16)
    assert linalg.qr.cholqr2_r(b) is None  # the condition check refuses it
    got = linalg.factored_svd(b, a)
    within_floor(got.s, sig, got.floor)
    assert_sigma_close(got.s[:3], sig[:3], rtol=1e-8)


def test_factored_route_of_a_zero_factor():
    got = linalg.factored_svd(np.zeros((50, 4)), np.ones((4, 30)))
    assert np.all(np.asarray(got.s) == 0) and got.fro_norm == 0 and got.floor == 0


def test_kronecker_floor_combines_the_factors():
    a, b = (
        linalg.exact_svd(planted(6, 5, [3.0, 1.0], seed=1)),
        linalg.exact_svd(planted(4, 7, [2.0, 0.5], seed=2)),
    )
    k = linalg.kronecker_svd(a, b, -1.5)
    assert k.floor == pytest.approx(1.5 * (3.0 * b.floor + 2.0 * a.floor + a.floor * b.floor), rel=1e-9)


def test_routes_round_the_same_on_any_number_of_threads():
    """The CPU routes give bit-identical values on 1 and 2 BLAS threads (tables repeat whatever --workers)."""
    from threadpoolctl import threadpool_limits

    x = planted(1200, 700, np.geomspace(3, 1e-5, 700), seed=18) + 1e-7
    b, a = planted_factors(3000, 2000, list(np.geomspace(4, 1e-3, 32)), seed=19)
    runs = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            runs.append(
                (
                    linalg.gram_svd_dense(x).s,
                    linalg.factored_svd(b, a).s,
                    linalg.exact_svd(x[:300, :200]).s,
                    linalg.gram_svd((x[i : i + 256] for i in range(0, 1200, 256)), 1200, 700).s,
                )
            )
    for one, two in zip(*runs):
        assert np.array_equal(one, two)
