"""``lorascope sweep``: truncation and functional sweeps of a results folder or checkpoints,
and their table."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import CHECKPOINT, check_out, default_out, emit, json_mode, records, wrote
from .options import svd_option
from .rank import (
    WRITES,
    analysis_options,
    analyze_kwargs,
    console,
    fmt,
    parse_ranks,
    resolve_inputs,
    write_report,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=CHECKPOINT)
@click.option(
    "--ranks", default=None, help="Grid of k, e.g. 1,2,4,8,16 [default: 1, 2, 4, … up to the largest rank]."
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output folder [default: reports/sweep-<inputs>]."
)
@click.option(
    "--eval-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Text or JSONL file: also measure the loss of the base model with every ΔW truncated to each k "
    "(needs BASE as a Hugging Face model folder and the hf extra).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Functional pick: the smallest k whose loss is within this share of the fine-tune's loss change "
    "(base − untruncated) of the untruncated loss.",
)
@click.option(
    "--max-length", type=click.IntRange(min=1), default=256, show_default=True, help="Tokens per example."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Evaluation batch size."
)
@click.option(
    "--max-examples",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Evaluate on the first N examples of --eval-data.",
)
@click.option("--device", default="cpu", show_default=True, help="Device of the functional sweep's model.")
@svd_option("auto", "Singular vectors of dense updates")
@analysis_options
def sweep(
    inputs,
    ranks,
    out,
    eval_data,
    tolerance,
    max_length,
    batch_size,
    max_examples,
    device,
    svd,
    fmt,
    base_format,
    revision,
    base_revision,
    include,
    exclude,
    precision,
    no_report,
    quiet,
    as_json,
):
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

    out = check_out(
        out or default_out("sweep", *inputs), marker=WRITES + ("sweep.csv", "sweep.json", "functional.csv")
    )
    result = run_sweep(
        sweep_inputs(resolve_inputs(inputs, revision, base_revision, quiet)),
        out,
        parse_ranks(ranks),
        eval_data=eval_data,
        eval_options=EvalOptions(
            max_length=max_length, batch_size=batch_size, max_examples=max_examples, device=device
        ),
        tolerance=tolerance,
        truncate=TruncateOptions(svd=svd, precision=precision),
        progress=not quiet,
        **analyze_kwargs(fmt, base_format, include, exclude, precision),
    )
    if not quiet and not json_mode():
        print_sweep(result)
    wrote(out, "sweep")
    report = write_report(out, no_report)
    emit(
        {"sweep": out, "report": report},
        ranks=result.ranks,
        modules=len(result.results.modules),
        trainer_run=result.info.get("trainer_run"),
        uniform=records(result.uniform),
        functional=records(result.functional) if result.functional is not None else None,
        functional_pick=result.pick,
        training=records(result.training) if result.training is not None else None,
        knees=records(result.knees) if result.knees is not None else None,
        seconds=result.info.get("seconds"),
    )


def print_sweep(result) -> None:
    from rich.table import Table

    out_console = console()
    uni, fr = result.uniform, result.frontier
    opt = fr[fr["policy"] == "optimal"].set_index("budget")
    table = Table(
        title="Uniform rank k: what the truncation keeps (and the best ranks at the same budget)",
        title_justify="left",
    )
    for col in ("k", "params", "energy", "rel. error", "min module energy", "budget-optimal energy"):
        table.add_column(col, justify="right")
    for _, row in uni.iterrows():
        best = opt["energy"].get(int(row["params"]), float("nan"))
        table.add_row(
            str(int(row["k"])),
            f"{int(row['params']):,}",
            fmt(row["energy"]),
            fmt(row["rel_error"]),
            fmt(row["min_energy"]),
            fmt(float(best)),
        )
    out_console.print(table)
    _print_training(out_console, result)
    if result.functional is not None:
        table = Table(
            title=f"Functional sweep: {result.pick['metric']} with every ΔW truncated to rank k",
            title_justify="left",
        )
        acc = result.pick["metric"].removesuffix("_loss") + "_acc"
        extra = [acc] if acc in result.functional.columns else []
        for col in ("point", "k", "energy", "loss", *extra):
            table.add_column(col, justify="right")
        for _, row in result.functional.iterrows():
            table.add_row(
                row["point"],
                fmt(row["k"]),
                fmt(row["energy"]),
                fmt(row["loss"]),
                *(fmt(row[c]) for c in extra),
            )
        out_console.print(table)
        p = result.pick
        verdict = "keeping" if p["within"] else "(none keeps"
        out_console.print(
            f"Smallest k {verdict} {1 - p['tolerance']:.0%} of the fine-tune's change in {p['metric']}"
            f"{'' if p['within'] else ')'}: [bold]k = {p['k']}[/] ({p['metric']} {p['loss']:.4f}; "
            f"untruncated {p['full_loss']:.4f}; base {p['base_loss']:.4f}; {p['recovered']:.0%} kept)."
        )


def _print_training(out_console, result) -> None:
    from rich.table import Table

    knees = result.knees
    if knees is None or knees.empty:
        return
    table = Table(
        title="Training sweep: knee of each metric against the trained rank r", title_justify="left"
    )
    value_cols = [
        c for c in knees.columns if c.endswith("_value") and c not in ("knee_value", "best_rank_value")
    ]
    for col in ("method", "targets", "metric", "knee r", "at the knee", "best over r", *value_cols):
        table.add_column(col, justify="left" if col in ("method", "targets", "metric") else "right")
    for _, row in knees.iterrows():
        table.add_row(
            str(row["method"]),
            fmt(row.get("targets")),
            str(row["metric"]),
            fmt(row["knee_rank"]),
            fmt(row["knee_value"]),
            fmt(row["best_rank_value"]),
            *(fmt(row[c]) for c in value_cols),
        )
    out_console.print(table)
