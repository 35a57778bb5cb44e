"""Dense full-diff updates streamed in blocks, and the memory budget every analysis runs under.

A full fine-tune's ΔW = W_tuned − W_base is never held whole on the default path (float64, singular values
only): it is read in row blocks of its tall orientation M (``lorascope.linalg.Blocks``), each block the
float64 difference of the stored rows (exact for float32, float16 and bfloat16 weights), and only M's
float64 Gram matrix stays in memory (8·p² bytes, p = min(m, n)). A matrix whose stored rows are its long
side (wide as stored) is read in column blocks instead: from the two tensors held in their stored dtype when
the budget allows, else by one pass over the rows for every block of columns.

Block sizes depend on the matrix's shape only — not on the budget, the number of workers or the machine — so
the rounding of every sum, and therefore every number, is the same however the work is run. A background
thread reads the next blocks while the current one is multiplied.

Row reads use ``TensorStore.get_rows(key, start, stop)``; one expert of a stacked (E, R, C) tensor, which that
API reads as E rows, by the byte range of its rows (``_expert_rows``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import TensorRef
from .checkpoint.dtypes import NUMPY_NATIVE_TORCH, bytes_to_numpy
from .checkpoint.safetensors_file import SafetensorsFile
from .checkpoint.tensor_store import MultiFileStore
from .checkpoint.torch_file import TorchFile
from .errors import LorascopeError
from .linalg import sum_squares
from .units import human_bytes, parse_bytes

BLOCK_BYTES = 16 << 20  # one float64 block of M: 16 MiB, rows chosen from the shape alone
PREFETCH = 2  # blocks read ahead of the one being multiplied
MIN_BUDGET = 64 << 20
# bytes per value once read: bfloat16 and float8 are widened to float32 (``bytes_to_numpy``)
READ_ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 4,
    "float8_e4m3fn": 4,
    "float8_e5m2": 4,
}
STORED_ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}

# ---- the budget -----------------------------------------------------------------------------------------


def parse_memory(text: str | int) -> int:
    """Bytes from '768M', '2.5G', '4GiB', '1e9' or an int (``lorascope.units.parse_bytes``: K, M, G, T are
    powers of 1024; KB, MB, GB of 1000), at least ``MIN_BUDGET``.

    Raises:
        ValueError: not a positive size.
    """
    try:
        value = parse_bytes(text, "memory")
    except ValueError:
        raise ValueError(f"memory must be a size such as 768M, 2.5G or 4GiB, got {text!r}") from None
    if value < MIN_BUDGET:
        raise ValueError(f"memory must be at least {MIN_BUDGET >> 20} MiB, got {text!r} ({value} bytes)")
    return value


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where the system does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> tuple[int, str]:
    """(bytes, how it was chosen): 60 % of the memory available now, at least 256 MiB; 4 GiB if unknown."""
    avail = available_memory()
    if avail is None:
        return 4 << 30, "4 GiB (the system does not report its available memory)"
    return max(
        256 << 20, int(0.6 * avail)
    ), f"60% of the {avail / 2**30:.1f} GiB available when the run started"


# ---- reading rows ---------------------------------------------------------------------------------------


def _row_elems(shape: tuple[int, ...], index: int | None) -> tuple[int, int]:
    """(rows, values per row) of a stored tensor seen as a matrix; an expert slice offsets into (E·R, C)."""
    lead = shape[1:] if index is not None else shape
    per_row = 1
    for d in lead[1:]:
        per_row *= d
    return (lead[0] if lead else 1), per_row


def read_rows(ref: TensorRef, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of ``ref``'s matrix as stored (expert slice and flattening applied, never
    transposed), as a numpy array in the stored dtype widened as ``TensorStore.get_numpy`` widens (bfloat16 →
    float32)."""
    store = ref.store
    info = store.info(ref.key)
    rows, per_row = _row_elems(info.shape, ref.index)
    offset = 0 if ref.index is None else ref.index * rows
    if ref.index is None:
        arr = np.asarray(store.get_rows(ref.key, start, stop))
    else:
        arr = _expert_rows(store, ref.key, offset + start, offset + stop, per_row)
    return arr.reshape(stop - start, per_row)


