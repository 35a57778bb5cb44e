"""lorascope/checkpoint/dtypes.py: stored dtypes, and raw bytes widened exactly to float32 without torch."""

import numpy as np
import pytest
import torch

from lorascope.checkpoint.dtypes import (
    DTYPE_BITS,
    FLOAT_DTYPES,
    NUMPY_NATIVE_TORCH,
    TensorInfo,
    bytes_to_numpy,
)


@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float16, torch.float32]
)
def test_bytes_widen_exactly_as_torch_converts(dtype):
    x = (torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    raw = bytearray(x.contiguous().view(torch.uint8).numpy().tobytes())
    got = bytes_to_numpy(raw, str(dtype).removeprefix("torch."), (6, 5))
    np.testing.assert_array_equal(got.astype(np.float32), x.float().numpy())


def test_float8_special_values():
    e4m3 = bytes_to_numpy(bytearray([0x7F, 0x00, 0x80, 0x7E]), "float8_e4m3fn", (4,))
    assert np.isnan(e4m3[0]) and e4m3[1] == 0 and e4m3[2] == 0 and e4m3[3] == 448.0  # no infinity in e4m3fn
    e5m2 = bytes_to_numpy(bytearray([0x7C, 0xFC, 0x7B]), "float8_e5m2", (3,))
    assert e5m2[0] == np.inf and e5m2[1] == -np.inf and e5m2[2] == 57344.0


def test_tensor_info_sizes():
    info = TensorInfo("w", (4, 3, 2), "bfloat16")
    assert info.numel == 24 and info.nbytes == 48 and info.is_float
    assert not TensorInfo("i", (3,), "int64").is_float and DTYPE_BITS["float8_e4m3fn"] == 8
    assert (
        "float16" in FLOAT_DTYPES
        and torch.float32 in NUMPY_NATIVE_TORCH
        and torch.bfloat16 not in NUMPY_NATIVE_TORCH
    )
