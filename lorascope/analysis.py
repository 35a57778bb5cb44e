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
import torch

from . import __version__
from .checkpoint import Adapter, Weights, describe_input, open_checkpoint
from .delta import Delta, DenseDelta, DoraDelta, LowRankDelta, Plan, VectorDelta, filter_names, plan_deltas, vector_update
from .errors import LorascopeError
from .linalg import PRECISIONS, SVD, exact_svd, factored_svd, randomized_svd, resolve_device
from .metrics import module_metrics
from .names import split_name
from .progress import progress_bar
from .results import Results, modules_frame, vectors_frame


@dataclass(frozen=True)
class Options:
    """How to compute. Defaults: exact float32 SVDs on the best device, one module at a time."""

    precision: str = "float32"  # dense ΔW dtype; the factored path is always float64
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


def _dense_svd(delta: torch.Tensor, opts: Options) -> SVD:
    if opts.top_k is not None and opts.top_k < min(delta.shape):
        return randomized_svd(delta, opts.top_k, seed=opts.seed)
    return exact_svd(delta)


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t, dtype=torch.float64).cpu())


def _compute_dense(d: DenseDelta, opts: Options, device: torch.device) -> tuple[SVD, float | None]:
    dtype = PRECISIONS[opts.precision]
    delta = d.tuned.load(dtype, device, copy=True)
    base = d.base.load(dtype, device)
    base_norm = _norm(base)
    delta.sub_(base)  # in place: peak memory is two matrices, then one plus the SVD's copy
    del base
    return _dense_svd(delta, opts), base_norm


def _compute_lowrank(d: LowRankDelta, opts: Options, device: torch.device) -> tuple[SVD, float | None]:
    left = d.module.left.load(torch.float64, device)
    right = d.module.right.load(torch.float64, device)
    svd = factored_svd(left, right, d.module.scale)
    base_norm = _norm(d.base.load(PRECISIONS[opts.precision], device)) if d.base is not None else None
    return svd, base_norm


