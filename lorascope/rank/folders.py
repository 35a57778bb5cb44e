"""Sweep and selection folders: inputs in (a results folder, or checkpoints analyzed first), tables out.

A sweep or selection folder is a results folder (``results.py``: modules.csv, singular_values.safetensors,
summary.json, vectors.csv) with the rank tables added, so the report renders it with its optional sections:

| file | written by | content |
| --- | --- | --- |
| sweep.csv | ``run_sweep`` | per module and k: rank, params, energy(k), sqrt(1 − energy(k)) |
| sweep_uniform.csv | ``run_sweep`` | the model at uniform rank k: params, pooled energy, spread |
| sweep_frontier.csv | ``run_sweep`` | params → energy: uniform, budget-optimal (exact) and greedy |
| functional.csv | ``run_sweep`` with evaluation data or a trainer run | loss (and task metrics) per k, base, untruncated |
| training.csv, training_knees.csv | ``run_sweep`` of a train-sweep folder | runs against r, full, freeze; knee per metric |
| sweep.json | ``run_sweep`` | the grid, inputs, functional pick, timing |
| selection.csv | ``run_select`` | per module: chosen rank, params, energy, error |
| selection.json | ``run_select`` | policy, totals, notes (knapsack exact vs greedy), recommendation, export |
| export.csv | ``run_select --export`` | per module: exported rank, SVD route, achieved and optimal error, or why not |
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LorascopeError
from ..results import Results, is_results_folder, load_results, write_json
from .export import ExportOptions, ExportResult, export_adapter
from .functional import (EvalOptions, functional_sweep, hf_evaluation, is_trainer_run, pick_rank, trainer_evaluation,
                         trainer_run)
from .select import Policy, Selection, select_ranks
from .spectra import Spectra, spectra_of
from .sweep import check_ranks, default_ranks, frontier, truncation_table, uniform_table
from .training import knees, training_table
from .truncate import TruncateOptions

SWEEP_CSV = "sweep.csv"
UNIFORM_CSV = "sweep_uniform.csv"
FRONTIER_CSV = "sweep_frontier.csv"
FUNCTIONAL_CSV = "functional.csv"
SWEEP_JSON = "sweep.json"
SELECTION_CSV = "selection.csv"
SELECTION_JSON = "selection.json"
EXPORT_CSV = "export.csv"
TRAINING_CSV = "training.csv"
KNEES_CSV = "training_knees.csv"
TRAIN_INDEX = "index.csv"  # of a train-sweep folder (train/runs.py)


# ---- inputs -------------------------------------------------------------------------------------------


def results_for(inputs: Sequence[str | Path], progress: bool = False, **analyze_options: Any) -> Results:
    """A saved results folder as it is, or the analysis of one or two checkpoints (``lorascope.analyze``)."""
    from ..analysis import analyze

    if not 1 <= len(inputs) <= 2:
        raise LorascopeError(f"give a results folder, an adapter, or BASE and TUNED/ADAPTER; got {len(inputs)} inputs.")
    if len(inputs) == 1 and is_results_folder(inputs[0]):
        given = [k for k, v in analyze_options.items() if v is not None and k != "precision"]  # precision: export SVDs too
        if given:
            options = ", ".join("--" + k.replace("_", "-") for k in given)
            raise LorascopeError(f"{inputs[0]} holds results already computed, so {options} cannot change them; "
                                 "give the checkpoints instead (or run `lorascope spectrum` with those options first).")
        return load_results(inputs[0])
    return analyze(*inputs, progress=progress, **analyze_options)


def reopen_inputs(results: Results) -> tuple[Any, Any]:
    """(base or None, tuned or adapter) reopened from the paths results record in summary.json."""
    from ..checkpoint import FORMATS, open_checkpoint

    entries = {e.get("role"): e for e in results.summary.get("inputs", [])}
    tuned = entries.get("tuned") or entries.get("adapter")
    if tuned is None:
        raise LorascopeError(f"{results.path or 'these results'}: summary.json names no input checkpoints to reopen.")

    def _open(entry: dict[str, Any]) -> Any:
        path = Path(entry["path"])
        if not path.exists():
            raise LorascopeError(f"{path} (the {entry['role']} these results were computed from) no longer exists; "
                                 "give the checkpoints instead of the results folder.")
        _check_unchanged(entry)
        fmt = entry.get("format")
        return open_checkpoint(path, fmt if fmt in FORMATS and fmt not in ("safetensors", "torch") else None)

    base = _open(entries["base"]) if "base" in entries else None
    return base, _open(tuned)


def _check_unchanged(entry: dict[str, Any]) -> None:
    """Refuse an input whose files differ from the sha256 the results recorded (files up to 64 MiB are hashed)."""
    from ..checkpoint.store import file_sha256

    for item in entry.get("files") or []:
        path, want = Path(item.get("path", "")), item.get("sha256")
        if want and path.is_file() and file_sha256(path) != want:
            raise LorascopeError(f"{path} (part of the {entry.get('role')} these results were computed from) has changed "
                                 "since; re-run the analysis, or give the checkpoints instead of the results folder.")


def plan_for(results: Results, base: Any, tuned: Any) -> Any:
    """The updates of the inputs, filtered and named as the analysis that made ``results`` named them."""
    from ..analysis import _unique_names
    from ..delta import filter_names, plan_deltas

    opts = results.summary.get("options", {})
    plan = filter_names(plan_deltas(base, tuned), opts.get("include"), opts.get("exclude"))
    _unique_names(plan)
    return plan


# ---- writing ------------------------------------------------------------------------------------------




def _clean(obj: Any) -> Any:
    """NaN -> None throughout, so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


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
    """Truncation sweep from saved spectra (analyzing checkpoints first if needed), the functional sweep where a
    model and evaluation data exist, and a training sweep's table; everything written to ``out``.

    Inputs, by what they are:

    - a results folder, an adapter, or base and tuned/adapter checkpoints: the truncation sweep; with
      ``eval_data`` (a text/JSONL file) also the functional sweep on the base Hugging Face folder;
    - a trainer run folder (``metrics.json``, ``tuned/``, ``adapter/``): its update (the adapter where there is
      one) against its base, and the functional sweep on its task with the trainer's metrics;
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
    output = SweepOutput(results, truncation_table(spectra, grid), uniform_table(spectra, grid), frontier(spectra, grid),
                         grid, training=training, knees=knee_table)
    if run is not None and functional is not False:
        model, evaluate, primary = trainer_evaluation(run, device=eval_options.device)
        output.functional = functional_sweep(model, plan_for(results, *reopen_inputs(results)), grid, evaluate,
                                             truncate, progress, loss_metric=primary)
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
    """The run a training sweep's truncation sweeps analyze: 'full' if present, else the largest adapter rank."""
    full = index[index["method"] == "full"] if "method" in index.columns else index.iloc[:0]
    if len(full):
        return Path(folder) / str(full["folder"].iat[0])
    ranked = index.assign(_r=pd.to_numeric(index.get("rank"), errors="coerce")).dropna(subset=["_r"])
    if ranked.empty:
        raise LorascopeError(f"{folder}: the training sweep has neither a full fine-tune nor an adapter run to analyze.")
    return Path(folder) / str(ranked.sort_values("_r")["folder"].iat[-1])