def _expert_rows(store: Any, key: str, start: int, stop: int, per_row: int) -> np.ndarray:
    """Rows [start, stop) of a stacked tensor seen as (E·R, C): a byte range of a safetensors file, a slice
    of a memory-mapped torch pickle, else (other stores) the tensor read whole."""
    if isinstance(store, MultiFileStore):
        store._index()
        return _expert_rows(store.parts[store._owner[key]], key, start, stop, per_row)
    info = store.info(key)
    if isinstance(store, SafetensorsFile):
        store._index()
        begin, _ = store._spans[key]
        row_bytes = per_row * STORED_ITEMSIZE[info.dtype]
        buf = bytearray((stop - start) * row_bytes)
        with open(store.path, "rb") as fh:
            fh.seek(begin + start * row_bytes)
            if fh.readinto(buf) != len(buf):
                raise LorascopeError(f"{store.path}: tensor {key} is cut short (the file is truncated)")
        return bytes_to_numpy(buf, info.dtype, (stop - start, per_row))
    if isinstance(store, TorchFile):
        t = store.get(key).reshape(-1, per_row)[start:stop]  # a slice of the memory-mapped tensor
        return (t if t.dtype in NUMPY_NATIVE_TORCH else t.float()).numpy()
    return np.asarray(store.get_numpy(key)).reshape(-1, per_row)[start:stop]  # any other store: read whole


# ---- the blocks of ΔW -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one dense ΔW is streamed: its stored orientation, block sizes and memory."""

    stored: tuple[int, int]  # (a, b): ΔW as stored (ΔW itself, or ΔWᵀ for a transposed layout)
    by_rows: bool  # stored rows are M's rows (a ≥ b); else columns of the stored matrix are
    step: int  # rows (or columns) per block
    hold: bool  # column blocks: both stored tensors held in memory (else one pass per block)
    need: int  # bytes at the peak


def _itemsizes(ref: TensorRef) -> int:
    return READ_ITEMSIZE.get(ref.store.info(ref.key).dtype, 8)


def streamable(tuned: TensorRef, base: TensorRef) -> bool:
    """Whether both tensors can be read row by row as the same stored matrix (same arrangement and shape)."""
    same = tuned.view == base.view and tuned.shape == base.shape and len(tuned.shape) == 2
    return same and not (tuned.view == "transpose" and (tuned.rows is not None or base.rows is not None))


