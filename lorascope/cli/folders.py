"""Folders lorascope wrote, given where a command takes checkpoints: what each command makes of them.

A trainer run folder stands for its update (``adapter/`` where it has one, else ``tuned/``) on its base; a
demo folder for its training sweep (``runs/``) where a command reads sweeps. A folder that does not fit the
command is refused with what it is and what to run instead (``lorascope.kinds``), never guessed at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from ..kinds import KINDS, describe, folder_kind


def _kind(path: Any) -> str | None:
    p = Path(str(path)).expanduser()
    return folder_kind(p) if p.is_dir() else None


def run_paths(folder: str | Path) -> tuple[Path, Path]:
    """(base, update) of a trainer run folder: its recorded base (or the sweep's shared ``base/``), and its
    ``adapter/`` where it has one, else the merged ``tuned/``."""
    from ..rank.functional import trainer_run

    run = trainer_run(folder)
    return run.base, run.update


def refuse(path: Any, command: str, takes: str) -> LorascopeError:
    kind = _kind(path)
    hint = KINDS[kind].hint if kind in KINDS else ""
    return LorascopeError(
        f"{path} is {describe(path)}; `lorascope {command}` takes {takes}."
        + (f" {hint[0].upper()}{hint[1:]}." if hint else "")
    )


def update_inputs(inputs: tuple[str, ...] | list[str], command: str) -> list[str]:
    """Checkpoint inputs of ``spectrum``: a run folder becomes its base and update; folders of results,
    sweeps, demos and counts are refused with what to run instead."""
    inputs = [str(x) for x in inputs]
    kinds = [_kind(x) for x in inputs]
    if len(inputs) == 1 and kinds[0] == "run":
        return [str(p) for p in run_paths(inputs[0])]
    takes = "checkpoints: an adapter, BASE and TUNED, BASE and ADAPTER, or a trainer run folder"
    for x, kind in zip(inputs, kinds):
        if kind == "run" and len(inputs) == 2 and x == inputs[1]:
            inputs[1] = str(run_paths(x)[1])  # BASE RUN_DIR: that run's update on the base given
        elif kind is not None and kind != "run":
            raise refuse(x, command, takes)
        elif kind == "run":
            raise refuse(x, command, "a trainer run folder alone (its base is recorded), or BASE and RUN_DIR")
    return inputs


def sweep_inputs(inputs: list[Path]) -> list[Path]:
    """Inputs of ``sweep``: a demo folder is read as its training sweep (``runs/``); a folder of results
    folders, a comparison, counts or an audit are refused. Results, run and train-sweep folders and
    checkpoints pass as they are."""
    if len(inputs) == 1:
        kind = _kind(inputs[0])
        if kind == "demo":
            return [Path(inputs[0]) / "runs"]
        if kind in ("compare", "params", "audit", "results-set"):
            raise refuse(
                inputs[0],
                "sweep",
                "a results folder, a trainer run or training sweep folder, a demo folder, or checkpoints",
            )
    else:
        for x in inputs:
            if _kind(x) not in (None,):
                raise refuse(x, "sweep", "one folder lorascope wrote, or BASE and TUNED/ADAPTER checkpoints")
    return inputs


def select_inputs(inputs: list[Path]) -> list[Path]:
    """Inputs of ``select``: a run folder becomes its base and update; a training sweep or demo (many updates)
    is refused naming its runs, since a selection is of one update."""
    if len(inputs) == 1:
        kind = _kind(inputs[0])
        if kind == "run":
            return list(run_paths(inputs[0]))
        if kind in ("demo", "train-sweep"):
            runs = Path(inputs[0]) / "runs" if kind == "demo" else Path(inputs[0])
            names = sorted(p.name for p in runs.iterdir() if (p / "metrics.json").is_file())
            raise LorascopeError(
                f"{inputs[0]} is {describe(inputs[0])} holding {len(names)} runs; a selection is of one "
                "update, so give one run folder, e.g. `lorascope select "
                f"{runs / (names[0] if names else 'RUN')} --energy 0.9` (runs: "
                f"{', '.join(names[:8])}{' …' if len(names) > 8 else ''})."
            )
        if kind in ("compare", "params", "audit", "results-set"):
            raise refuse(inputs[0], "select", "a results folder, a trainer run folder, or checkpoints")
    else:
        for x in inputs:
            if _kind(x) is not None:
                raise refuse(x, "select", "one folder lorascope wrote, or BASE and TUNED/ADAPTER checkpoints")
    return inputs


def compare_inputs(x: str, y: str, base: str | None) -> tuple[str, str, str | None]:
    """X, Y and --base of ``compare``: run folders become their updates, and --base defaults to the base they
    were trained from (refused when the two runs name different bases)."""
    if base is not None and _kind(base) is not None:
        raise refuse(
            base,
            "compare",
            "a base model as --base (a trainer run's is its base/ or the path its metrics.json records)",
        )
    bases = []
    out = []
    for item in (x, y):
        kind = _kind(item)
        if kind == "run":
            b, u = run_paths(item)
            bases.append(b)
            out.append(str(u))
        elif kind is not None:
            raise refuse(
                item, "compare", "two updates of one base: adapters, tuned checkpoints or trainer runs"
            )
        else:
            out.append(item)
    if base is None and bases:
        if len({p.resolve() for p in bases}) > 1 and not _same_files(bases[0], bases[1]):
            raise LorascopeError(
                f"{x} and {y} were trained from different bases ({bases[0]} and "
                f"{bases[1]}); give the one both updates apply to with --base."
            )
        base = str(bases[0])
    return out[0], out[1], base


def _same_files(a: Path, b: Path) -> bool:
    """Whether two base folders (or files) hold the same files byte for byte: each run keeps its own copy."""
    from ..manifest import file_sha256 as sha256

    def listing(p: Path) -> dict[str, Path]:
        return (
            {f.relative_to(p).as_posix(): f for f in p.rglob("*") if f.is_file()} if p.is_dir() else {"": p}
        )

    fa, fb = listing(Path(a)), listing(Path(b))
    return fa.keys() == fb.keys() and all(
        fa[k].stat().st_size == fb[k].stat().st_size and sha256(fa[k]) == sha256(fb[k]) for k in fa
    )


def base_input(base: str, command: str) -> str:
    """BASE of ``intruders``: a model; a folder lorascope wrote is refused with what to give instead."""
    if _kind(base) is not None:
        raise refuse(
            base,
            command,
            "a base model as BASE (a trainer run's is its base/ or the path its "
            "metrics.json records) and the update as TUNED",
        )
    return base


def tuned_input(tuned: str, command: str) -> str:
    """TUNED of ``intruders``: a run folder stands for its update."""
    kind = _kind(tuned)
    if kind == "run":
        return str(run_paths(tuned)[1])
    if kind is not None:
        raise refuse(tuned, command, "BASE and TUNED (or ADAPTER, or a trainer run folder)")
    return tuned


def params_input(source: str, model: str | None) -> tuple[str, str | None]:
    """SOURCE and --model of ``params``: a run folder is its adapter on its base (or its tuned model)."""
    kind = _kind(source)
    if kind == "run":
        base, update = run_paths(source)
        return str(update), model if model is not None or update.name != "adapter" else str(base)
    if kind is not None:
        raise refuse(source, "params", "a model config, checkpoint, adapter or trainer run folder")
    return source, model
