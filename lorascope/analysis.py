"""Drive the stream of updates: open inputs, plan the deltas, compute each spectrum, build the tables.

``analyze`` is the public entry point; ``compute_delta`` is the unit of work (one module → one row and
its singular values) that local threads, the GPU path and remote workers all run. Tensors are read
one module at a time, so peak memory does not grow with checkpoint size; a full-diff ΔW on the CPU is
read in row blocks (``lorascope.stream``), so it does not grow with the matrix either. Every module runs
under the memory budget (``--memory``); one that cannot fit is refused with the number it needs.

Determinism: the same inputs and options give the same tables and spectra bit for bit whatever the
number of workers or the backend — every CPU route rounds the same on any number of threads
(``lorascope.linalg.routes``), block sizes depend on shapes only, results are kept in plan order, and
timings live in summary.json, not in the tables.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .checkpoint import Adapter, Weights, describe_input, open_checkpoint
from .delta import FAMILIES, Delta, Fetched, Plan, VectorDelta, build, filter_names, plan_deltas, vector_update
from .delta import fetch as read_delta
from .errors import LorascopeError
from .limits import check_read
from .linalg import PRECISIONS, Blocks, resolve_device, sum_squares, svd
from .metrics import module_metrics
from .names import split_name
from .progress import progress_bar
from .results import Results, modules_frame, vectors_frame
from .stream import READ_ITEMSIZE, default_budget, delta_blocks, parse_memory, stream_plan, streamable

@dataclass(frozen=True)
class Options:
    """How to compute. Defaults: float64 spectra on the best device, one module at a time, 60 % of the free memory."""

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
    return (d.family == "dense" and d.base is not None and opts.precision == "float64" and opts.top_k is None
            and streamable(d.tuned, d.base) and on_cpu(opts.device))


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
        hint = ("or analyze it with the default --precision float64 and no --top-k, which streams a full-diff "
                "matrix in row blocks on the CPU" if d.family == "dense" else "or leave it out with --exclude")
        raise LorascopeError(
            f"module {d.name} ({m}×{n}, {d.family}) needs about {need / 2**20:,.0f} MiB to compute in memory, but the "
            f"memory budget is {budget / 2**20:,.0f} MiB{' per worker' if opts.workers > 1 else ''}. Give more with "
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
    result = svd(form, k=opts.top_k, seed=opts.seed)
    return result, base_norm


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


# Spectra are stored as float32 (singular_values.safetensors); an update beyond its range cannot be kept.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_range(d: Delta, sigma: np.ndarray, fro_norm: float) -> None:
    """Raise LorascopeError where ΔW's values or norm overflow (an absurd scale): never an inf in the tables."""
    largest = max(float(sigma.max()) if sigma.size else 0.0, fro_norm)
    if not math.isfinite(largest) or largest >= FLOAT32_MAX:
        raise LorascopeError(
            f"{d.name}: ΔW's singular values or norm overflow (‖ΔW‖_F = {fro_norm:g}, scale {d.scale}); no "
            f"trained update is this large, so the scale (alpha / r) declared for it is not usable. Check the "
            "alpha this module's file declares."
        )


def compute_delta(d: Delta, opts: Options) -> Computed:
    """One module: read its tensors, take the SVD, and return its modules.csv row and σ."""
    return compute_fetched(fetch(d, opts), opts)


def vector_row(v: VectorDelta) -> dict[str, Any]:
    delta, base = vector_update(v)
    layer, module = split_name(v.name)
    fro = math.sqrt(sum_squares(delta))  # pairwise sums: the same bits on any number of threads
    base_fro = math.sqrt(sum_squares(base)) if base is not None else None
    return {
        "name": v.name, "layer": layer, "module": module, "size": int(delta.size), "fro_norm": fro,
        "base_fro_norm": base_fro, "relative_update": fro / base_fro if base_fro else None,
    }


def _unique_names(plan: Plan) -> None:
    seen: dict[str, int] = {}
    for d in plan.deltas:
        if d.name in seen:
            seen[d.name] += 1
            new = f"{d.name}#{seen[d.name]}"
            plan.warnings.append({"name": d.name, "reason": f"two modules map to this name; the second is named {new}"})
            d.name = new
        else:
            seen[d.name] = 1


