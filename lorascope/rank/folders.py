"""Sweep and selection folders: ``run_sweep`` and ``run_select``, what the ``lorascope sweep`` and
``lorascope select`` commands call — inputs in (``inputs``), tables out (``files``).

A sweep or selection folder is a results folder (``results.py``) with the rank tables added
(``files.py`` lists them), so the report renders it with its optional sections.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LorascopeError
from ..results import Results, is_results_folder, write_json
from .export import ExportOptions, ExportResult, check_apart, check_export_dir, export_adapter
from .functional import (
    EvalOptions,
    functional_sweep,
    hf_evaluation,
    is_trainer_run,
    pick_rank,
    trainer_evaluation,
    trainer_run,
)
from .select import Policy, Selection, select_ranks
from .spectra import Spectra, spectra_of
from .sweep import check_ranks, default_ranks, frontier, truncation_table, uniform_table
from .training import knees, training_table
from .truncate import TruncateOptions
from .files import (
    EXPORT_CSV,
    FRONTIER_CSV,
    FUNCTIONAL_CSV,
    KNEES_CSV,
    SELECTION_CSV,
    SELECTION_JSON,
    SWEEP_CSV,
    SWEEP_JSON,
    TRAIN_INDEX,
    TRAINING_CSV,
    UNIFORM_CSV,
    clean_json,
    load_functional,
    write_tables,
)
from .inputs import plan_for, reopen_inputs, results_for

# The commands' entry points; the files' names and the inputs' functions stay importable from here.
__all__ = [
    "EXPORT_CSV",
    "FRONTIER_CSV",
    "FUNCTIONAL_CSV",
    "KNEES_CSV",
    "SELECTION_CSV",
    "SELECTION_JSON",
    "SWEEP_CSV",
    "SWEEP_JSON",
    "TRAIN_INDEX",
    "TRAINING_CSV",
    "UNIFORM_CSV",
    "SelectOutput",
    "SweepOutput",
    "load_functional",
    "plan_for",
    "reopen_inputs",
    "results_for",
    "run_select",
    "run_sweep",
    "save_selection",
    "save_sweep",
]


# ---- sweep --------------------------------------------------------------------------------------------


@dataclass
class SweepOutput:
    results: Results
    truncation: pd.DataFrame
    uniform: pd.DataFrame
    frontier: pd.DataFrame
    ranks: list[int]
    functional: pd.DataFrame | None = None
    pick: dict[str, Any] | None = None
    training: pd.DataFrame | None = None
    knees: pd.DataFrame | None = None
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def run_sweep(
    inputs: Sequence[str | Path],
    out: str | Path,
    ranks: Sequence[int] | None = None,
    *,
    eval_data: str | Path | None = None,
    eval_options: EvalOptions | None = None,
    tolerance: float = 0.05,
    truncate: TruncateOptions | None = None,
    functional: bool | None = None,
    progress: bool = False,
    **analyze_options: Any,
) -> SweepOutput:
    """Truncation sweep from saved spectra (analyzing checkpoints first if needed), the functional sweep
    where a model and evaluation data exist, and a training sweep's table; everything written to ``out``.

    Inputs, by what they are:

    - a results folder, an adapter, or base and tuned/adapter checkpoints: the truncation sweep; with
      ``eval_data`` (a text/JSONL file) also the functional sweep on the base Hugging Face folder;
    - a trainer run folder (``metrics.json``, ``tuned/``, ``adapter/``): its update (the adapter where there
      is one) against its base, and the functional sweep on its task with the trainer's metrics;
    - a ``train-sweep`` folder (``index.csv``): the training table (metrics against r, full, freeze, time,
      memory) and its knees, plus both sweeps of its reference run: the full fine-tune where there is one
      ("what LoRA would have matched it?"), else the adapter of largest rank; the grid defaults to the
      trained ranks.

    Args:
        inputs: see above.
        out: the folder to write.
        ranks: the grid of k (default 1, 2, 4, … up to the largest rank).
        eval_data: a text/JSONL file for the functional sweep of Hugging Face inputs.
        eval_options: batching and length of that evaluation (and the device of every functional sweep).
        tolerance: the share of the fine-tune's loss change the functional pick may give up (``pick_rank``).
        truncate: SVD route for dense updates in the functional sweep.
        functional: False skips the functional sweep of a trainer run; None runs it wherever it can.
        progress: progress bars on stderr.
        **analyze_options: ``lorascope.analyze`` options when checkpoints are given.
    """
    start = time.perf_counter()
    eval_options = eval_options or EvalOptions()
    training = knee_table = None
    run = None
    if len(inputs) == 1 and is_train_sweep(inputs[0]):
        index = read_train_index(inputs[0])
        training, knee_table = training_table(index), knees(training_table(index))
        run = trainer_run(reference_run(inputs[0], index))
        ranks = ranks or sorted({int(r) for r in training["rank"].dropna()}) or None
    elif len(inputs) == 1 and is_trainer_run(inputs[0]):
        run = trainer_run(inputs[0])
    analyzed = [run.base, run.update] if run is not None else list(inputs)
    results = results_for(analyzed, progress=progress, **analyze_options)
    spectra = spectra_of(results)
    grid = check_ranks(ranks) if ranks else default_ranks(spectra)
    output = SweepOutput(
        results,
        truncation_table(spectra, grid),
        uniform_table(spectra, grid),
        frontier(spectra, grid),
        grid,
        training=training,
        knees=knee_table,
    )
    if run is not None and functional is not False:
        model, evaluate, primary = trainer_evaluation(run, device=eval_options.device)
        output.functional = functional_sweep(
            model,
            plan_for(results, *reopen_inputs(results)),
            grid,
            evaluate,
            truncate,
            progress,
            loss_metric=primary,
        )
    elif eval_data is not None:
        output.functional = _functional(results, grid, eval_data, eval_options, truncate, progress)
    if output.functional is not None:
        output.pick = pick_rank(output.functional, tolerance)
    output.info = {
        "ranks": grid,
        "inputs": [str(p) for p in inputs],
        "analyzed": [str(p) for p in analyzed],
        "trainer_run": str(run.folder) if run is not None else None,
        "modules": len(spectra.table),
        "eval_data": str(eval_data) if eval_data else None,
        "functional_pick": output.pick,
        "knees": knee_table.to_dict("records") if knee_table is not None else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    output.path = save_sweep(output, out)
    return output


def is_train_sweep(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / TRAIN_INDEX).is_file()


def read_train_index(folder: str | Path) -> pd.DataFrame:
    index = pd.read_csv(Path(folder) / TRAIN_INDEX)
    if index.empty or "folder" not in index.columns:
        raise LorascopeError(f"{Path(folder) / TRAIN_INDEX} lists no runs (expected a 'folder' column).")
    return index


def reference_run(folder: str | Path, index: pd.DataFrame) -> Path:
    """The run a training sweep's truncation sweeps analyze: 'full' if present,
    else the largest adapter rank."""
    full = index[index["method"] == "full"] if "method" in index.columns else index.iloc[:0]
    if len(full):
        return Path(folder) / str(full["folder"].iat[0])
    ranked = index.assign(_r=pd.to_numeric(index.get("rank"), errors="coerce")).dropna(subset=["_r"])
    if ranked.empty:
        raise LorascopeError(
            f"{folder}: the training sweep has neither a full fine-tune nor an adapter run to analyze."
        )
    return Path(folder) / str(ranked.sort_values("_r")["folder"].iat[-1])


def _functional(
    results: Results,
    grid: list[int],
    eval_data: str | Path,
    eval_options: EvalOptions | None,
    truncate: TruncateOptions | None,
    progress: bool,
) -> pd.DataFrame:
    base, tuned = reopen_inputs(results)
    if base is None:
        raise LorascopeError(
            "the functional sweep evaluates the base model with truncated updates, so it needs the "
            "base model folder: give BASE and TUNED (or BASE and ADAPTER)."
        )
    plan = plan_for(results, base, tuned)
    model, evaluate = hf_evaluation(base.path, eval_data, eval_options)
    return functional_sweep(model, plan, grid, evaluate, truncate, progress)


def save_sweep(output: SweepOutput, out: str | Path) -> Path:
    """Write the results and the sweep tables as one transaction (``lorascope.outputs``); sweep tables this
    run
    did not make are dropped, not left stale, and so is the earlier report."""
    from ..outputs import writing

    tables = {
        SWEEP_CSV: output.truncation,
        UNIFORM_CSV: output.uniform,
        FRONTIER_CSV: output.frontier,
        FUNCTIONAL_CSV: output.functional,
        TRAINING_CSV: output.training,
        KNEES_CSV: output.knees,
    }
    with writing(out, "sweep", **output.results.save_options(out)) as tx:
        output.results.write(tx.stage)
        write_tables(tx.stage, tables)
        write_json(tx.stage / SWEEP_JSON, clean_json(output.info))
    output.results.path = tx.path
    return tx.path


# ---- select -------------------------------------------------------------------------------------------


@dataclass
class SelectOutput:
    results: Results
    selection: Selection
    export: ExportResult | None = None
    path: Path | None = None


def run_select(
    inputs: Sequence[str | Path],
    out: str | Path,
    policy: Policy,
    *,
    from_sweep: str | Path | None = None,
    export: str | Path | None = None,
    export_options: ExportOptions | None = None,
    progress: bool = False,
    **analyze_options: Any,
) -> SelectOutput:
    """Ranks per module by ``policy``, written to ``out``; with ``export`` also a PEFT adapter realizing them.

    Args:
        inputs: a results folder, a trainer run folder (its update on its base, as ``run_sweep`` reads it), an
            adapter, or base and tuned/adapter checkpoints; may be empty with ``from_sweep`` (the sweep
            folder's results are used).
        out: the folder to write.
        policy: the selection rule (``select.Policy``).
        from_sweep: a sweep folder with functional.csv (the 'functional' policy reads it).
        export: the adapter folder to write.
        export_options: dtype and SVD route of the export.
        progress: progress bars on stderr.
        **analyze_options: ``lorascope.analyze`` options when checkpoints are given.
    """
    if export is not None:  # before any work: neither an input nor the results may be overwritten
        check_export_dir(export, [*inputs, from_sweep])
        check_apart(export, out)
    if not inputs:
        if from_sweep is None:
            raise LorascopeError("give a results folder or checkpoints to select from (or --from-sweep DIR).")
        inputs = [from_sweep]
    if len(inputs) == 1 and not is_results_folder(inputs[0]) and is_trainer_run(inputs[0]):
        run = trainer_run(inputs[0])
        inputs = [run.base, run.update]
    results = results_for(inputs, progress=progress, **analyze_options)
    spectra = spectra_of(results)
    functional = load_functional(from_sweep) if from_sweep is not None else None
    selection = select_ranks(spectra, policy, functional)
    output = SelectOutput(results, selection)
    if export is not None:
        output.export = _export(results, spectra, selection, export, export_options, progress)
    output.path = save_selection(output, out)
    return output


def _export(
    results: Results,
    spectra: Spectra,
    selection: Selection,
    export: str | Path,
    options: ExportOptions | None,
    progress: bool,
) -> ExportResult:
    base, tuned = reopen_inputs(results)
    plan = plan_for(results, base, tuned)
    optimal = dict(zip(selection.table["name"], selection.table["rel_error"]))
    return export_adapter(
        plan,
        selection.ranks(),
        export,
        base=base,
        tuned=tuned,
        optimal_rel_error=optimal,
        options=options,
        progress=progress,
    )


def save_selection(output: SelectOutput, out: str | Path) -> Path:
    """Write the results and the selection tables as one transaction (``lorascope.outputs``)."""
    from ..outputs import writing

    with writing(out, "select", **output.results.save_options(out)) as tx:
        _write_selection(output, tx.stage)
    output.results.path = tx.path
    return tx.path


def _write_selection(output: SelectOutput, out: Path) -> None:
    output.results.write(out)
    write_tables(
        out,
        {
            SELECTION_CSV: output.selection.table,
            EXPORT_CSV: output.export.table if output.export is not None else None,
        },
    )
    info = output.selection.summary()
    if output.export is not None:
        t = output.export.table
        info["export"] = {
            "path": str(output.export.path),
            "modules": len(output.export.exported),
            "not_exported": [
                {"name": n, "reason": r}
                for n, r in zip(t.loc[~t["exported"], "name"], t.loc[~t["exported"], "reason"])
            ],
            "max_excess_rel_error": _excess(t),
            "config": _config_brief(output.export.config),
            "notes": list(output.export.notes),
        }
    write_json(out / SELECTION_JSON, clean_json(info))


def _excess(t: pd.DataFrame) -> float | None:
    """Largest achieved − optimal relative error among exported modules (0 for exact SVDs, up to rounding)."""
    done = t[t["exported"]]
    if done.empty:
        return None
    return float(np.nanmax(done["rel_error"] - done["optimal_rel_error"]))


def _config_brief(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "r": cfg["r"],
        "lora_alpha": cfg["lora_alpha"],
        "fan_in_fan_out": cfg["fan_in_fan_out"],
        "rank_pattern_keys": len(cfg["rank_pattern"]),
    }