def _functional(results: Results, grid: list[int], eval_data: str | Path, eval_options: EvalOptions | None,
                truncate: TruncateOptions | None, progress: bool) -> pd.DataFrame:
    base, tuned = reopen_inputs(results)
    if base is None:
        raise LorascopeError("the functional sweep evaluates the base model with truncated updates, so it needs the "
                             "base model folder: give BASE and TUNED (or BASE and ADAPTER).")
    plan = plan_for(results, base, tuned)
    model, evaluate = hf_evaluation(base.path, eval_data, eval_options)
    return functional_sweep(model, plan, grid, evaluate, truncate, progress)


def save_sweep(output: SweepOutput, out: str | Path) -> Path:
    """Write the results and the sweep tables as one transaction (``lorascope.outputs``); sweep tables this
    run
    did not make are dropped, not left stale, and so is the earlier report."""
    from ..outputs import writing

    tables = {SWEEP_CSV: output.truncation, UNIFORM_CSV: output.uniform, FRONTIER_CSV: output.frontier,
              FUNCTIONAL_CSV: output.functional, TRAINING_CSV: output.training, KNEES_CSV: output.knees}
    with writing(out, "sweep", **output.results.save_options(out)) as tx:
        output.results.write(tx.stage)
        _write_tables(tx.stage, tables)
        write_json(tx.stage / SWEEP_JSON, _clean(output.info))
    output.results.path = tx.path
    return tx.path


