"""`lorascope sweep` and `lorascope select`: truncation and functional sweeps, rank selection and adapter export."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..errors import LorascopeError
from ._common import (CHECKPOINT, check_out, default_out, emit, json_mode, json_option, records,
                      resolve_input, wrote)

FORMAT_CHOICES = ["auto", "safetensors", "torch", "hf", "peft", "gguf", "kohya", "diffusers", "lora-ab",
                  "cloneofsimo"]
_WRITES = ("modules.csv", "singular_values.safetensors", "summary.json", "vectors.csv", "report.html")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_COUNT = re.compile(r"^\s*(?P<num>\d[\d_]*(?:\.\d+)?(?:e\d+)?)\s*(?P<unit>[kmbg]?)\s*$", re.IGNORECASE)


def parse_count(text: str) -> int:
    """'20M' -> 20_000_000, '1.5B' -> 1_500_000_000, '500k', '20_000_000', '2e7'."""
    m = _COUNT.match(str(text))
    if m is None:
        raise click.BadParameter(f"{text!r} is not a parameter count; write e.g. 20M, 1.5B, 500k or 20000000")
    value = float(m["num"].replace("_", "")) * _SUFFIX[m["unit"].lower()]
    if value != int(value):
        raise click.BadParameter(f"{text!r} is not a whole number of parameters")
    return int(value)


def parse_ranks(text: str | None) -> list[int] | None:
    """'1,2,4,8' -> [1, 2, 4, 8]; ranges 'a-b' expand; None stays None (the default grid)."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
        except ValueError:
            raise click.BadParameter(f"{text!r}: expected positive integers separated by commas, e.g. 1,2,4,8") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{text!r}: expected positive integers separated by commas, e.g. 1,2,4,8")
    return sorted(set(out))


def _analysis_options(f):
    """Options passed to ``lorascope.analyze`` when checkpoints (not a results folder) are given."""
    options = [
        click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
                     help="Force the format of the adapter / tuned input."),
        click.option("--base-format", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
                     help="Force the format of the base input."),
        click.option("--revision", default=None,
                     help="Hub revision (branch, tag or commit) of the adapter / tuned input, if a Hub id."),
        click.option("--base-revision", default=None, help="Hub revision of the base input, if a Hub id."),
        click.option("--include", default=None, help="Only modules whose name matches this regex."),
        click.option("--exclude", default=None, help="Skip modules whose name matches this regex."),
        click.option("--precision", type=click.Choice(["float32", "float64"]), default="float64", show_default=True,
                     help="dtype of dense ΔW and its SVDs."),
        click.option("--no-report", is_flag=True, help="Write only the tables, not report.html and figures."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars and no terminal summary."),
        json_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _resolve(inputs: tuple[str, ...], revision: str | None, base_revision: str | None,
             quiet: bool) -> list[Path]:
    """Local paths for the inputs: a Hub id becomes its cache snapshot (the last input: adapter or tuned)."""
    revisions = [base_revision, revision] if len(inputs) == 2 else [revision] * len(inputs)
    if len(inputs) < 2 and base_revision is not None:
        resolve_input(None, base_revision)  # refuses a revision for a base that was not given
    return [resolve_input(x, r, quiet=quiet) for x, r in zip(inputs, revisions)]


def _analyze_kwargs(fmt, base_format, include, exclude, precision) -> dict:
    return {"format": None if fmt == "auto" else fmt, "base_format": None if base_format == "auto" else base_format,
            "include": include, "exclude": exclude, "precision": precision}


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=CHECKPOINT)
@click.option("--ranks", default=None, help="Grid of k, e.g. 1,2,4,8,16 [default: 1, 2, 4, … up to the largest rank].")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [default: reports/sweep-<inputs>].")
@click.option("--eval-data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text or JSONL file: also measure the loss of the base model with every ΔW truncated to each k "
                   "(needs BASE as a Hugging Face model folder and the hf extra).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Functional pick: the smallest k whose loss is within this share of the fine-tune's loss change "
                   "(base − untruncated) of the untruncated loss.")
