"""Drive the stream of updates: open inputs, plan the deltas, compute each spectrum, build the tables.

``analyze`` is the public entry point; ``compute_delta`` is the unit of work (one module → one row and
its singular values) that local threads, the GPU path and remote workers all run. Tensors are read
one module at a time, so peak memory does not grow with checkpoint size.
"""

from __future__ import annotations

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
from .linalg import PRECISIONS, resolve_device, svd
from .metrics import module_metrics
from .names import split_name
from .progress import progress_bar
from .results import Results, modules_frame, vectors_frame

@dataclass(frozen=True)
class Options:
    """How to compute. Defaults: exact float32 SVDs on the best device, one module at a time."""

    precision: str = "float32"  # dense ΔW dtype; the factored path is always float64
    # 'auto': dense SVDs on a GPU when torch sees one; factored SVDs of LoRA factors (tiny r×r cores)
    # stay on the CPU in numpy unless a CUDA device is named explicitly.
    top_k: int | None = None  # randomized top-k for dense updates; None = all singular values
    device: str = "auto"
    workers: int = 1
    include: str | None = None
    exclude: str | None = None
    seed: int = 0  # randomized SVD test matrices

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass
class Computed:
    row: dict[str, Any]
    sigma: np.ndarray


def fetch(d: Delta, opts: Options) -> Fetched:
    """Read one module's tensors into CPU memory (the I/O phase)."""
    return read_delta(d, opts.device)


def compute_fetched(f: Fetched, opts: Options) -> Computed:
    """SVD and metrics of one fetched module: its modules.csv row and σ."""
    d = f.delta
    start = time.perf_counter()
    form, base_norm = build(f, opts.precision)
    result = svd(form, k=opts.top_k, seed=opts.seed)
    del form
    sigma = np.asarray(result.s, dtype=np.float64)
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
    row.update(module_metrics(sigma, (m, n), result.fro_norm, result.complete, base_norm))
    row["seconds"] = time.perf_counter() - start + f.read_seconds
    if d.added_rows:
        row["added_rows"] = d.added_rows
    return Computed(row, sigma)


def compute_delta(d: Delta, opts: Options) -> Computed:
    """One module: read its tensors, take the SVD, and return its modules.csv row and σ."""
    return compute_fetched(fetch(d, opts), opts)


def vector_row(v: VectorDelta) -> dict[str, Any]:
    delta, base = vector_update(v)
    layer, module = split_name(v.name)
    fro = float(np.linalg.norm(delta))
    base_fro = float(np.linalg.norm(base)) if base is not None else None
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


def _run_pipelined(deltas: list[Delta], opts: Options, results: list, bar: Any) -> None:
    if not deltas:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorascope-read") as reader:
        upcoming = reader.submit(fetch, deltas[0], opts)
        for i, d in enumerate(deltas):
            current = upcoming.result()
            if i + 1 < len(deltas):
                upcoming = reader.submit(fetch, deltas[i + 1], opts)
            results[i] = compute_fetched(current, opts)
            del current
            bar.advance(note=d.name)


def _run_threads(deltas: list[Delta], opts: Options, results: list, bar: Any) -> None:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.workers))
    try:
        with ThreadPoolExecutor(max_workers=opts.workers) as pool:
            pending: dict[Future, int] = {}
            for i, d in enumerate(deltas):
                pending[pool.submit(compute_delta, d, opts)] = i
                if len(pending) >= opts.workers:
                    _drain(pending, deltas, results, bar, wait_all=False)
            _drain(pending, deltas, results, bar, wait_all=True)
    finally:
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
            "module_seconds": round(float(sum(r["seconds"] for r in rows)), 3),
        },
        "warnings": plan.warnings + zero_update_warnings(rows),
    }
    return Results(modules, spectra, summary, vectors)


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
        **options: fields of ``Options`` (precision, top_k, device, workers, include, exclude, seed).

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
    computed = BACKENDS[backend](plan, opts, progress, ray_address)
    inputs = ([describe_input("base", base)] if base is not None else []) + [
        describe_input("adapter" if isinstance(tuned_ckpt, Adapter) else "tuned", tuned_ckpt)
    ]
    options_used = {**asdict(opts), "backend": backend, "ray_address": ray_address}
    results = build_results(plan, computed, inputs, options_used, time.perf_counter() - start)
    results.summary["timing"].update(_gpu_memory())
    return results


def _gpu_memory() -> dict[str, Any]:
    """Peak GPU memory of this process, where the GPU was used."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu": torch.cuda.get_device_name(), "gpu_peak_bytes": int(torch.cuda.max_memory_allocated())}
