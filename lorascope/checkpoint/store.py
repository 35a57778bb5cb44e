"""Tensor stores: a flat mapping key → tensor over files on disk, read lazily.

``keys()`` and ``info(key)`` (shape, dtype) never read tensor data: safetensors headers are parsed
with every rule the safetensors library enforces (and the file is then opened by the library itself,
which must accept it too), and torch pickles are opened with ``weights_only=True`` and ``mmap=True``.
``get(key)`` reads one tensor as a torch tensor in its stored dtype; ``get_numpy(key)`` reads it as a
numpy array without importing torch (bfloat16 and float8 are widened exactly to float32), which keeps
adapter-only runs light; ``get_rows(key, start, stop)`` reads a block of rows of a matrix, so a matrix
larger than memory can be streamed. A whole-tensor read larger than ``lorascope.limits.read_limit()`` is
refused with the bytes it needs, never attempted. Files an index names must lie inside its folder.
Stores hold paths, not open handles, so they pickle (for worker processes and Ray tasks).
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from ..limits import MAX_SAFETENSORS_HEADER, MAX_SHARDS, check_read, loads_json, read_json

if TYPE_CHECKING:
    import torch

# safetensors dtype tags -> torch dtype names
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
# dtypes the safetensors library accepts that lorascope does not read (listed, so such tensors are skipped and
# the file is not refused)
OTHER_SAFETENSORS_DTYPES = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "C64": 64}
DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "float8_e4m3fn": 8,
              "float8_e5m2": 8, "int64": 64, "int32": 32, "int16": 16, "int8": 8, "uint8": 8, "bool": 8,
              "uint16": 16, "uint32": 32, "uint64": 64, "float8_e4m3fnuz": 8, "float8_e5m2fnuz": 8,
              "complex64": 64, "complex128": 128,
              **OTHER_SAFETENSORS_DTYPES}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                "float8_e4m3fnuz", "float8_e5m2fnuz"}
_MAX_HEADER = MAX_SAFETENSORS_HEADER
NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "int64": np.int64,
                "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
                "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


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


class _NativeDtypes:
    """torch dtypes numpy represents exactly (checked without importing torch at module load)."""

    def __contains__(self, dtype: Any) -> bool:
        return str(dtype).removeprefix("torch.") in NUMPY_DTYPES


_NUMPY_NATIVE_TORCH = _NativeDtypes()


class TensorStore:
    """Base class: subclasses fill the index (``_infos``: key → TensorInfo) in ``_load`` and implement ``_read``.

    The index is built when the store is opened (so bad files fail early) and left out when the store
    is pickled: a worker rebuilds it from the file headers on first use, so tasks stay small.
    """

    format = "tensors"
    _TRANSIENT = ("_infos", "_spans", "_owner", "_state_dict")

    def __init__(self, path: Path):
        self.path = Path(path)
        self._infos: dict[str, TensorInfo] | None = None
        self.metadata: dict[str, str] = {}
        self._load()

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _index(self) -> dict[str, TensorInfo]:
        if self._infos is None:
            self._load()
        return self._infos  # type: ignore[return-value]

    def keys(self) -> list[str]:
        return list(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def info(self, key: str) -> TensorInfo:
        try:
            return self._index()[key]
        except KeyError:
            raise LorascopeError(f"{self.path}: no tensor named {key!r}") from None

    def get(self, key: str) -> torch.Tensor:
        """One tensor as stored (its own dtype), on the CPU.

        Raises:
            LorascopeError: no such key, or the tensor is larger than ``limits.read_limit()`` (use
            ``get_rows``).
        """
        self._check_whole(key)
        return self._read(key)

    def get_numpy(self, key: str) -> np.ndarray:
        """One tensor as a numpy array (bfloat16 and float8 widened to float32), without importing torch.

        Raises:
            LorascopeError: no such key, or the tensor is larger than ``limits.read_limit()`` (use
            ``get_rows``).
        """
        self._check_whole(key)
        return self._read_numpy(key)

    def get_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of a matrix as a numpy array of shape (stop − start, cols).

        A tensor of more than two dimensions is read as the matrix (shape[0], prod(shape[1:])) — a conv
        kernel (out, in, kh, kw) as (out, in·kh·kw), as ``TensorRef`` flattens it. The dtype is widened as
        ``get_numpy`` widens it (bfloat16 and float8 to float32; float16, float32, float64 kept). Only the
        bytes of those rows are read: safetensors' ``safe_open(..., framework="numpy").get_slice`` for dtypes
        numpy has, the rows' byte range for bfloat16 and float8, a slice of the memory-mapped storage for
        torch pickles.

        Raises:
            LorascopeError: no such key, a tensor of fewer than two dimensions, a range outside
                ``0 ≤ start ≤ stop ≤ shape[0]``, or a block larger than ``limits.read_limit()``.
        """
        info = self.info(key)
        if len(info.shape) < 2:
            raise LorascopeError(f"{self.path}: tensor {key} has shape {list(info.shape)}; rows are read "
                                 "from "
                                 "matrices (two or more dimensions) only.")
        rows = info.shape[0]
        if isinstance(start, bool) or isinstance(stop, bool) or not (0 <= int(start) <= int(stop) <= rows):
            raise LorascopeError(f"{self.path}: rows [{start}, {stop}) of tensor {key} do not lie within its "
                                 f"{rows} rows.")
        start, stop = int(start), int(stop)
        cols = info.numel // rows if rows else 0
        check_read((stop - start) * cols * DTYPE_BITS.get(info.dtype, 8) // 8,
                   f"{self.path}: rows [{start}, {stop}) of tensor {key}")
        if start == stop:
            return np.empty((0, cols), dtype=_numpy_dtype(info.dtype))
        return self._read_rows(key, start, stop).reshape(stop - start, cols)

    def _check_whole(self, key: str) -> None:
        info = self.info(key)
        check_read(info.nbytes, f"{self.path}: tensor {key} {list(info.shape)} {info.dtype}")

    def files(self) -> list[Path]:
        return [self.path]

    def _read(self, key: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_numpy(self, key: str) -> np.ndarray:
        t = self._read(key)
        if t.dtype not in _NUMPY_NATIVE_TORCH and not t.is_floating_point():
            dtype = str(t.dtype).removeprefix("torch.")
            raise LorascopeError(f"{self.path}: tensor {key} is {dtype}; lorascope reads real floating-point "
                                 "(and integer) tensors, and a cast would drop part of it.")
        return (t if t.dtype in _NUMPY_NATIVE_TORCH else t.float()).numpy()

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows of one tensor; subclasses read only those bytes, this fallback reads the tensor whole."""
        whole = self.get_numpy(key)
        return whole.reshape(whole.shape[0], -1)[start:stop]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._TRANSIENT:
            if name in state:
                state[name] = None
        return state


def _numpy_dtype(dtype: str) -> Any:
    """The numpy dtype ``get_numpy`` returns for a stored dtype (float32 for the widened ones)."""
    return NUMPY_DTYPES.get(dtype, np.float32)


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


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], dict[str, tuple[int, int]]]:
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
            problems.append(f"{key}: data_offsets [{start}, {end}] span {end - start} bytes, but shape "
                            f"{list(shape)} of {dtype} needs {bits / 8:g}")
            continue
        infos[key] = info
        spans[key] = (start, end)
    buffer = size - 8 - n
    expected = 0
    for key, (start, end) in sorted(spans.items(), key=lambda kv: kv[1]):
        if start != expected:
            what = ("overlaps the tensor before it" if start < expected
                    else f"leaves bytes {expected}–{start} unused")
            problems.append(f"{key}: data starts at offset {start}, where {expected} was expected "
                            f"(it {what})")
        expected = max(expected, end)
    if not problems and expected != buffer:
        where = "past the end of the file (truncated)" if expected > buffer else "before the end of the file"
        problems.append(f"the tensors' data ends at offset {expected}, {where}: the data buffer is "
                        f"{buffer} bytes")
    if problems:
        raise LorascopeError(f"{path} has a damaged safetensors header (the safetensors library refuses such "
                             "files too):\n" + "\n".join(f"  - {p}" for p in problems[:20]))
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


def _unpickling_refused(path: Path, exc: Exception) -> LorascopeError:
    return LorascopeError(
        f"{path} cannot be loaded safely: it is a pickle that needs to run code to unpickle "
        f"(torch.load with weights_only=True refused it: {str(exc).splitlines()[0][:200]}). "
        "lorascope loads pickles only with weights_only=True. Re-save the state dict with "
        "torch.save(model.state_dict(), path) or convert it to safetensors."
    )


def load_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torch pickle, with weights_only=True (and mmap where the format allows)."""
    import torch

    # torch.load would hand such a name to the safetensors reader: load by content
    if path.suffix == ".safetensors":
        check_read(path.stat().st_size, f"{path} (a torch pickle named like a safetensors file)")
        try:
            with open(path, "rb") as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise _unpickling_refused(path, exc) from None
        except Exception as exc:  # noqa: BLE001 - torch.load raises many types on damaged files
            raise LorascopeError(f"{path} could not be read as a torch checkpoint: "
                                 f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
        return _find_state_dict(path, obj)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refused(path, exc) from None
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise LorascopeError(f"{path} could not be read as a torch checkpoint: {exc}") from None
        try:  # legacy (non-zip) serialization: no mmap possible, the file is read whole
            check_read(path.stat().st_size, f"{path} (a legacy torch pickle, which cannot be memory-mapped)")
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except LorascopeError:
            raise
        except pickle.UnpicklingError as exc2:
            raise _unpickling_refused(path, exc2) from None
        except Exception as exc2:  # noqa: BLE001 - any failure here is a bad file
            raise LorascopeError(f"{path} could not be read as a torch checkpoint: {exc2}") from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on damaged or hostile files
        raise LorascopeError(f"{path} could not be read as a torch checkpoint: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    return _find_state_dict(path, obj)


def _find_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise LorascopeError(
        f"{path} holds no state dict: expected a mapping of names to tensors (possibly under "
        f"'state_dict' or 'model'), found {type(obj).__name__}."
    )


class TorchFile(TensorStore):
    format = "torch"

    def _load(self) -> None:
        state = load_torch_state(self.path)
        self._infos = {k: TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
        self._state_dict = state

    def _read(self, key: str) -> torch.Tensor:
        if self._state_dict is None:
            self._load()
        return self._state_dict[key]  # type: ignore[index]

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        t = self._read(key)
        if t.dtype not in _NUMPY_NATIVE_TORCH and not t.is_floating_point():
            return self._read_numpy(key)  # refused there, with the reason
        # a view of the memory-mapped storage: only these rows are read
        t = t[start:stop].reshape(stop - start, -1)
        return (t.clone() if t.dtype in _NUMPY_NATIVE_TORCH else t.float()).numpy()


class MultiFileStore(TensorStore):
    """Several files seen as one store (sharded checkpoints, with or without an index)."""

    format = "sharded"

    def __init__(self, path: Path, parts: list[TensorStore], weight_map: dict[str, str] | None = None):
        self.parts = parts
        self._owner: dict[str, int] | None = None
        super().__init__(path)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._index()))
            if missing:
                raise LorascopeError(
                    f"{path} lists {len(missing)} tensor(s) that no shard holds, e.g. {', '.join(missing[:5])}. "
                    "A shard may be missing or incomplete."
                )
        self.format = f"{parts[0].format}-sharded" if parts else "sharded"

    def _load(self) -> None:
        owner: dict[str, int] = {}
        infos: dict[str, TensorInfo] = {}
        duplicates = []
        for i, part in enumerate(self.parts):
            for key in part.keys():
                if key in owner:
                    duplicates.append(f"{key} (in {self.parts[owner[key]].path.name} and {part.path.name})")
                owner[key] = i
                infos[key] = part.info(key)
            self.metadata.update(part.metadata)
        if duplicates:
            raise LorascopeError(f"{self.path}: tensors stored twice across shards:\n" + "\n".join(f"  - {d}" for d in duplicates[:20]))
        self._owner, self._infos = owner, infos

    def files(self) -> list[Path]:
        return [p.path for p in self.parts]

    def _read(self, key: str) -> torch.Tensor:
        return self.parts[self._owner[key]].get(key)  # type: ignore[index]

    def _read_numpy(self, key: str) -> np.ndarray:
        return self.parts[self._owner[key]].get_numpy(key)  # type: ignore[index]

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        return self.parts[self._owner[key]].get_rows(key, start, stop)  # type: ignore[index]


# ---- opening files -------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: Path) -> str:
    """'safetensors', 'torch', 'index' or 'unknown' from a file's first bytes, not its extension."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    # safetensors first: a header length whose low byte is 0x80 looks like a pickle's protocol opcode
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 1 < n <= _MAX_HEADER and head[8:].lstrip()[:1] in (b"{", b"") and 8 + n <= path.stat().st_size:
            return "safetensors"
    if head.startswith(ZIP_MAGIC) or head[:1] == b"\x80":
        return "torch"
    if head.lstrip()[:1] == b"{":
        return "index"
    return "unknown"


def open_file(path: Path) -> TensorStore:
    kind = sniff(path)
    if kind == "safetensors":
        return SafetensorsFile(path)
    if kind == "torch":
        return TorchFile(path)
    if kind == "index":
        return open_index(path)
    raise LorascopeError(
        f"{path} is neither a safetensors file, a torch checkpoint nor a sharded index "
        "(recognized from the file's first bytes, not its name)."
    )


def member(folder: Path, name: Any, what: str) -> Path:
    """The file ``name`` inside ``folder``: a relative path that resolves, after symlinks, inside the folder.

    A Hugging Face hub cache snapshot (``…/snapshots/<revision>/``) is the one documented exception: its files
    are symlinks into the repository's ``…/blobs/`` folder, and may resolve there.

    Raises:
        LorascopeError: an absolute path, a path with '..', a name that is not text, or one that resolves
            outside the folder.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise LorascopeError(f"{what} names a file {name!r}; expected a file name inside {folder}.")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
        raise LorascopeError(f"{what} names {name!r}, which is outside its folder {folder}; every file a "
                             "checkpoint names must lie in the checkpoint's own folder.")
    root = folder.resolve()
    target = (folder / rel).resolve()
    if not (target == root or root in target.parents or _hub_blob(root, target)):
        raise LorascopeError(f"{what} names {name!r}, which resolves (after symlinks) to {target}, outside "
                             f"its folder {root}; every file a checkpoint names must lie in the checkpoint's "
                             "own folder.")
    return folder / rel


def _hub_blob(root: Path, target: Path) -> bool:
    """Whether ``target`` is a blob of the Hugging Face hub cache repository whose snapshot folder is
    ``root``."""
    return root.parent.name == "snapshots" and target.parent == root.parent.parent / "blobs"


def open_index(path: Path) -> MultiFileStore:
    """A sharded checkpoint from its ``*.index.json`` (model.safetensors.index.json,
    pytorch_model.bin.index.json).

    Every shard must be a tensor file inside the index's folder (``member``); an index naming itself or
    another
    index is refused, so no index can lead to a cycle.
    """
    index = read_json(path, "a sharded-checkpoint index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise LorascopeError(
            f"{path} is not a sharded-checkpoint index: expected a JSON object with a 'weight_map' "
            "mapping tensor names to shard file names."
        )
    names = sorted(set(weight_map.values()))
    if len(names) > MAX_SHARDS:
        raise LorascopeError(f"{path} names {len(names):,} shard files; at most {MAX_SHARDS:,} are read.")
    shards = [member(path.parent, n, f"{path} (weight_map)") for n in names]
    missing = [n for n, f in zip(names, shards) if not f.is_file()]
    if missing:
        raise LorascopeError(f"{path} names shard files that are not there: {', '.join(missing[:5])}")
    me = path.resolve()
    for name, shard in zip(names, shards):
        if shard.resolve() == me:
            raise LorascopeError(f"{path} names itself ({name!r}) as a shard; a shard must be a tensor file.")
        if sniff(shard) == "index":
            raise LorascopeError(f"{path} names {name!r} as a shard, but that is an index too; indexes do "
                                 "not nest "
                                 "(a shard must be a safetensors or torch file).")
    parts = [open_file(f) for f in shards]
    return MultiFileStore(path, parts, weight_map)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