def _write_tables(out: Path, tables: dict[str, pd.DataFrame | None]) -> None:
    for name, table in tables.items():
        if table is None:
            (out / name).unlink(missing_ok=True)
        else:
            table.to_csv(out / name, index=False)


def load_functional(folder: str | Path) -> pd.DataFrame:
    """functional.csv of a sweep folder, or a LorascopeError saying how to make one."""
    path = Path(folder) / FUNCTIONAL_CSV
    if path.is_file():
        table = pd.read_csv(path)
        info = Path(folder) / SWEEP_JSON
        pick = json.loads(info.read_text()).get("functional_pick") if info.is_file() else None
        table.attrs["loss_metric"] = (pick or {}).get("metric", "eval_loss")
        return table
    if not path.is_file():
        raise LorascopeError(f"{folder} holds no {FUNCTIONAL_CSV}: run `lorascope sweep BASE TUNED --eval-data FILE` "
                             "to measure the loss against k first.")
    return pd.read_csv(path)


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


def _export(results: Results, spectra: Spectra, selection: Selection, export: str | Path,
            options: ExportOptions | None, progress: bool) -> ExportResult:
    base, tuned = reopen_inputs(results)
    plan = plan_for(results, base, tuned)
    optimal = dict(zip(selection.table["name"], selection.table["rel_error"]))
    return export_adapter(plan, selection.ranks(), export, base=base, tuned=tuned, optimal_rel_error=optimal,
                          options=options, progress=progress)


def save_selection(output: SelectOutput, out: str | Path) -> Path:
    """Write the results and the selection tables as one transaction (``lorascope.outputs``)."""
    from ..outputs import writing

    with writing(out, "select", **output.results.save_options(out)) as tx:
        _write_selection(output, tx.stage)
    output.results.path = tx.path
    return tx.path


def _write_selection(output: SelectOutput, out: Path) -> None:
    output.results.write(out)
    _write_tables(out, {SELECTION_CSV: output.selection.table,
                        EXPORT_CSV: output.export.table if output.export is not None else None})
    info = output.selection.summary()
    if output.export is not None:
        t = output.export.table
        info["export"] = {
            "path": str(output.export.path),
            "modules": len(output.export.exported),
            "not_exported": [{"name": n, "reason": r} for n, r in zip(t.loc[~t["exported"], "name"],
                                                                       t.loc[~t["exported"], "reason"])],
            "max_excess_rel_error": _excess(t),
            "config": _config_brief(output.export.config),
            "notes": list(output.export.notes),
        }
    write_json(out / SELECTION_JSON, _clean(info))


def _excess(t: pd.DataFrame) -> float | None:
    """Largest achieved − optimal relative error among exported modules (0 for exact SVDs, up to rounding)."""
    done = t[t["exported"]]
    if done.empty:
        return None
    return float(np.nanmax(done["rel_error"] - done["optimal_rel_error"]))


def _config_brief(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"r": cfg["r"], "lora_alpha": cfg["lora_alpha"], "fan_in_fan_out": cfg["fan_in_fan_out"],
            "rank_pattern_keys": len(cfg["rank_pattern"])}
