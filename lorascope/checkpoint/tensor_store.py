"""The lazy tensor store every reader builds on: a flat mapping key → tensor over files on disk.

``keys()`` and ``info(key)`` (shape, dtype) never read tensor data. ``get(key)`` reads one tensor as a torch
tensor in its stored dtype; ``get_numpy(key)`` reads it as a numpy array without importing torch (bfloat16 and
float8 are widened exactly to float32), which keeps adapter-only runs light; ``get_rows(key, start, stop)``
reads a block of rows of a matrix, so a matrix larger than memory can be streamed. A whole-tensor read larger
than ``lorascope.limits.read_limit()`` is refused with the bytes it needs, never attempted. Stores hold paths,
not open handles, so they pickle (for worker processes and Ray tasks). ``MultiFileStore`` joins shards; the
file formats are ``safetensors_file`` and ``torch_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from ..limits import check_read
from .dtypes import DTYPE_BITS, NUMPY_NATIVE_TORCH, TensorInfo, numpy_dtype

if TYPE_CHECKING:
    import torch


class TensorStore:
    """Base class: subclasses fill the index (``_infos``: key → TensorInfo) in ``_load`` and implement
    ``_read``.

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
            raise LorascopeError(
                f"{self.path}: tensor {key} has shape {list(info.shape)}; rows are read "
                "from "
                "matrices (two or more dimensions) only."
            )
        rows = info.shape[0]
        if isinstance(start, bool) or isinstance(stop, bool) or not (0 <= int(start) <= int(stop) <= rows):
            raise LorascopeError(
                f"{self.path}: rows [{start}, {stop}) of tensor {key} do not lie within its {rows} rows."
            )
        start, stop = int(start), int(stop)
        cols = info.numel // rows if rows else 0
        check_read(
            (stop - start) * cols * DTYPE_BITS.get(info.dtype, 8) // 8,
            f"{self.path}: rows [{start}, {stop}) of tensor {key}",
        )
        if start == stop:
            return np.empty((0, cols), dtype=numpy_dtype(info.dtype))
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
        if t.dtype not in NUMPY_NATIVE_TORCH and not t.is_floating_point():
            dtype = str(t.dtype).removeprefix("torch.")
            raise LorascopeError(
                f"{self.path}: tensor {key} is {dtype}; lorascope reads real floating-point "
                "(and integer) tensors, and a cast would drop part of it."
            )
        return (t if t.dtype in NUMPY_NATIVE_TORCH else t.float()).numpy()

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
                    f"{path} lists {len(missing)} tensor(s) that no shard holds, e.g. "
                    f"{', '.join(missing[:5])}. A shard may be missing or incomplete."
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
            raise LorascopeError(
                f"{self.path}: tensors stored twice across shards:\n"
                + "\n".join(f"  - {d}" for d in duplicates[:20])
            )
        self._owner, self._infos = owner, infos

    def files(self) -> list[Path]:
        return [p.path for p in self.parts]

    def _read(self, key: str) -> torch.Tensor:
        return self.parts[self._owner[key]].get(key)  # type: ignore[index]

    def _read_numpy(self, key: str) -> np.ndarray:
        return self.parts[self._owner[key]].get_numpy(key)  # type: ignore[index]

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        return self.parts[self._owner[key]].get_rows(key, start, stop)  # type: ignore[index]