@click.option("--max-length", type=click.IntRange(min=1), default=256, show_default=True, help="Tokens per example.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Evaluation batch size.")
@click.option("--max-examples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Evaluate on the first N examples of --eval-data.")
@click.option("--device", default="cpu", show_default=True, help="Device of the functional sweep's model.")
@click.option("--svd", type=click.Choice(["auto", "exact", "randomized"]), default="auto", show_default=True,
              help="Singular vectors of dense updates: randomized top-k when k ≤ min(m,n)/10 with auto.")
@_analysis_options
def sweep(inputs, ranks, out, eval_data, tolerance, max_length, batch_size, max_examples, device, svd,
          fmt, base_format, revision, base_revision, include, exclude, precision, no_report, quiet, as_json):
    """What a rank-k truncation of every ΔW keeps: per module, for the model, and at equal parameter budgets.

    \b
      lorascope sweep RESULTS_DIR            from saved spectra (lorascope spectrum), nothing recomputed
      lorascope sweep ADAPTER                analyze the adapter first, then sweep
      lorascope sweep BASE TUNED             a full fine-tune
      lorascope sweep BASE TUNED --eval-data eval.jsonl   also the loss against k
      lorascope sweep RUN_DIR                a trainer run: its update, and the loss against k on its task
      lorascope sweep TRAIN_SWEEP_DIR        a training sweep: metrics against r and its knees, and both
                                             sweeps of its full fine-tune ("what LoRA would have matched it?")
      lorascope sweep DEMO_DIR               the demo's training sweep (DEMO_DIR/runs)

    Writes sweep.csv, sweep_uniform.csv, sweep_frontier.csv (and functional.csv, training.csv) beside the
    results tables, and report.html with its sweep sections unless --no-report.
    """
    from ..rank import run_sweep
    from ..rank.functional import EvalOptions
    from ..rank.truncate import TruncateOptions
    from .folders import sweep_inputs

    out = check_out(out or default_out("sweep", *inputs),
                    marker=_WRITES + ("sweep.csv", "sweep.json", "functional.csv"))
    result = run_sweep(
        sweep_inputs(_resolve(inputs, revision, base_revision, quiet)), out, parse_ranks(ranks),
        eval_data=eval_data,
        eval_options=EvalOptions(max_length=max_length, batch_size=batch_size, max_examples=max_examples, device=device),
        tolerance=tolerance, truncate=TruncateOptions(svd=svd, precision=precision), progress=not quiet,
        **_analyze_kwargs(fmt, base_format, include, exclude, precision),
    )
    if not quiet and not json_mode():
        print_sweep(result)
    wrote(out, "sweep")
    report = _report(out, no_report)
    emit({"sweep": out, "report": report}, ranks=result.ranks, modules=len(result.results.modules),
         trainer_run=result.info.get("trainer_run"), uniform=records(result.uniform),
         functional=records(result.functional) if result.functional is not None else None,
         functional_pick=result.pick,
         training=records(result.training) if result.training is not None else None,
         knees=records(result.knees) if result.knees is not None else None,
         seconds=result.info.get("seconds"))


def _apart(export: Path, out: Path) -> None:
    """The exported adapter and the selection's results folder are two transactions: neither inside the other."""
    e, o = export.resolve(), out.resolve()
    if e == o or o in e.parents or e in o.parents:
        raise LorascopeError(
            f"--export {export} and --out {out} overlap; the adapter and the selection's results are written as "
            "two separate folders. Give --export a folder outside --out (e.g. beside it)."
        )