def run_local(plan: Plan, opts: Options, progress: bool = True) -> list[Computed]:
    """Compute every delta of a plan in order on this machine, with bounded memory.

    One worker: a reader thread fetches the next module from disk while this one is computed, so reads
    overlap the SVDs (on a GPU especially) and at most two modules are in memory. ``workers`` > 1: that
    many modules in flight, each with cores // workers BLAS threads (no oversubscription).
    """
    results: list[Computed | None] = [None] * len(plan.deltas)
    with progress_bar(len(plan.deltas), "modules", progress) as bar:
        if opts.workers == 1:
            _run_pipelined(plan.deltas, opts, results, bar)
        else:
            _run_threads(plan.deltas, opts, results, bar)
    return results  # type: ignore[return-value]


def _read_ahead(d: Delta, opts: Options) -> bool:
    """Whether reading ``d`` is worth a thread: a dense update read whole. Factored modules read in
    milliseconds (a thread would only trade the GIL back and forth) and streamed ones read their own blocks."""
    return not FAMILIES[d.family].numpy and not streams(d, opts)


def _run_pipelined(deltas: list[Delta], opts: Options, results: list, bar: Any) -> None:
    if not deltas:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorascope-read") as reader:
        upcoming: Future | None = reader.submit(fetch, deltas[0], opts) if _read_ahead(deltas[0], opts) else None
        for i, d in enumerate(deltas):
            current = upcoming.result() if upcoming is not None else fetch(d, opts)
            upcoming = None
            if i + 1 < len(deltas) and _read_ahead(deltas[i + 1], opts):
                upcoming = reader.submit(fetch, deltas[i + 1], opts)
            results[i] = compute_fetched(current, opts)
            del current
            bar.advance(note=d.name)


