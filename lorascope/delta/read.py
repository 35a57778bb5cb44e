"""Read one ``Delta``'s tensors and build the form of its ΔW: the I/O half and the build half, kept apart.

``fetch`` reads every stored part (and the base weight, where given) into CPU memory — as float64 numpy for
a factored family computed on the CPU (no torch import), else as stored, pinned for a GPU. ``build`` casts
them to the working type and calls the family's builder. Splitting the two lets the next module be read
while this one is computed. ``load_form`` does both.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..linalg import Form, resolve_device, torch_dtype
from .family import FAMILIES, Tensors
from .items import Delta, VectorDelta

# Where a computation runs: None = numpy on the CPU, else a torch device.
Device = Any


@dataclass
class Fetched:
    """One module's tensors in CPU memory: parts by name, plus ``base`` where a base weight is given."""

    delta: Delta
    device: Device
    arrays: dict[str, Any]
    read_seconds: float = 0.0


def pick_device(d: Delta, device: str) -> Device:
    """None (numpy on the CPU) for a factored family unless CUDA is named; else the resolved torch device."""
    if FAMILIES[d.family].numpy and not device.startswith("cuda"):
        return None
    return resolve_device(device)


def _pinned(t: Any, device: Device) -> Any:
    """Pinned memory when the compute device is a GPU, so the host-to-device copy can overlap."""
    return t.pin_memory() if device is not None and device.type == "cuda" else t


class SharedArrays:
    """The last few arrays read for parts several modules share (``Family.shared``), so the experts of one
    fused parameter read its factors once, not once per expert. Read-only arrays; thread-safe; bounded."""

    def __init__(self, size: int = 4):
        self.size = size
        # key -> (the store, kept alive so its id is not reused while cached; the array)
        self._arrays: OrderedDict[tuple, tuple[Any, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, ref: Any) -> np.ndarray:
        key = (id(ref.store), ref.key, ref.view, ref.rows, ref.index)
        with self._lock:
            if key in self._arrays:
                self._arrays.move_to_end(key)
                return self._arrays[key][1]
        array = ref.load_numpy()
        array.setflags(write=False)  # shared: a builder that writes must copy (Tensors.copy does)
        with self._lock:
            self._arrays[key] = (ref.store, array)
            while len(self._arrays) > self.size:
                self._arrays.popitem(last=False)
        return array


SHARED = SharedArrays()


def fetch(d: Delta, device: str = "cpu") -> Fetched:
    """Read one module's tensors (the I/O phase).

    Raises:
        LorascopeError: a tensor is missing, unreadable or holds NaN/Inf.
    """
    where = pick_device(d, device)
    start = time.perf_counter()
    if where is None:
        shared = FAMILIES[d.family].shared
        arrays = {
            part: SHARED.load(ref) if part in shared else ref.load_numpy() for part, ref in d.parts.items()
        }
        if d.base is not None:
            arrays["base"] = d.base.load_numpy(np.float32)
    else:
        arrays = {part: _pinned(ref.fetch(), where) for part, ref in d.parts.items()}
        if d.base is not None:
            arrays["base"] = _pinned(d.base.fetch(), where)
    return Fetched(d, where, arrays, time.perf_counter() - start)


def norm(t: Any) -> float:
    """‖t‖_F accumulated in float64 (torch tensor or numpy array; no float64 copy of a large matrix), on the
    CPU by fixed-chunk pairwise sums, which round the same on any number of threads."""
    if isinstance(t, np.ndarray) or t.device.type == "cpu":
        from ..linalg import sum_squares

        return float(np.sqrt(sum_squares(t)))
    import torch

    return float(torch.linalg.vector_norm(t, dtype=torch.float64).cpu())


def _caster(f: Fetched, precision: str) -> Any:
    if f.device is None:
        return lambda x, copy: np.array(x, dtype=np.float64, copy=copy)
    import torch

    from ..checkpoint.base import upcast

    # factored families stay in float64 whatever the device; dense ones use the working precision
    dtype = torch.float64 if FAMILIES[f.delta.family].numpy else torch_dtype(precision)
    return lambda x, copy: upcast(torch.as_tensor(x), dtype, f.device, copy)


def build(f: Fetched, precision: str = "float32") -> tuple[Form, float | None]:
    """(the form of ΔW, ‖W_base‖_F where a base is given) from fetched tensors; consumes ``f.arrays``."""
    base_norm = norm(f.arrays["base"]) if "base" in f.arrays else None
    tensors = Tensors(f.arrays, _caster(f, precision))
    f.arrays = {}
    return FAMILIES[f.delta.family].build(f.delta, tensors), base_norm


def load_form(d: Delta, precision: str = "float32", device: str = "cpu") -> Form:
    """The form of one module's ΔW, read from its checkpoint."""
    return build(fetch(d, device), precision)[0]


def form_from(
    family: str,
    tensors: dict[str, Any],
    scale: float = 1.0,
    params: dict[str, Any] | None = None,
    name: str = "module",
    shape: tuple[int, int] | None = None,
) -> Form:
    """The form of ΔW from tensors already in memory (a model being trained), by the family's own builder.

    Args:
        family: a key of ``FAMILIES``.
        tensors: the family's parts by name (torch tensors or numpy arrays, used as given), plus ``base``
            (W0 in (out, in) orientation) where the family needs it.
        scale: the module's scale s.
        params: family parameters (as a reader would declare them).
        name: for error messages.
        shape: ΔW's (m, n); needed where neither LoRA factors (up, down) nor a base weight tell it.

    Raises:
        ValueError: ``shape`` is needed and not given.
    """
    from ..checkpoint.base import AdapterModule

    up, down = tensors.get("up"), tensors.get("down")
    if shape is None and up is not None and down is not None:
        shape = (int(up.shape[0]), int(down.shape[1]))
    elif shape is None and "base" in tensors:
        shape = (int(tensors["base"].shape[0]), int(tensors["base"].shape[1]))
    if shape is None:
        raise ValueError(f"give ΔW's shape for a {family} update built from tensors in memory")
    rank = int(up.shape[1]) if up is not None else None
    module = AdapterModule(name, family, {}, shape, rank, None, scale, params=params or {})
    d = Delta(name, family, {}, shape, "memory", None, module)
    return FAMILIES[family].build(d, Tensors(tensors, lambda x, copy: x.clone() if copy else x))


def vector_update(v: VectorDelta) -> tuple[np.ndarray, np.ndarray | None]:
    """(Δv, v_base) of a 1-D update, float64."""
    tuned = v.tuned.load_numpy().reshape(-1)
    if v.is_update or v.base is None:
        return tuned, None
    base = v.base.load_numpy().reshape(-1)
    return tuned[: base.size] - base, base
