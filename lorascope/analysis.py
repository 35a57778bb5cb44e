"""Drive the stream of updates: open inputs, plan the deltas, compute each spectrum, build the tables.

``analyze`` is the public entry point; ``lorascope.compute.compute_delta`` is the unit of work (one module →
one row and its singular values) that local threads, the GPU path and remote workers all run. Tensors are read
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
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .checkpoint import Adapter, Weights, describe_input, open_checkpoint
from .compute import Computed, Options, Streamed, compute_delta, compute_fetched, fetch, streams
from .delta import FAMILIES, Delta, Fetched, Plan, VectorDelta, filter_names, plan_deltas, unique_names
from .delta import vector_update
from .errors import LorascopeError
from .linalg import resolve_device, sum_squares
from .names import split_name
from .notebook import Results
from .progress import progress_bar
from .results import versions
from .analysis_notes import dtype_census, mixed_dtype_warnings, numerics_summary, zero_update_warnings
from .stream import default_budget, parse_memory

# the unit of work lives in lorascope.compute; these names are importable from here as they always were
__all__ = [
    "BACKENDS",
    "Computed",
    "Fetched",
    "Options",
    "Streamed",
    "analyze",
    "build_results",
    "compute_delta",
    "compute_fetched",
    "fetch",
    "open_inputs",
    "run_local",
    "versions",
]


def vector_row(v: VectorDelta) -> dict[str, Any]:
    delta, base = vector_update(v)
    layer, module = split_name(v.name)
    fro = math.sqrt(sum_squares(delta))  # pairwise sums: the same bits on any number of threads
    base_fro = math.sqrt(sum_squares(base)) if base is not None else None
    return {
        "name": v.name,
        "layer": layer,
        "module": module,
        "size": int(delta.size),
        "fro_norm": fro,
        "base_fro_norm": base_fro,
        "relative_update": fro / base_fro if base_fro else None,
    }


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
    milliseconds (a thread would only trade the GIL back and forth) and streamed ones read their own
    blocks."""
    return not FAMILIES[d.family].numpy and not streams(d, opts)


def _run_pipelined(deltas: list[Delta], opts: Options, results: list, bar: Any) -> None:
    if not deltas:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorascope-read") as reader:
        upcoming: Future | None = (
            reader.submit(fetch, deltas[0], opts) if _read_ahead(deltas[0], opts) else None
        )
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


def build_results(
    plan: Plan,
    computed: list[Computed],
    inputs: list[dict[str, Any]],
    options: dict[str, Any],
    seconds: float,
) -> Results:
    """Assemble tables and summary from computed rows (shared by every execution backend)."""
    rows = [c.row for c in computed]
    module_seconds = {c.row["name"]: round(c.seconds, 4) for c in computed}
    spectra = {c.row["name"]: c.sigma for c in computed}
    vectors = [vector_row(v) for v in plan.vectors]
    adapter_params = int(
        sum(
            FAMILIES[d.family].params(d)
            for d in plan.deltas
            if d.module is not None and FAMILIES[d.family].params is not None
        )
    )
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
    return Results(rows, spectra, summary, vectors)  # DataFrames made when first read


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
    unique_names(plan)
    budget, how = (parse_memory(opts.memory), "given") if opts.memory is not None else default_budget()
    run_opts = (
        dataclasses.replace(opts, memory=budget) if backend == "local" else opts
    )  # Ray: each node's own
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
