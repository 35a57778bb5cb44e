"""Tensor stores: a flat mapping key → tensor over files on disk, read lazily.

``keys()`` and ``info(key)`` (shape, dtype) never read tensor data: safetensors headers are parsed
directly and torch pickles are opened with ``mmap=True``. ``get(key)`` reads one tensor. Stores
hold paths, not open handles, so they pickle (for worker processes and Ray tasks).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import LorascopeError

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


class TensorStore:
    """Base class: subclasses fill ``self._infos`` (key → TensorInfo) and implement ``_read``."""

    format = "tensors"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, key: str) -> bool:
        return key in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, key: str) -> TensorInfo:
        try:
            return self._infos[key]
        except KeyError:
            raise LorascopeError(f"{self.path}: no tensor named {key!r}") from None

    def get(self, key: str) -> torch.Tensor:
        """One tensor as stored (its own dtype), on the CPU."""
        self.info(key)
        return self._read(key)

    def files(self) -> list[Path]:
        return [self.path]

    def _read(self, key: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_handle", None)
        state.pop("_state_dict", None)
        return state


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and metadata from a safetensors header, validating it against the file size."""
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
    if problems:
        raise LorascopeError(f"{path} has a damaged safetensors header:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    return infos, {str(k): str(v) for k, v in metadata.items()}


class SafetensorsFile(TensorStore):
    format = "safetensors"

    def __init__(self, path: Path):
        super().__init__(path)
        self._infos, self.metadata = read_safetensors_header(self.path)
        self._handle = None

    def _read(self, key: str) -> torch.Tensor:
        if getattr(self, "_handle", None) is None:
            from safetensors import safe_open

            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
        return self._handle.get_tensor(key)


def _unpickling_refused(path: Path, exc: Exception) -> LorascopeError:
    return LorascopeError(
        f"{path} cannot be loaded safely: it is a pickle that needs to run code to unpickle "
        f"(torch.load with weights_only=True refused it: {str(exc).splitlines()[0][:200]}). "
        "lorascope loads pickles only with weights_only=True. Re-save the state dict with "
        "torch.save(model.state_dict(), path) or convert it to safetensors."
    )


def load_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torch pickle, with weights_only=True (and mmap where the format allows)."""
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

    def __init__(self, path: Path):
        super().__init__(path)
        state = load_torch_state(self.path)
        self._infos = {k: TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
        self._state_dict = state

    def _read(self, key: str) -> torch.Tensor:
        if getattr(self, "_state_dict", None) is None:
            self._state_dict = load_torch_state(self.path)
        return self._state_dict[key]


class MultiFileStore(TensorStore):
    """Several files seen as one store (sharded checkpoints, with or without an index)."""

    format = "sharded"

    def __init__(self, path: Path, parts: list[TensorStore], weight_map: dict[str, str] | None = None):
        super().__init__(path)
        self.parts = parts
        self._owner: dict[str, int] = {}
        duplicates = []
        for i, part in enumerate(parts):
            for key in part.keys():
                if key in self._owner:
                    duplicates.append(f"{key} (in {parts[self._owner[key]].path.name} and {part.path.name})")
                self._owner[key] = i
                self._infos[key] = part.info(key)
            self.metadata.update(part.metadata)
        if duplicates:
            raise LorascopeError(f"{path}: tensors stored twice across shards:\n" + "\n".join(f"  - {d}" for d in duplicates[:20]))
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._owner))
            if missing:
                raise LorascopeError(
                    f"{path} lists {len(missing)} tensor(s) that no shard holds, e.g. {', '.join(missing[:5])}. "
                    "A shard may be missing or incomplete."
                )
        self.format = f"{parts[0].format}-sharded" if parts else "sharded"

    def files(self) -> list[Path]:
        return [p.path for p in self.parts]

    def _read(self, key: str) -> torch.Tensor:
        return self.parts[self._owner[key]].get(key)


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


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