def stream_plan(tuned: TensorRef, base: TensorRef, budget: int) -> Plan:
    """Block sizes and the memory a streamed Gram route needs for ΔW = tuned − base.

    Raises:
        LorascopeError: not even the p×p Gram matrix and a few blocks fit in ``budget``.
    """
    stored = _stored_shape(tuned)
    a, b = stored
    p = min(a, b)
    by_rows = a >= b
    row_len = b if by_rows else a  # values per block row of M
    step = max(1, BLOCK_BYTES // (8 * row_len))
    read = _itemsizes(tuned) + _itemsizes(base)
    block = step * row_len * (8 + read)  # one float64 block of M and the stored rows it came from
    need = 8 * p * p + (PREFETCH + 2) * block
    if need > budget:
        raise LorascopeError(
            f"{tuned.store.path}: tensor {tuned.key} ({a}×{b}) needs at least {human_bytes(need, 'MiB')} to "
            f"stream (its {p}×{p} float64 Gram matrix and {PREFETCH + 2} blocks of rows), but the memory "
            f"budget is {human_bytes(budget, 'MiB')}. Give more with --memory (e.g. --memory "
            f"{_mib_ceil(need)}M), or leave this module out with --exclude."
        )
    hold = False
    if not by_rows:
        whole = a * b * read  # both stored tensors, widened as read
        hold = need + whole <= budget
        need += whole if hold else 0
    return Plan(stored, by_rows, step, hold, need)


def _stored_shape(ref: TensorRef) -> tuple[int, int]:
    shape = ref.shape
    return (int(shape[1]), int(shape[0])) if ref.view == "transpose" else (int(shape[0]), int(shape[1]))


def _mib_ceil(n: int) -> int:
    return -(-n // 2**20)


def delta_blocks(
    tuned: TensorRef, base: TensorRef, plan: Plan, base_sq: list[float] | None = None
) -> Callable[[], Iterator[np.ndarray]]:
    """A pass maker for ``lorascope.linalg.Blocks``: each call yields M's float64 blocks in order.

    ``base_sq`` (a one-element list) receives ‖W_base‖_F², summed block by block in float64.
    """

    def rows() -> Iterator[np.ndarray]:
        a, _ = plan.stored
        total = 0.0
        for start in range(0, a, plan.step):
            stop = min(a, start + plan.step)
            t, b = read_rows(tuned, start, stop), read_rows(base, start, stop)
            total += sum_squares(b)
            yield _difference(t, b, tuned, base, start, stop)
        if base_sq is not None:
            base_sq[0] = total

    def columns() -> Iterator[np.ndarray]:
        a, n_cols = plan.stored
        total = 0.0
        whole = (read_rows(tuned, 0, a), read_rows(base, 0, a)) if plan.hold else None
        for c0 in range(0, n_cols, plan.step):
            c1 = min(n_cols, c0 + plan.step)
            if whole is not None:
                t, b = whole[0][:, c0:c1], whole[1][:, c0:c1]
            else:
                t, b = _column_window(tuned, base, a, n_cols, c0, c1)
            total += sum_squares(b)
            yield _difference(t, b, tuned, base, 0, a).T  # (c1 − c0, a) in Fortran order: rows of M = ΔWᵀ
        if base_sq is not None:
            base_sq[0] = total

    source = rows if plan.by_rows else columns
    return lambda: prefetched(source)


def _column_window(
    tuned: TensorRef, base: TensorRef, a: int, n_cols: int, c0: int, c1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Columns [c0, c1) of both stored (a, n_cols) matrices,
    read row block by row block (one pass over the rows)."""
    step = max(1, BLOCK_BYTES // (8 * n_cols))
    parts_t, parts_b = [], []
    for r0 in range(0, a, step):
        r1 = min(a, r0 + step)
        parts_t.append(read_rows(tuned, r0, r1)[:, c0:c1].copy())
        parts_b.append(read_rows(base, r0, r1)[:, c0:c1].copy())
    return np.concatenate(parts_t), np.concatenate(parts_b)


def _difference(
    t: np.ndarray, b: np.ndarray, tuned: TensorRef, base: TensorRef, start: int, stop: int
) -> np.ndarray:
    """t − b in float64 (exact for stored float32 / float16 / bfloat16 values); NaN or Inf is refused."""
    d = np.subtract(t, b, dtype=np.float64)  # (rows, cols), C order
    if not np.isfinite(d).all():
        ref = tuned if not np.isfinite(t).all() else base
        bad, size = _count_non_finite(ref)
        raise LorascopeError(
            f"{ref.store.path}: tensor {ref.key} holds {bad} NaN or Inf value(s) of {size}; a matrix with "
            "non-finite entries has no singular values to report. The checkpoint is damaged or its training "
            "diverged (--exclude can leave this module out)."
        )
    return d


def _count_non_finite(ref: TensorRef) -> tuple[int, int]:
    """(non-finite entries, entries) of a whole tensor, counted block by block."""
    rows, cols = _stored_shape(ref)
    step = max(1, BLOCK_BYTES // (8 * cols))
    bad = sum(
        int(np.count_nonzero(~np.isfinite(read_rows(ref, r, min(rows, r + step)))))
        for r in range(0, rows, step)
    )
    return bad, rows * cols


def prefetched(make: Callable[[], Iterator[np.ndarray]], depth: int = PREFETCH) -> Iterator[np.ndarray]:
    """The items of ``make()``, produced by a background thread up to ``depth`` ahead;
    its errors re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="lorascope-blocks", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
