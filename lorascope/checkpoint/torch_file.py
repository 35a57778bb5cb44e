"""Torch pickles (.bin, .pt, .pth): state dicts loaded only with ``weights_only=True``, memory-mapped.

A pickle that needs to run code to unpickle is refused with how to re-save it; rows of a tensor are a slice
of the memory-mapped storage, so only those bytes are read.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from ..limits import check_read
from .dtypes import NUMPY_NATIVE_TORCH, TensorInfo
from .tensor_store import TensorStore

if TYPE_CHECKING:
    import torch


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
            raise LorascopeError(
                f"{path} could not be read as a torch checkpoint: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            ) from None
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
        raise LorascopeError(
            f"{path} could not be read as a torch checkpoint: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        ) from None
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
        self._infos = {
            k: TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()
        }
        self._state_dict = state

    def _read(self, key: str) -> torch.Tensor:
        if self._state_dict is None:
            self._load()
        return self._state_dict[key]  # type: ignore[index]

    def _read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        t = self._read(key)
        if t.dtype not in NUMPY_NATIVE_TORCH and not t.is_floating_point():
            return self._read_numpy(key)  # refused there, with the reason
        # a view of the memory-mapped storage: only these rows are read
        t = t[start:stop].reshape(stop - start, -1)
        return (t.clone() if t.dtype in NUMPY_NATIVE_TORCH else t.float()).numpy()