def _run_threads(deltas: list[Delta], opts: Options, results: list, bar: Any) -> None:
    import sys

    from threadpoolctl import ThreadpoolController

    threads = max(1, (os.cpu_count() or 1) // opts.workers)
    torch = sys.modules.get("torch")  # set only where loaded: a streamed full diff never imports it
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        with ThreadpoolController().limit(limits=threads, user_api="blas"):  # no oversubscription
            with ThreadPoolExecutor(max_workers=opts.workers) as pool:
                pending: dict[Future, int] = {}
                for i, d in enumerate(deltas):
                    pending[pool.submit(compute_delta, d, opts)] = i
                    if len(pending) >= opts.workers:
                        _drain(pending, deltas, results, bar, wait_all=False)
                _drain(pending, deltas, results, bar, wait_all=True)
    finally:
        if torch is not None and previous is not None:
            torch.set_num_threads(previous)


def _drain(pending: dict[Future, int], deltas: list[Delta], results: list, bar: Any, wait_all: bool) -> None:
    from concurrent.futures import FIRST_COMPLETED, wait

    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            i = pending.pop(fut)
            results[i] = fut.result()
            bar.advance(note=deltas[i].name)
        if not wait_all:
            return


def _run_ray(plan: Plan, opts: Options, progress: bool = True, address: str | None = None) -> list[Computed]:
    from .ray_backend import run_ray

    return run_ray(plan, opts, progress=progress, address=address)


# execution backends: name -> runner(plan, opts, progress, address)
BACKENDS: dict[str, Callable[..., list[Computed]]] = {
    "local": lambda plan, opts, progress=True, address=None: run_local(plan, opts, progress),
    "ray": _run_ray,
}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "lorascope": __version__}
    for pkg in ("torch", "numpy", "scipy", "pandas", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def build_results(
    plan: Plan,
    computed: list[Computed],
    inputs: list[dict[str, Any]],
    options: dict[str, Any],
    seconds: float,
) -> Results:
    """Assemble tables and summary from computed rows (shared by every execution backend)."""
    rows = [c.row for c in computed]
    modules = modules_frame(rows)
    module_seconds = {c.row["name"]: round(c.seconds, 4) for c in computed}
    spectra = {c.row["name"]: c.sigma for c in computed}
    vectors = vectors_frame([vector_row(v) for v in plan.vectors])
    adapter_params = int(sum(FAMILIES[d.family].params(d) for d in plan.deltas
                             if d.module is not None and FAMILIES[d.family].params is not None))
    summary = {
        "lorascope_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": plan.kind,
        "inputs": inputs,
        "options": options,
        "versions": versions(),
        "totals": {
            "modules": len(rows),
            "vectors": len(vectors),
            "skipped": len(plan.warnings),
            "delta_parameters": int(sum(r["rows"] * r["cols"] for r in rows)),
            "adapter_parameters": adapter_params,
        },
        "timing": {
            "total_seconds": round(seconds, 3),
            "module_seconds": round(float(sum(module_seconds.values())), 3),
            "per_module_seconds": module_seconds,
        },
        "numerics": numerics_summary(rows),
        "dtypes": dtype_census(plan),
        "warnings": plan.warnings + zero_update_warnings(rows) + mixed_dtype_warnings(plan),
    }
    return Results(modules, spectra, summary, vectors)


FLOOR_RULE = (
    "σ at or below sigma_floor (the SVD route's own absolute error bound) count as zero in entropy_rank, "
    "numerical_rank and gd_rank; the stored spectra keep every value (docs/METRICS.md, 'The numerical floor')"
)
FLOOR_BY_METHOD = {
    "factored": "ε·max(m, n)·k·|s|·‖L‖_F·‖R‖_F",
    "gram": "√(ε·(max(m, n)·‖ΔW‖_F² + min(m, n)·σ1²))",
    "exact": "ε(dtype)·max(m, n)·σ1",
    "randomized": "ε(dtype)·max(m, n)·σ1 (arithmetic only; the values are lower bounds)",
    "kronecker": "|s|·(σ1(A)·floor(B) + σ1(B)·floor(A) + floor(A)·floor(B))",
}


def numerics_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the spectra were computed: the floor rule, and per method its bound and how many modules used it."""
    methods: dict[str, int] = {}
    for r in rows:
        methods[r["method"]] = methods.get(r["method"], 0) + 1
    floors = [r["sigma_floor"] / r["spectral_norm"] for r in rows if r.get("spectral_norm")]
    return {
        "floor_rule": FLOOR_RULE,
        "methods": {m: {"modules": k, "floor": FLOOR_BY_METHOD.get(m, "")} for m, k in sorted(methods.items())},
        "max_floor_over_sigma1": float(max(floors)) if floors else 0.0,
    }


def _tensor_dtype(ref: Any) -> str:
    return ref.store.info(ref.key).dtype


def dtype_census(plan: Plan) -> dict[str, Any]:
    """Every input tensor's dtype, compactly: counts per dtype per input, and the modules whose dtypes differ."""
    stores: dict[str, Any] = {}
    for d in plan.deltas:
        for ref in d.parts.values():
            stores.setdefault("adapter" if d.module is not None and d.family != "dense" else "tuned", ref.store)
        if d.base is not None:
            stores.setdefault("base", d.base.store)
    for v in plan.vectors:
        stores.setdefault("tuned", v.tuned.store)
        if v.base is not None:
            stores.setdefault("base", v.base.store)
    counts = {}
    for role, store in stores.items():
        per: dict[str, int] = {}
        for key in store.keys():
            dt = store.info(key).dtype
            per[dt] = per.get(dt, 0) + 1
        counts[role] = dict(sorted(per.items()))
    mixed = {d.name: {"tuned": _tensor_dtype(d.tuned), "base": _tensor_dtype(d.base)} for d in plan.deltas
             if d.family == "dense" and d.base is not None and _tensor_dtype(d.tuned) != _tensor_dtype(d.base)}
    return {"counts": counts, "mixed_modules": mixed}


# unit roundoff of each stored dtype: the relative size of the rounding a weight stored in it carries
_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8,
             "float8_e4m3fn": 2.0**-4, "float8_e5m2": 2.0**-3}


def mixed_dtype_warnings(plan: Plan) -> list[dict[str, str]]:
    """One warning per pair of dtypes when full-diff modules compare tensors stored in different dtypes."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for d in plan.deltas:
        if d.family == "dense" and d.base is not None:
            t, b = _tensor_dtype(d.tuned), _tensor_dtype(d.base)
            if t != b:
                pairs.setdefault((t, b), []).append(d.name)
    out = []
    for (t, b), names in pairs.items():
        coarse = t if _ROUNDOFF.get(t, 0) >= _ROUNDOFF.get(b, 0) else b
        out.append({"name": "mixed dtypes", "reason": (
            f"{len(names)} module(s) subtract a {b} base from a {t} fine-tuned tensor (e.g. {names[0]}): ΔW then "
            f"holds the {coarse} rounding of every weight (about {_ROUNDOFF.get(coarse, 0):.0e} of its size) as "
            "well as the update, full-rank noise that raises entropy_rank, numerical_rank and the energy ranks. "
            f"Compare checkpoints saved in one dtype (convert the {b if coarse == t else t} one to {coarse}) for "
            "the update alone; summary.json 'dtypes' lists the modules."
        )})
    return out


def zero_update_warnings(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One warning for the modules whose ΔW is exactly zero (frozen, or inputs that hold the same weights)."""
    zero = [r["name"] for r in rows if r["fro_norm"] == 0]
    if not zero:
        return []
    if len(zero) == len(rows) and all(r["source"] != "dense" for r in rows):
        reason = (f"ΔW is exactly zero in every one of the {len(rows)} adapter modules: their lora_B (up) factors are "
                  "all zeros, as initialized; this adapter was saved before any training step changed it")
    elif len(zero) == len(rows):
        reason = (f"ΔW is exactly zero in every one of the {len(rows)} modules: the two inputs hold the same "
                  "weights (was the fine-tuned checkpoint given as TUNED?)")
    else:
        reason = (f"ΔW is exactly zero in {len(zero)} of {len(rows)} modules, unchanged by the fine-tune (frozen?): "
                  f"{', '.join(zero[:3])}{' …' if len(zero) > 3 else ''}; their ranks are 0")
    return [{"name": "zero updates", "reason": reason}]


