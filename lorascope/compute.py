"""One module's work: read its tensors, take its spectrum, measure it — what every backend runs.

``compute_delta(d, opts)`` turns one lazy ``Delta`` into its modules.csv row and singular values; local
threads, the GPU path and Ray tasks (``lorascope.ray_backend``) all call it, so a module gives the same bits
wherever it runs. ``fetch`` is its I/O half (whole tensors, within the memory budget ``Options.budget``) and
``compute_fetched`` its compute half, so a reader thread can fetch the next module while this one is
decomposed. A full-diff ΔW on the CPU is not fetched: it is read in row blocks while its Gram matrix is
accumulated (``lorascope.stream``). Driving many modules and building the tables is ``lorascope.analysis``'s.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .delta import FAMILIES, Delta, Fetched, build
from .delta import fetch as read_delta
from .errors import LorascopeError
from .limits import check_read
from .linalg import PRECISIONS, Blocks, resolve_device, svd
from .metrics import module_metrics
from .names import split_name
from .stream import READ_ITEMSIZE, default_budget, delta_blocks, parse_memory, stream_plan, streamable
from .units import human_bytes


@dataclass(frozen=True)
class Options:
    """How to compute. Defaults: float64 spectra on the best device, one module at a time,
    60 % of the free memory."""

    precision: str = "float64"  # dense ΔW dtype; the factored and streamed (Gram) routes are always float64
    # 'auto': dense SVDs on a GPU when torch sees one; factored SVDs of LoRA factors (tiny r×r cores)
    # stay on the CPU in numpy unless a CUDA device is named explicitly.
    top_k: int | None = None  # randomized top-k for dense updates; None = all singular values
    device: str = "auto"
    workers: int = 1
    include: str | None = None
    exclude: str | None = None
    seed: int = 0  # randomized SVD test matrices
    memory: int | str | None = None  # budget in bytes or a size ('768M'); None: 60 % of the available memory

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.memory is not None:
            parse_memory(self.memory)

    def budget(self) -> int:
        """Bytes one module may use: the budget (given, or 60 % of the available memory) over the workers."""
        total = parse_memory(self.memory) if self.memory is not None else default_budget()[0]
        return total // self.workers


@dataclass
class Computed:
    row: dict[str, Any]
    sigma: np.ndarray
    seconds: float = 0.0  # wall time of this module, read included (kept out of the tables: not a result)


@dataclass
class Streamed:
    """A dense full-diff module read in row blocks while it is computed: nothing is fetched ahead."""

    delta: Delta
    read_seconds: float = 0.0


def gpu_possible() -> bool:
    """Whether a GPU could be there, without importing torch: a CUDA or ROCm device node exists."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def on_cpu(device: str) -> bool:
    """Whether dense work runs on the CPU: 'cpu', or 'auto' where torch sees no GPU."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    return not gpu_possible() or resolve_device("auto").type == "cpu"


def streams(d: Delta, opts: Options) -> bool:
    """A full-diff ΔW on the CPU, singular values only, float64: read in row blocks, never whole."""
    return (
        d.family == "dense"
        and d.base is not None
        and opts.precision == "float64"
        and opts.top_k is None
        and streamable(d.tuned, d.base)
        and on_cpu(opts.device)
    )


def in_memory_bytes(d: Delta, opts: Options) -> int:
    """About the peak bytes of computing ``d`` with its tensors whole: the tensors as read, plus, for a dense
    form, the working-precision ΔW and the SVD's copy of it."""
    refs = list(d.parts.values()) + ([d.base] if d.base is not None else [])
    read = 0
    for ref in refs:
        info = ref.store.info(ref.key)
        read += info.numel * READ_ITEMSIZE.get(info.dtype, 8)
    if FAMILIES[d.family].form != "Dense":
        return 2 * read
    m, n = d.shape
    width = 8 if opts.precision == "float64" else 4
    return read + 2 * m * n * width