def dora_update(d: DoraDelta, dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ΔW, W0) of a DoRA module: m ⊙ (W0 + sBA) / ‖W0 + sBA‖_row − W0 (Liu et al. 2024, Eq. 5; PEFT's layout)."""
    w0 = d.base.load(dtype, device)  # (m, n)
    left = d.module.left.load(dtype, device)  # (m, r)
    right = d.module.right.load(dtype, device)  # (r, n)
    merged = w0 + d.module.scale * (left @ right)  # (m, r) @ (r, n) -> (m, n)
    norms = torch.linalg.vector_norm(merged, dim=1, keepdim=True)  # (m, 1): one per output feature
    magnitude = d.module.magnitude.load(dtype, device).reshape(-1, 1)  # type: ignore[union-attr]
    if magnitude.shape[0] != merged.shape[0]:
        raise LorascopeError(
            f"{d.module.magnitude.key}: DoRA magnitude has {magnitude.shape[0]} entries but the weight has "  # type: ignore[union-attr]
            f"{merged.shape[0]} output features"
        )
    return magnitude / norms * merged - w0, w0


def _compute_dora(d: DoraDelta, opts: Options, device: torch.device) -> tuple[SVD, float | None]:
    delta, w0 = dora_update(d, PRECISIONS[opts.precision], device)
    base_norm = _norm(w0)
    del w0
    return _dense_svd(delta, opts), base_norm


COMPUTE: dict[type, Callable[[Any, Options, torch.device], tuple[SVD, float | None]]] = {
    DenseDelta: _compute_dense,
    LowRankDelta: _compute_lowrank,
    DoraDelta: _compute_dora,
}


def compute_delta(d: Delta, opts: Options, device: torch.device | None = None) -> Computed:
    """One module: read its tensors, take the SVD, and return its modules.csv row and σ."""
    device = device or resolve_device(opts.device)
    start = time.perf_counter()
    svd, base_norm = COMPUTE[type(d)](d, opts, device)
    sigma = svd.s.double().numpy()
    layer, module = split_name(d.name)
    m, n = d.shape
    module_obj = getattr(d, "module", None)
    row: dict[str, Any] = {
        "name": d.name,
        "layer": layer,
        "module": module,
        "rows": m,
        "cols": n,
        "source": d.source,
        "method": svd.method,
        "lora_rank": module_obj.rank if module_obj is not None else None,
        "scale": module_obj.scale if module_obj is not None else None,
    }
    row.update(module_metrics(sigma, (m, n), svd.fro_norm, svd.complete, base_norm))
    row["seconds"] = time.perf_counter() - start
    if getattr(d, "added_rows", 0):
        row["added_rows"] = d.added_rows  # type: ignore[union-attr]
    return Computed(row, sigma)


def vector_row(v: VectorDelta) -> dict[str, Any]:
    delta, base = vector_update(v)
    layer, module = split_name(v.name)
    fro = float(torch.linalg.vector_norm(delta))
    base_fro = float(torch.linalg.vector_norm(base)) if base is not None else None
    return {
        "name": v.name, "layer": layer, "module": module, "size": int(delta.numel()), "fro_norm": fro,
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


def run_plan(plan: Plan, opts: Options, progress: bool = True) -> list[Computed]:
    """Compute every delta of a plan, in order, with ``opts.workers`` threads and bounded memory."""
    device = resolve_device(opts.device)
    results: list[Computed | None] = [None] * len(plan.deltas)
    with progress_bar(len(plan.deltas), "modules", progress) as bar:
        if opts.workers == 1:
            for i, d in enumerate(plan.deltas):
                results[i] = compute_delta(d, opts, device)
                bar.advance(note=d.name)
        else:
            _run_threads(plan.deltas, opts, device, results, bar)
    return results  # type: ignore[return-value]


def _run_threads(deltas: list[Delta], opts: Options, device: torch.device, results: list, bar: Any) -> None:
    """At most ``workers`` modules in flight, each with cores // workers BLAS threads (no oversubscription)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.workers))
    try:
        with ThreadPoolExecutor(max_workers=opts.workers) as pool:
            pending: dict[Future, int] = {}
            for i, d in enumerate(deltas):
                pending[pool.submit(compute_delta, d, opts, device)] = i
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
    adapter_params = int(sum(r["lora_rank"] * (r["rows"] + r["cols"]) for r in rows if r.get("lora_rank")))
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
        "warnings": plan.warnings,
    }
    return Results(modules, spectra, summary, vectors)


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
    **options: Any,
) -> Results:
    """Analyze every weight update: an adapter alone, an adapter on its base, or base vs fine-tuned.

    Args:
        base_or_adapter: an adapter (when ``tuned`` is None) or the base checkpoint.
        tuned: the fine-tuned checkpoint or an adapter of the base.
        format: force the format of the adapter / tuned input (see ``lorascope.checkpoint.FORMATS``).
        base_format: force the format of the base input.
        progress: show a progress bar on stderr.
        **options: fields of ``Options`` (precision, top_k, device, workers, include, exclude, seed).

    Returns:
        ``Results`` with ``modules``, ``spectra``, ``vectors`` and ``summary``; ``.save(dir)`` writes them.

    Raises:
        LorascopeError: an input is missing, unreadable, unsupported, or the two do not fit together.
    """
    try:
        opts = Options(**options)
        resolve_device(opts.device)
    except (TypeError, ValueError) as exc:
        raise LorascopeError(str(exc)) from None
    start = time.perf_counter()
    base, tuned_ckpt = open_inputs(base_or_adapter, tuned, format, base_format)
    plan = filter_names(plan_deltas(base, tuned_ckpt), opts.include, opts.exclude)
    _unique_names(plan)
    computed = run_plan(plan, opts, progress)
    inputs = ([describe_input("base", base)] if base is not None else []) + [
        describe_input("adapter" if isinstance(tuned_ckpt, Adapter) else "tuned", tuned_ckpt)
    ]
    return build_results(plan, computed, inputs, asdict(opts), time.perf_counter() - start)
