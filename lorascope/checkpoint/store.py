"""Tensor stores: a flat mapping key → tensor over files on disk, read lazily.

``keys()`` and ``info(key)`` (shape, dtype) never read tensor data: safetensors headers are parsed
directly and torch pickles are opened with ``mmap=True``. ``get(key)`` reads one tensor as a torch
tensor in its stored dtype; ``get_numpy(key)`` reads it as a floating numpy array without importing
torch (bfloat16 and float8 are widened exactly to float32), which keeps adapter-only runs light.
Stores hold paths, not open handles, so they pickle (for worker processes and Ray tasks).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError

if TYPE_CHECKING:
    import torch

# safetensors dtype tags -> torch dtype names
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                "float8_e4m3fnuz", "float8_e5m2fnuz"}
_MAX_HEADER = 100 * 1024 * 1024
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
        """One tensor as stored (its own dtype), on the CPU."""
        self.info(key)
        return self._read(key)

    def get_numpy(self, key: str) -> np.ndarray:
        """One tensor as a numpy array (bfloat16 and float8 widened to float32), without importing torch."""
        self.info(key)
        return self._read_numpy(key)

    def files(self) -> list[Path]:
        return [self.path]

    def _read(self, key: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_numpy(self, key: str) -> np.ndarray:
        t = self._read(key)
        return (t if t.dtype in _NUMPY_NATIVE_TORCH else t.float()).numpy()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._TRANSIENT:
            if name in state:
                state[name] = None
        return state


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], dict[str, tuple[int, int]]]:
    """Tensor infos, metadata and absolute byte ranges from a safetensors header, validated against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LorascopeError(f"{path} is not a safetensors file: it is only {size} bytes long.")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > _MAX_HEADER or 8 + n > size:
            raise LorascopeError(
                f"{path} is not a valid safetensors file: its header length ({n} bytes) does not fit "
                f"the file ({size} bytes). The file may be truncated or in another format."
            )
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LorascopeError(f"{path} is not a valid safetensors file: its header is not JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise LorascopeError(f"{path} is not a valid safetensors file: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    spans: dict[str, tuple[int, int]] = {}
    problems = []
    for key, entry in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            start, end = entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            problems.append(f"{key}: entry {str(entry)[:80]} is not a known dtype/shape/offsets triple")
            continue
        if 8 + n + end > size:
            problems.append(f"{key}: data ends at byte {8 + n + end}, past the end of the file ({size})")
            continue
        infos[key] = TensorInfo(key, shape, dtype)
        spans[key] = (8 + n + start, 8 + n + end)
    if problems:
        raise LorascopeError(f"{path} has a damaged safetensors header:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    return infos, {str(k): str(v) for k, v in metadata.items()}, spans


class SafetensorsFile(TensorStore):
    """A safetensors file read one tensor at a time with plain reads (no mmap).

    Only the bytes of the requested tensor are read into fresh memory, so the process's resident
    memory holds the tensors in use and nothing else, however large the file.
    """

    format = "safetensors"

    def _load(self) -> None:
        self._infos, self.metadata, self._spans = read_safetensors_header(self.path)

    def _bytes(self, key: str) -> bytearray:
        start, end = self._spans[key]
        buf = bytearray(end - start)
        with open(self.path, "rb") as fh:
            fh.seek(start)
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

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refused(path, exc) from None
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise LorascopeError(f"{path} could not be read as a torch checkpoint: {exc}") from None
        try:  # legacy (non-zip) serialization: no mmap possible
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc2:
            raise _unpickling_refused(path, exc2) from None
        except Exception as exc2:  # noqa: BLE001 - any failure here is a bad file
            raise LorascopeError(f"{path} could not be read as a torch checkpoint: {exc2}") from None
    except (EOFError, OSError, ValueError) as exc:
        raise LorascopeError(f"{path} could not be read as a torch checkpoint: {exc}") from None
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


# ---- opening files -------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: Path) -> str:
    """'safetensors', 'torch', 'index' or 'unknown' from a file's first bytes, not its extension."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(ZIP_MAGIC) or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 1 < n <= _MAX_HEADER and head[8:9] == b"{" and 8 + n <= path.stat().st_size:
            return "safetensors"
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


def open_index(path: Path) -> MultiFileStore:
    """A sharded checkpoint from its ``*.index.json`` (model.safetensors.index.json, pytorch_model.bin.index.json)."""
    try:
        index = json.loads(path.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise LorascopeError(
            f"{path} is not a sharded-checkpoint index: expected a JSON object with a 'weight_map' "
            "mapping tensor names to shard files."
        ) from None
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (path.parent / n).is_file()]
    if missing:
        raise LorascopeError(f"{path} names shard files that are not there: {', '.join(missing[:5])}")
    parts = [open_file(path.parent / n) for n in names]
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
