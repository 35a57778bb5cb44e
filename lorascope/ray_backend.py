"""Run the per-module work on a Ray cluster: one task per large module, or per group of small ones.

Each task receives lazy Delta items (paths and tensor names, not tensors), reads its own tensors from a
path every worker can see, computes metrics and singular values, and returns only those; the driver
builds the same results folder as a local run. A task that fails for a system reason (a worker killed,
a node lost) is submitted again, up to ``max_attempts`` times, and every retry is reported as a warning;
a module that still fails stops the run with an error naming it: nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from .compute import Computed, Options, compute_delta
from .delta import FAMILIES, Delta, Plan
from .errors import LorascopeError
from .progress import progress_bar

# A task carries modules until their cost (matrix entries read and decomposed) reaches this, so that
# hundreds of tiny LoRA modules do not each pay a task's scheduling overhead.
GROUP_COST = 1 << 24
GROUP_MODULES = 64


def _cost(d: Delta) -> int:
    m, n = d.shape
    return (m + n) * d.module.tensor_rank if FAMILIES[d.family].form == "LowRank" and d.module else m * n


def group_deltas(
    deltas: list[Delta], max_cost: int = GROUP_COST, max_modules: int = GROUP_MODULES
) -> list[list[int]]:
    """Indices of ``deltas`` in groups: a large module alone, small ones together, order kept."""
    groups: list[list[int]] = []
    current: list[int] = []
    cost = 0
    for i, d in enumerate(deltas):
        c = _cost(d)
        if current and (cost + c > max_cost or len(current) >= max_modules):
            groups.append(current)
            current, cost = [], 0
        current.append(i)
        cost += c
    if current:
        groups.append(current)
    return groups


def _task(
    deltas: list[Delta], opts: Options, compute: Callable[[Delta, Options], Computed]
) -> list[Computed]:
    return [compute(d, opts) for d in deltas]


def _is_input_error(exc: BaseException) -> bool:
    cause = getattr(exc, "cause", None)
    return isinstance(exc, LorascopeError) or isinstance(cause, LorascopeError)


def _connect(address: str | None) -> bool:
    """Connect to ``address`` (or start a local cluster); True when this call started Ray."""
    try:
        import ray
    except ImportError:
        raise LorascopeError(
            "backend 'ray' needs Ray: install lorascope with the ray extra (pip install 'lorascope[ray]')."
        ) from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LorascopeError(f"could not connect to the Ray cluster at {address!r}: {exc}") from None
    return True


def run_ray(
    plan: Plan,
    opts: Options,
    progress: bool = True,
    address: str | None = None,
    compute: Callable[[Delta, Options], Computed] = compute_delta,
    max_attempts: int = 3,
) -> list[Computed]:
    """Compute every delta of ``plan`` as Ray tasks; results come back in plan order.

    GPU work (``opts.device`` naming cuda, or 'auto' on a cluster with GPUs) requests one GPU per task.
    ``compute`` is the per-module function (the default is the local one, so results are identical).
    """
    import ray

    started = _connect(address)
    try:
        wants_gpu = opts.device.startswith("cuda") or (
            opts.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
        )
        remote = ray.remote(_task).options(num_cpus=1, num_gpus=1 if wants_gpu else 0, max_retries=0)
        groups = group_deltas(plan.deltas)
        # tasks run side by side on a node: each gets its node's budget (given, or its own default) over the
        # CPUs the cluster reports, as local workers share one machine's
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        opts_ref = ray.put(dataclasses.replace(opts, workers=cpus))
        results: list[Computed | None] = [None] * len(plan.deltas)
        attempts = {g: 1 for g in range(len(groups))}
        pending = {
            remote.remote([plan.deltas[i] for i in idx], opts_ref, compute): g for g, idx in enumerate(groups)
        }
        with progress_bar(len(plan.deltas), "modules (ray)", progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                g = pending.pop(ref)
                try:
                    for i, res in zip(groups[g], ray.get(ref)):
                        results[i] = res
                    bar.advance(len(groups[g]), note=plan.deltas[groups[g][-1]].name)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if _is_input_error(
                        exc
                    ):  # bad input fails the same way everywhere: its own message, no retry
                        cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
                        raise LorascopeError(str(cause.args[0] if cause.args else cause)) from None
                    if attempts[g] >= max_attempts:
                        names = ", ".join(plan.deltas[i].name for i in groups[g][:5])
                        raise LorascopeError(
                            f"Ray task for module(s) {names} failed after {attempts[g]} attempt(s): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                        ) from None
                    attempts[g] += 1
                    plan.warnings.append(
                        {
                            "name": plan.deltas[groups[g][0]].name,
                            "reason": f"Ray task for {len(groups[g])} module(s) failed "
                            f"({type(exc).__name__}); retried (attempt {attempts[g]} of {max_attempts})",
                        }
                    )
                    time.sleep(0.1)
                    pending[remote.remote([plan.deltas[i] for i in groups[g]], opts_ref, compute)] = g
        return results  # type: ignore[return-value]
    finally:
        if started:
            ray.shutdown()