def fetch(d: Delta, opts: Options) -> Fetched | Streamed:
    """Read one module's tensors into CPU memory (the I/O phase); a streamed module is read while computed.

    Raises:
        LorascopeError: the module cannot be computed within the memory budget.
    """
    if streams(d, opts):
        return Streamed(d)
    for ref in [*d.parts.values(), *([d.base] if d.base is not None else [])]:  # each tensor is read whole
        info = ref.store.info(ref.key)
        check_read(info.nbytes, f"{ref.store.path}: tensor {ref.key} {list(info.shape)} {info.dtype}")
    need, budget = in_memory_bytes(d, opts), opts.budget()
    if need > budget:
        m, n = d.shape
        hint = (
            "or analyze it with the default --precision float64 and no --top-k, which streams a full-diff "
            "matrix in row blocks on the CPU"
            if d.family == "dense"
            else "or leave it out with --exclude"
        )
        raise LorascopeError(
            f"module {d.name} ({m}×{n}, {d.family}) needs about {human_bytes(need, 'MiB')} to compute in "
            "memory, but the memory budget is "
            f"{human_bytes(budget, 'MiB')}{' per worker' if opts.workers > 1 else ''}. Give more with "
            f"--memory (e.g. --memory {-(-need * opts.workers // 2**20)}M), {hint}."
        )
    return read_delta(d, opts.device)


def _spectrum(f: Fetched | Streamed, opts: Options) -> tuple[Any, float | None]:
    """(the SVD of one module, ‖W_base‖_F where a base is given)."""
    if isinstance(f, Streamed):
        d = f.delta
        plan = stream_plan(d.tuned, d.base, opts.budget())
        base_sq = [0.0]
        result = svd(Blocks(d.shape, delta_blocks(d.tuned, d.base, plan, base_sq)))
        return result, math.sqrt(base_sq[0])
    form, base_norm = build(f, opts.precision)
    # --top-k asks for the randomized top-k of a dense update (README 'spectrum'); without it, every value
    result = svd(form, k=opts.top_k, method="randomized" if opts.top_k else "exact", seed=opts.seed)
    return result, base_norm


# Spectra are stored as float32 (singular_values.safetensors); an update beyond its range cannot be kept.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_range(d: Delta, sigma: np.ndarray, fro_norm: float) -> None:
    """Raise LorascopeError where ΔW's values or norm overflow (an absurd scale):
    never an inf in the tables."""
    largest = max(float(sigma.max()) if sigma.size else 0.0, fro_norm)
    if not math.isfinite(largest) or largest >= FLOAT32_MAX:
        raise LorascopeError(
            f"{d.name}: ΔW's singular values or norm overflow (‖ΔW‖_F = {fro_norm:g}, scale {d.scale}); no "
            "trained update is this large, so the scale (alpha / r) declared for it is not usable. Check the "
            "alpha this module's file declares."
        )


def compute_fetched(f: Fetched | Streamed, opts: Options) -> Computed:
    """SVD and metrics of one fetched module: its modules.csv row and σ."""
    d = f.delta
    start = time.perf_counter()
    result, base_norm = _spectrum(f, opts)
    sigma = np.asarray(result.s, dtype=np.float64)
    _check_range(d, sigma, result.fro_norm)
    layer, module = split_name(d.name)
    m, n = d.shape
    row: dict[str, Any] = {
        "name": d.name,
        "layer": layer,
        "module": module,
        "rows": m,
        "cols": n,
        "source": d.source,
        "family": d.family,
        "method": result.method,
        "lora_rank": d.rank,
        "scale": d.scale,
    }
    row.update(module_metrics(sigma, (m, n), result.fro_norm, result.complete, base_norm, result.floor))
    if d.added_rows:
        row["added_rows"] = d.added_rows
    return Computed(row, sigma, time.perf_counter() - start + f.read_seconds)


def compute_delta(d: Delta, opts: Options) -> Computed:
    """One module: read its tensors, take the SVD, and return its modules.csv row and σ."""
    return compute_fetched(fetch(d, opts), opts)