@click.command()
@click.argument("inputs", nargs=-1, type=CHECKPOINT)
@click.option("--energy", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Policy: each module keeps this fraction τ of its ‖ΔW‖² (rank_τ).")
@click.option("--budget", default=None, help="Policy: the best ranks within this many adapter parameters (20M, 1.5B).")
@click.option("--noise", is_flag=True, help="Policy: the Gavish–Donoho noise rank of each module.")
@click.option("--from-sweep", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Policy: the smallest k within --tolerance of the untruncated loss, from a functional sweep folder.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Loss tolerance of --from-sweep, as a share of the fine-tune's loss change.")
@click.option("--export", type=click.Path(path_type=Path), default=None,
              help="Write a PEFT adapter realizing the selection to this folder (resize or extraction).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="dtype of the exported factors.")
@click.option("--svd", type=click.Choice(["auto", "exact", "randomized"]), default="auto", show_default=True,
              help="Singular vectors of dense updates: randomized top-k when k ≤ min(m,n)/10 with auto.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [default: reports/select-<inputs>].")
@_analysis_options
def select(inputs, energy, budget, noise, from_sweep, tolerance, export, dtype, svd, out,
           fmt, base_format, revision, base_revision, include, exclude, precision, no_report, quiet, as_json):
    """A rank per module by one policy, what it costs and keeps; --export writes the adapter.

    \b
      lorascope select ADAPTER --energy 0.9 --export small-adapter/
      lorascope select BASE TUNED --budget 20M --export extracted/
      lorascope select RESULTS_DIR --noise
      lorascope select RUN_DIR --energy 0.9          a trainer run: its update on its base
      lorascope select --from-sweep reports/sweep-run/

    Writes selection.csv and selection.json (and export.csv) beside the results tables, and report.html
    with its selection section unless --no-report.
    """
    from ..errors import LorascopeError
    from ..rank import Policy, run_select
    from ..rank.export import ExportOptions, check_export_dir
    from ..rank.truncate import TruncateOptions

    chosen = [name for name, given in (("--energy", energy is not None), ("--budget", budget is not None),
                                        ("--noise", noise), ("--from-sweep", from_sweep is not None)) if given]
    if len(chosen) != 1:
        raise LorascopeError("give exactly one policy: --energy TAU, --budget N, --noise or --from-sweep DIR"
                             + (f" (got {', '.join(chosen)})." if chosen else "."))
    if len(inputs) > 2:
        raise LorascopeError(f"select takes a results folder, an adapter, or BASE and TUNED/ADAPTER; got {len(inputs)} inputs.")
    policy = Policy(
        name={"--energy": "energy", "--budget": "budget", "--noise": "noise", "--from-sweep": "functional"}[chosen[0]],
        energy=energy if energy is not None else 0.9, budget=parse_count(budget) if budget is not None else None,
        tolerance=tolerance,
    )
    out = check_out(out or default_out("select", *(inputs or [from_sweep])),
                    marker=_WRITES + ("selection.csv", "selection.json", "export.csv"))
    from .folders import select_inputs

    paths = select_inputs(_resolve(inputs, revision, base_revision, quiet))
    if export is not None:
        _apart(export, out)
        check_export_dir(export, paths)
    result = run_select(
        paths, out, policy, from_sweep=from_sweep, export=export,
        export_options=ExportOptions(dtype=dtype, truncate=TruncateOptions(svd=svd, precision=precision)),
        progress=not quiet, **_analyze_kwargs(fmt, base_format, include, exclude, precision),
    )
    if not quiet and not json_mode():
        print_selection(result)
    wrote(out, "selection")
    if result.export is not None:
        wrote(result.export.path, "adapter")
    report = _report(out, no_report)
    sel = result.selection
    export_doc = None
    if result.export is not None:
        e = result.export
        export_doc = {"path": e.path, "modules": len(e.exported), "r": e.config["r"],
                      "rank_pattern_entries": len(e.config["rank_pattern"]), "notes": list(e.notes),
                      "not_exported": records(e.skipped[["name", "reason"]]) if len(e.skipped) else []}
    emit({"selection": out, "adapter": result.export.path if result.export is not None else None,
          "report": report}, policy=sel.policy.name, totals=sel.totals, recommendation=sel.recommendation,
         ranks=records(sel.table[["name", "rank", "params", "energy", "rel_error"]]), export=export_doc)


def _report(out: Path, no_report: bool) -> Path | None:
    """The folder's report, now with its sweep or selection sections (a selection made from a functional
    sweep alone has no spectra to show, and no report)."""
    if no_report or not (out / "summary.json").is_file():
        return None
    from ..report import render_report

    path = render_report(out)
    wrote(path, "report")
    return path


# ---- terminal summaries -------------------------------------------------------------------------------


def _console():
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def _fmt(v, digits: int = 4) -> str:
    import math

    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def print_sweep(result) -> None:
    from rich.table import Table

    console = _console()
    uni, fr = result.uniform, result.frontier
    opt = fr[fr["policy"] == "optimal"].set_index("budget")
    table = Table(title="Uniform rank k: what the truncation keeps (and the best ranks at the same budget)",
                  title_justify="left")
    for col in ("k", "params", "energy", "rel. error", "min module energy", "budget-optimal energy"):
        table.add_column(col, justify="right")
    for _, row in uni.iterrows():
        best = opt["energy"].get(int(row["params"]), float("nan"))
        table.add_row(str(int(row["k"])), f"{int(row['params']):,}", _fmt(row["energy"]), _fmt(row["rel_error"]),
                      _fmt(row["min_energy"]), _fmt(float(best)))
    console.print(table)
    _print_training(console, result)
    if result.functional is not None:
        table = Table(title=f"Functional sweep: {result.pick['metric']} with every ΔW truncated to rank k",
                      title_justify="left")
        acc = result.pick["metric"].removesuffix("_loss") + "_acc"
        extra = [acc] if acc in result.functional.columns else []
        for col in ("point", "k", "energy", "loss", *extra):
            table.add_column(col, justify="right")
        for _, row in result.functional.iterrows():
            table.add_row(row["point"], _fmt(row["k"]), _fmt(row["energy"]), _fmt(row["loss"]),
                          *(_fmt(row[c]) for c in extra))
        console.print(table)
        p = result.pick
        verdict = "keeping" if p["within"] else "(none keeps"
        console.print(f"Smallest k {verdict} {1 - p['tolerance']:.0%} of the fine-tune's change in {p['metric']}"
                      f"{'' if p['within'] else ')'}: [bold]k = {p['k']}[/] ({p['metric']} {p['loss']:.4f}; "
                      f"untruncated {p['full_loss']:.4f}; base {p['base_loss']:.4f}; {p['recovered']:.0%} kept).")


def _print_training(console, result) -> None:
    from rich.table import Table

    knees = result.knees
    if knees is None or knees.empty:
        return
    table = Table(title="Training sweep: knee of each metric against the trained rank r", title_justify="left")
    value_cols = [c for c in knees.columns if c.endswith("_value") and c not in ("knee_value", "best_rank_value")]
    for col in ("method", "targets", "metric", "knee r", "at the knee", "best over r", *value_cols):
        table.add_column(col, justify="left" if col in ("method", "targets", "metric") else "right")
    for _, row in knees.iterrows():
        table.add_row(str(row["method"]), _fmt(row.get("targets")), str(row["metric"]),
                      _fmt(row["knee_rank"]), _fmt(row["knee_value"]), _fmt(row["best_rank_value"]),
                      *(_fmt(row[c]) for c in value_cols))
    console.print(table)


def print_selection(result) -> None:
    from rich.table import Table

    from ..names import module_type

    console = _console()
    sel = result.selection
    t = sel.table.assign(type=sel.table["module"].map(module_type))
    agg = t.groupby("type", sort=False).agg(n=("name", "size"), min_rank=("rank", "min"), median_rank=("rank", "median"),
                                            max_rank=("rank", "max"), params=("params", "sum"),
                                            energy=("energy", "median"))
    table = Table(title="Selected ranks per module type", title_justify="left")
    for col in ("module type", "n", "min", "median", "max", "params", "median energy"):
        table.add_column(col, justify="left" if col == "module type" else "right")
    for name, row in agg.iterrows():
        table.add_row(str(name), str(int(row["n"])), str(int(row["min_rank"])), _fmt(float(row["median_rank"])),
                      str(int(row["max_rank"])), f"{int(row['params']):,}", _fmt(float(row["energy"])))
    console.print(table)
    console.print(sel.recommendation, soft_wrap=False)
    if result.export is not None:
        e = result.export
        skipped = e.skipped
        console.print(f"Exported {len(e.exported)} module(s): r = {e.config['r']}, "
                      f"{len(e.config['rank_pattern'])} rank_pattern entr{'y' if len(e.config['rank_pattern']) == 1 else 'ies'}, "
                      f"scale 1 (lora_alpha = r per module).")
        for note in e.notes:
            console.print(f"  [yellow]![/] {note}")
        for _, row in skipped.head(8).iterrows():
            console.print(f"  [yellow]•[/] not exported: {row['name']}: {row['reason']}")
        if len(skipped) > 8:
            console.print(f"  … and {len(skipped) - 8} more (export.csv lists them all)")
