"""Stored dtypes: their names and widths, and raw tensor bytes read as numpy without torch.

bfloat16 and float8 (OCP FP8 e4m3fn, e5m2) are widened exactly to float32; the dtypes numpy has are read as
they are. ``TensorInfo`` is what a store knows of a tensor before reading it: key, shape and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# safetensors dtype tags -> torch dtype names
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}
# dtypes the safetensors library accepts that lorascope does not read (listed, so such tensors are skipped and
# the file is not refused)
OTHER_SAFETENSORS_DTYPES = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "C64": 64}
DTYPE_BITS = {
    "float64": 64,
    "float32": 32,
    "float16": 16,
    "bfloat16": 16,
    "float8_e4m3fn": 8,
    "float8_e5m2": 8,
    "int64": 64,
    "int32": 32,
    "int16": 16,
    "int8": 8,
    "uint8": 8,
    "bool": 8,
    "uint16": 16,
    "uint32": 32,
    "uint64": 64,
    "float8_e4m3fnuz": 8,
    "float8_e5m2fnuz": 8,
    "complex64": 64,
    "complex128": 128,
    **OTHER_SAFETENSORS_DTYPES,
}
FLOAT_DTYPES = {
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
}
NUMPY_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
}


def _float8_table(exp_bits: int, man_bits: int, finite_only: bool) -> np.ndarray:
    """float32 value of every float8 bit pattern (sign, exponent, mantissa; OCP FP8 e4m3fn / e5m2)."""
    bias = 2 ** (exp_bits - 1) - 1
    top = 2**exp_bits - 1
    out = np.empty(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> man_bits) & top
        m = code & (2**man_bits - 1)
        if finite_only and e == top and m == 2**man_bits - 1:
            value = float("nan")  # e4m3fn: only S.1111.111 is NaN, there is no infinity
        elif not finite_only and e == top:
            value = float("inf") if m == 0 else float("nan")
        elif e == 0:
            value = m / 2**man_bits * 2.0 ** (1 - bias)
        else:
            value = (1 + m / 2**man_bits) * 2.0 ** (e - bias)
        out[code] = sign * value
    return out


_WIDEN = {
    "bfloat16": lambda b: (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32),
    "float8_e4m3fn": lambda b: _float8_table(4, 3, True)[np.frombuffer(b, np.uint8)],
    "float8_e5m2": lambda b: _float8_table(5, 2, False)[np.frombuffer(b, np.uint8)],
}


def bytes_to_numpy(buf: bytearray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A numpy array from raw little-endian tensor bytes; bfloat16 and float8 widened exactly to float32."""
    if dtype in _WIDEN:
        return _WIDEN[dtype](buf).reshape(shape)
    return np.frombuffer(buf, dtype=NUMPY_DTYPES[dtype]).reshape(shape)


def numpy_dtype(dtype: str) -> Any:
    """The numpy dtype ``get_numpy`` returns for a stored dtype (float32 for the widened ones)."""
    return NUMPY_DTYPES.get(dtype, np.float32)


class _NativeDtypes:
    """torch dtypes numpy represents exactly (checked without importing torch at module load)."""

    def __contains__(self, dtype: Any) -> bool:
        return str(dtype).removeprefix("torch.") in NUMPY_DTYPES


NUMPY_NATIVE_TORCH = _NativeDtypes()


@dataclass(frozen=True)
class TensorInfo:
    key: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "bfloat16"

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BITS.get(self.dtype, 8) // 8
