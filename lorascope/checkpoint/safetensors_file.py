"""safetensors files: the header parsed with every rule the safetensors library enforces, rows read by bytes.

``read_safetensors_header`` checks the header as the library does (and the file is then opened by the library
itself, which must accept it too), before any tensor is read; ``SafetensorsFile`` reads whole tensors or a
block of rows, only the bytes of those rows.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from ..limits import MAX_SAFETENSORS_HEADER, loads_json
from .dtypes import DTYPE_BITS, NUMPY_DTYPES, OTHER_SAFETENSORS_DTYPES, SAFETENSORS_DTYPES, TensorInfo
from .dtypes import bytes_to_numpy
from .tensor_store import TensorStore

if TYPE_CHECKING:
    import torch

_MAX_HEADER = MAX_SAFETENSORS_HEADER


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _header_entry(key: str, entry: Any) -> tuple[str, tuple[int, ...], int, int] | str:
    """(dtype, shape, start, end) of one header entry, or what is wrong with it."""
    if not isinstance(entry, dict):
        return f"entry is {type(entry).__name__}, not an object with dtype, shape and data_offsets"
    tag, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    dtype = SAFETENSORS_DTYPES.get(tag) if isinstance(tag, str) else None
    if dtype is None and not (isinstance(tag, str) and tag in OTHER_SAFETENSORS_DTYPES):
        return f"dtype {str(tag)[:40]!r} is not a safetensors dtype"
    if not isinstance(shape, list) or not all(_is_index(d) for d in shape):
        return f"shape {str(shape)[:60]} is not a list of non-negative integers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_index(o) for o in offsets)):
        return f"data_offsets {str(offsets)[:60]} is not a pair of non-negative integers"
    return dtype or tag, tuple(shape), offsets[0], offsets[1]


def read_safetensors_header(
    path: Path,
) -> tuple[dict[str, TensorInfo], dict[str, str], dict[str, tuple[int, int]]]:
    """Tensor infos, metadata and absolute byte ranges from a safetensors header.

    Enforces the rules of the safetensors library (``safetensors::tensor::Metadata::validate``): a header
    length of at most 100,000,000 bytes that fits the file, a JSON object starting with ``{``, string
    metadata, known dtypes, and data offsets that tile the data buffer exactly — sorted by offset, the first
    starting at 0, each starting where the previous ends, each span as long as shape × dtype, the last ending
    at the end of the file. Also refused: duplicate keys (JSON readers disagree on which counts).

    Raises:
        LorascopeError: naming the file and every problem found (up to 20).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LorascopeError(f"{path} is not a safetensors file: it is only {size} bytes long.")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            raise LorascopeError(
                f"{path} is not a valid safetensors file: its header length ({n} bytes) does not fit "
                f"the file ({size} bytes; at most {_MAX_HEADER} header bytes). The file may be truncated or "
                "in "
                "another format."
            )
        raw = fh.read(n)
    header = loads_json(raw, f"{path} (safetensors header)")
    if not isinstance(header, dict):
        raise LorascopeError(f"{path} is not a valid safetensors file: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    problems = []
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append("__metadata__ must map names to strings")
        metadata = {}
    infos: dict[str, TensorInfo] = {}
    spans: dict[str, tuple[int, int]] = {}
    for key, entry in header.items():
        parsed = _header_entry(key, entry)
        if isinstance(parsed, str):
            problems.append(f"{key}: {parsed}")
            continue
        dtype, shape, start, end = parsed
        info = TensorInfo(key, shape, dtype)
        bits = info.numel * DTYPE_BITS[dtype]
        if end < start or bits % 8 or end - start != bits // 8:
            problems.append(
                f"{key}: data_offsets [{start}, {end}] span {end - start} bytes, but shape "
                f"{list(shape)} of {dtype} needs {bits / 8:g}"
            )
            continue
        infos[key] = info
        spans[key] = (start, end)
    buffer = size - 8 - n
    expected = 0
    for key, (start, end) in sorted(spans.items(), key=lambda kv: kv[1]):
        if start != expected:
            what = (
                "overlaps the tensor before it"
                if start < expected
                else f"leaves bytes {expected}–{start} unused"
            )
            problems.append(
                f"{key}: data starts at offset {start}, where {expected} was expected (it {what})"
            )
        expected = max(expected, end)
    if not problems and expected != buffer:
        where = "past the end of the file (truncated)" if expected > buffer else "before the end of the file"
        problems.append(
            f"the tensors' data ends at offset {expected}, {where}: the data buffer is {buffer} bytes"
        )
    if problems:
        raise LorascopeError(
            f"{path} has a damaged safetensors header (the safetensors library refuses such "
            "files too):\n" + "\n".join(f"  - {p}" for p in problems[:20])
        )
    spans = {k: (8 + n + a, 8 + n + b) for k, (a, b) in spans.items()}
    return infos, {str(k): v for k, v in metadata.items()}, spans


def library_check(path: Path) -> None:
    """Open ``path`` with the safetensors library itself; its refusal becomes a LorascopeError naming the
    file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except Exception as exc:  # noqa: BLE001 - the library raises SafetensorError and OSError subclasses
        why = " ".join(str(exc).split())[:300]
        raise LorascopeError(f"{path} is refused by the safetensors library: {why}.") from None


class SafetensorsFile(TensorStore):
    """A safetensors file read one tensor at a time with plain reads (no mmap).

    Only the bytes of the requested tensor are read into fresh memory, so the process's resident
    memory holds the tensors in use and nothing else, however large the file.
    """

    format = "safetensors"

    def _load(self) -> None:
        self._infos, self.metadata, self._spans = read_safetensors_header(self.path)
        library_check(self.path)

    def _bytes(self, key: str, start: int | None = None, stop: int | None = None) -> bytearray:
        first, last = self._spans[key]
        lo, hi = (first, last) if start is None else (first + start, first + stop)  # type: ignore[operator]
        buf = bytearray(hi - lo)
        with open(self.path, "rb") as fh:
            fh.seek(lo)
            if fh.readinto(buf) != len(buf):
                raise LorascopeError(f"{self.path}: tensor {key} is cut short (the file is truncated)")
        return buf

    def _read(self, key: str) -> torch.Tensor:
        import torch

        info = self._infos[key]
        dtype = getattr(torch, info.dtype)
        buf = self._bytes(key)
        if not buf:
            return torch.empty(info.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def _read_numpy(self, key: str) -> np.ndarray:
        info = self._infos[key]
        return bytes_to_numpy(self._bytes(key), info.dtype, info.shape)

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        info = self._index()[key]
        if info.dtype in NUMPY_DTYPES:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="numpy") as fh:
                return fh.get_slice(key)[start:stop]
        row_bytes = info.numel // info.shape[0] * DTYPE_BITS[info.dtype] // 8
        cols = info.numel // info.shape[0]
        raw = self._bytes(key, start * row_bytes, stop * row_bytes)
        return bytes_to_numpy(raw, info.dtype, (stop - start, cols))
