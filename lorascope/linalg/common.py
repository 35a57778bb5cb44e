"""What every SVD route shares: the ``SVD`` result, precisions and their ε, numpy ⇄ torch arrays, the device,
deterministic signs, exact sums of squares, and LAPACK on one BLAS thread (so a spectrum is bit-for-bit the
same however many modules are computed at once).
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .forms import is_torch

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "float64")
EPS64 = float(np.finfo(np.float64).eps)


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[precision]


def eps_of(dtype: Any) -> float:
    """Machine epsilon of a numpy or torch floating dtype (float64 for anything wider or unknown)."""
    name = str(dtype).removeprefix("torch.")
    try:
        name = np.dtype(dtype).name  # numpy dtypes and scalar types (np.float32)
    except TypeError:
        pass
    return {
        "float32": float(np.finfo(np.float32).eps),
        "float16": float(np.finfo(np.float16).eps),
        "bfloat16": 2.0**-7,
    }.get(name, EPS64)


@dataclass
class SVD:
    """Singular values of one update, descending, on the CPU, in the array type of the input.

    ``u`` (m, k) and ``v`` (n, k) hold left and right singular vectors when asked for.
    ``complete`` is True when every singular value not in ``s`` is exactly zero.
    ``floor`` is the route's absolute error bound on every value (docs/METRICS.md, 'The numerical floor'):
    a computed value at or below it cannot be told from zero.
    """

    s: Any
    fro_norm: float
    method: str
    complete: bool
    u: Any = None
    v: Any = None
    floor: float = 0.0


def on_cpu(x: Any) -> bool:
    return not is_torch(x) or x.device.type == "cpu"


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A CPU torch tensor or numpy array as numpy (no copy where the dtype already fits)."""
    if is_torch(x):
        x = x.detach()
        try:
            x = x.numpy()
        except TypeError:  # bfloat16, float8: no numpy dtype; float32 holds them exactly
            x = x.float().numpy()
    return np.asarray(x, dtype=dtype)


def like(x: np.ndarray, template: Any) -> Any:
    """``x`` back in the array type of ``template`` (torch for torch inputs)."""
    if is_torch(template):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))
    return x


# ---- threads ----------------------------------------------------------------------------------------

# threadpoolctl controllers of the loaded BLAS libraries (numpy's; scipy's once scipy.linalg is loaded), by
# whether scipy.linalg was loaded when they were listed
_BLAS: dict[bool, list[Any]] = {}
_LOCK = threading.Lock()
_HELD = [0, []]  # threads inside one_thread(), and the thread counts to restore when the last one leaves


def blas_libraries() -> list[Any]:
    import sys

    key = "scipy.linalg" in sys.modules  # adapter runs never load scipy: numpy's BLAS is all there is
    if key not in _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS[key] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _BLAS[key]


@functools.cache
def blas_function(name: str) -> tuple[Any, Any] | None:
    """A CBLAS / LAPACKE function of the BLAS library numpy loaded, by its reference name (``cblas_dtrsm``,
    ``LAPACKE_dsyevd_2stage``), with the integer type of its interface; None where no loaded library exports
    it. Builds differ in how they decorate names: numpy 2's OpenBLAS (``scipy_`` prefix, ``64_`` suffix,
    64-bit integers), numpy 1's (``64_``), MKL and system libraries (plain names, 32-bit integers). Callers
    set ``argtypes`` from the integer type and keep a fallback for None.
    """
    import ctypes

    decorations = (("64_", ctypes.c_int64), ("_64", ctypes.c_int64), ("", ctypes.c_int32))
    for lib in blas_libraries():
        dll = getattr(lib, "dynlib", None)
        for prefix in ("scipy_", ""):
            for suffix, int_t in decorations:
                fn = getattr(dll, f"{prefix}{name}{suffix}", None) if dll is not None else None
                if fn is not None:
                    return fn, int_t
    return None


def _set_threads(lib: Any, n: int) -> None:
    # OpenBLAS's pool is process-wide; the reference count in one_thread() serializes changes, so the
    # direct setter is used rather than threadpoolctl's first-thread-controls rule
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run LAPACK on one BLAS thread: its blocked reductions then round the same whatever else runs.

    Reference-counted across Python threads: BLAS stays on one thread while any caller is inside, and
    the previous counts come back when the last one leaves (a few microseconds, so it wraps small calls).
    """
    libs = blas_libraries()
    with _LOCK:
        if _HELD[0] == 0:
            _HELD[1] = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                _set_threads(lib, 1)
        _HELD[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _HELD[0] -= 1
            if _HELD[0] == 0:
                for lib, n in zip(libs, _HELD[1]):
                    if n:
                        _set_threads(lib, n)


def sum_squares(x: Any, chunk: int = 1 << 20) -> float:
    """Σ x² in float64, by numpy's pairwise summation over fixed chunks: the same bits on any number of
    threads (a BLAS dot product splits its sum by thread). Numpy arrays or CPU torch tensors of any float
    dtype."""
    flat = as_numpy(x).reshape(-1)
    total = 0.0
    for i in range(0, flat.size, chunk):
        c = flat[i : i + chunk].astype(np.float64)
        total += float(np.add.reduce(c * c))
    return total


def svd_flip(u: Any, vh: Any) -> tuple[Any, Any]:
    """Deterministic signs: the largest-magnitude entry of each left vector is positive (sklearn's
    svd_flip)."""
    cols = np.arange(u.shape[1])
    if is_torch(u):
        import torch

        idx = u.abs().argmax(dim=0)
        signs = torch.sign(u[idx, torch.as_tensor(cols, device=u.device)])
    else:
        signs = np.sign(u[np.abs(u).argmax(axis=0), cols])
    signs[signs == 0] = 1
    return u * signs, vh * signs[:, None]


def cusolver_driver(t: Any) -> str | None:
    """'gesvd' for a CUDA tensor, None (torch's choice) otherwise.

    torch's default on CUDA can be cuSOLVER's Jacobi solver (gesvdj), which stops at a tolerance: in float32
    its values were off by up to 1.1e-3 of σ1 on an H200 (benchmarks/full_diff.py, two Llama-7B-shaped
    matrices), above the LAPACK bound ε·max(m, n)·σ1 that ``routes.exact_floor`` states. gesvd is the
    QR-based LAPACK algorithm, for which that bound holds.
    """
    return "gesvd" if getattr(getattr(t, "device", None), "type", "cpu") == "cuda" else None


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is an error the caller reports."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)