def open_inputs(
    first: str | Path | Weights | Adapter,
    second: str | Path | Weights | Adapter | None,
    format: str | None = None,
    base_format: str | None = None,
) -> tuple[Weights | None, Weights | Adapter]:
    """(base, tuned) from one input (an adapter) or two (base first)."""

    def _open(x: Any, fmt: str | None) -> Weights | Adapter:
        return x if isinstance(x, (Weights, Adapter)) else open_checkpoint(x, fmt)

    if second is None:
        return None, _open(first, format)
    return _open(first, base_format), _open(second, format)


def analyze(
    base_or_adapter: str | Path | Weights | Adapter,
    tuned: str | Path | Weights | Adapter | None = None,
    *,
    format: str | None = None,
    base_format: str | None = None,
    progress: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
    **options: Any,
) -> Results:
    """Analyze every weight update: an adapter alone, an adapter on its base, or base vs fine-tuned.

    Args:
        base_or_adapter: an adapter (when ``tuned`` is None) or the base checkpoint.
        tuned: the fine-tuned checkpoint or an adapter of the base.
        format: force the format of the adapter / tuned input (see ``lorascope.checkpoint.FORMATS``).
        base_format: force the format of the base input.
        progress: show a progress bar on stderr.
        backend: 'local' (this machine: threads, GPU) or 'ray' (one task per module or group of small
            modules on a Ray cluster; needs the ``ray`` extra).
        ray_address: the cluster to connect to with backend='ray' (default: start a local one).
        **options: fields of ``Options`` (precision, top_k, device, workers, include, exclude, seed, memory).

    Returns:
        ``Results`` with ``modules``, ``spectra``, ``vectors`` and ``summary``; ``.save(dir)`` writes them.

    Raises:
        LorascopeError: an input is missing, unreadable, unsupported, or the two do not fit together.
    """
    try:
        opts = Options(**options)
        if opts.device != "auto":
            resolve_device(opts.device)
    except (TypeError, ValueError) as exc:
        raise LorascopeError(str(exc)) from None
    if backend not in BACKENDS:
        raise LorascopeError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    start = time.perf_counter()
    base, tuned_ckpt = open_inputs(base_or_adapter, tuned, format, base_format)
    plan = filter_names(plan_deltas(base, tuned_ckpt), opts.include, opts.exclude)
    _unique_names(plan)
    budget, how = (parse_memory(opts.memory), "given") if opts.memory is not None else default_budget()
    run_opts = dataclasses.replace(opts, memory=budget) if backend == "local" else opts  # Ray: each node's own
    computed = BACKENDS[backend](plan, run_opts, progress, ray_address)
    inputs = ([describe_input("base", base)] if base is not None else []) + [
        describe_input("adapter" if isinstance(tuned_ckpt, Adapter) else "tuned", tuned_ckpt)
    ]
    options_used = {**asdict(opts), "backend": backend, "ray_address": ray_address}
    results = build_results(plan, computed, inputs, options_used, time.perf_counter() - start)
    results.summary["timing"].update(_gpu_memory())
    results.summary["memory"] = {"budget_bytes": budget, "budget": how}
    return results


def _gpu_memory() -> dict[str, Any]:
    """Peak GPU memory of this process, where the GPU was used."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu": torch.cuda.get_device_name(), "gpu_peak_bytes": int(torch.cuda.max_memory_allocated())}
