"""lorascope/linalg/common.py: what the SVD routes share — dtypes and ε, signs, exact sums, one BLAS
thread."""

import ctypes

import numpy as np
import pytest
import torch

from lorascope.linalg.common import (
    EPS64,
    PRECISIONS,
    as_numpy,
    eps_of,
    like,
    one_thread,
    resolve_device,
    sum_squares,
    svd_flip,
    torch_dtype,
)


def test_precisions_and_their_epsilon():
    assert PRECISIONS == ("float32", "float64") and torch_dtype("float32") is torch.float32
    assert (
        eps_of(np.float32) == np.finfo(np.float32).eps and eps_of(torch.float16) == np.finfo(np.float16).eps
    )
    assert eps_of(torch.bfloat16) == 2.0**-7 and eps_of("int64") == EPS64 == np.finfo(np.float64).eps


def test_sum_squares_is_float64_and_independent_of_chunking():
    x = np.random.default_rng(0).standard_normal(3_000_001).astype(np.float32)
    want = float(np.sum(x.astype(np.float64) ** 2))
    assert sum_squares(x) == pytest.approx(want, rel=1e-12)
    assert sum_squares(torch.from_numpy(x)) == sum_squares(x)  # torch and numpy inputs: the same bits
    assert sum_squares(torch.ones(4, dtype=torch.bfloat16)) == 4.0


def test_svd_flip_makes_the_largest_entry_of_each_left_vector_positive():
    u = np.array([[-3.0, 1.0], [1.0, -2.0]])
    vh = np.array([[1.0, 2.0], [3.0, 4.0]])
    u2, vh2 = svd_flip(u, vh)
    np.testing.assert_array_equal(u2, [[3.0, -1.0], [-1.0, 2.0]])
    np.testing.assert_array_equal(u2 @ vh2, u @ vh)  # the product is unchanged
    tu, tvh = svd_flip(torch.tensor(u), torch.tensor(vh))
    np.testing.assert_array_equal(tu.numpy(), u2)


def test_arrays_convert_both_ways_and_devices_resolve():
    t = torch.ones(2, dtype=torch.bfloat16)
    assert as_numpy(t).dtype == np.float32 and isinstance(like(np.ones(2), t), torch.Tensor)
    assert isinstance(like(np.ones(2), np.ones(2)), np.ndarray)
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    with one_thread(), one_thread():  # re-entrant
        pass


def test_blas_function_finds_numpys_openblas_symbols_and_answers_none_for_unknown_names():
    from threadpoolctl import threadpool_info

    from lorascope.linalg.common import blas_function

    assert blas_function("cblas_no_such_routine") is None
    if not any(i["internal_api"] == "openblas" for i in threadpool_info()):
        pytest.skip("numpy is not linked to OpenBLAS here; its symbol decorations are OpenBLAS's")
    fn, int_t = blas_function("cblas_dtrsm")  # numpy 2: scipy_cblas_dtrsm64_, 64-bit integers
    assert callable(fn) and int_t in (ctypes.c_int64, ctypes.c_int32)
