"""``lorascope select``: ranks per module by a policy, and the adapter that realizes them (``--export``)."""

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
    parse_count,
    resolve_inputs,
    write_report,
)


@click.command()
@click.argument("inputs", nargs=-1, type=CHECKPOINT)
@click.option(
    "--energy",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Policy: each module keeps this fraction τ of its ‖ΔW‖² (rank_τ).",
)
@click.option(
    "--budget", default=None, help="Policy: the best ranks within this many adapter parameters (20M, 1.5B)."
)
@click.option("--noise", is_flag=True, help="Policy: the Gavish–Donoho noise rank of each module.")
@click.option(
    "--from-sweep",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Policy: the smallest k within --tolerance of the untruncated loss, from a functional sweep folder.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Loss tolerance of --from-sweep, as a share of the fine-tune's loss change.",
)
@click.option(
    "--export",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a PEFT adapter realizing the selection to this folder (resize or extraction).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="dtype of the exported factors.",
)
@svd_option("auto", "Singular vectors of dense updates")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output folder [default: reports/select-<inputs>]."
)
@analysis_options
def select(
    inputs,
    energy,
    budget,
    noise,
    from_sweep,
    tolerance,
    export,
    dtype,
    svd,
    out,
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
    from ..rank.export import ExportOptions
    from ..rank.truncate import TruncateOptions

    chosen = [
        name
        for name, given in (
            ("--energy", energy is not None),
            ("--budget", budget is not None),
            ("--noise", noise),
            ("--from-sweep", from_sweep is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        raise LorascopeError(
            "give exactly one policy: --energy TAU, --budget N, --noise or --from-sweep DIR"
            + (f" (got {', '.join(chosen)})." if chosen else ".")
        )
    if len(inputs) > 2:
        raise LorascopeError(
            f"select takes a results folder, an adapter, or BASE and TUNED/ADAPTER; got {len(inputs)} inputs."
        )
    policy = Policy(
        name={"--energy": "energy", "--budget": "budget", "--noise": "noise", "--from-sweep": "functional"}[
            chosen[0]
        ],
        energy=energy if energy is not None else 0.9,
        budget=parse_count(budget) if budget is not None else None,
        tolerance=tolerance,
    )
    out = check_out(
        out or default_out("select", *(inputs or [from_sweep])),
        marker=WRITES + ("selection.csv", "selection.json", "export.csv"),
    )
    from .folders import select_inputs

    paths = select_inputs(resolve_inputs(inputs, revision, base_revision, quiet))
    result = run_select(
        paths,
        out,
        policy,
        from_sweep=from_sweep,
        export=export,
        export_options=ExportOptions(dtype=dtype, truncate=TruncateOptions(svd=svd, precision=precision)),
        progress=not quiet,
        **analyze_kwargs(fmt, base_format, include, exclude, precision),
    )
    if not quiet and not json_mode():
        print_selection(result)
    wrote(out, "selection")
    if result.export is not None:
        wrote(result.export.path, "adapter")
    report = write_report(out, no_report)
    sel = result.selection
    export_doc = None
    if result.export is not None:
        e = result.export
        export_doc = {
            "path": e.path,
            "modules": len(e.exported),
            "r": e.config["r"],
            "rank_pattern_entries": len(e.config["rank_pattern"]),
            "notes": list(e.notes),
            "not_exported": records(e.skipped[["name", "reason"]]) if len(e.skipped) else [],
        }
    emit(
        {
            "selection": out,
            "adapter": result.export.path if result.export is not None else None,
            "report": report,
        },
        policy=sel.policy.name,
        totals=sel.totals,
        recommendation=sel.recommendation,
        ranks=records(sel.table[["name", "rank", "params", "energy", "rel_error"]]),
        export=export_doc,
    )


def print_selection(result) -> None:
    from rich.table import Table

    from ..names import module_type

    out_console = console()
    sel = result.selection
    t = sel.table.assign(type=sel.table["module"].map(module_type))
    agg = t.groupby("type", sort=False).agg(
        n=("name", "size"),
        min_rank=("rank", "min"),
        median_rank=("rank", "median"),
        max_rank=("rank", "max"),
        params=("params", "sum"),
        energy=("energy", "median"),
    )
    table = Table(title="Selected ranks per module type", title_justify="left")
    for col in ("module type", "n", "min", "median", "max", "params", "median energy"):
        table.add_column(col, justify="left" if col == "module type" else "right")
    for name, row in agg.iterrows():
        table.add_row(
            str(name),
            str(int(row["n"])),
            str(int(row["min_rank"])),
            fmt(float(row["median_rank"])),
            str(int(row["max_rank"])),
            f"{int(row['params']):,}",
            fmt(float(row["energy"])),
        )
    out_console.print(table)
    out_console.print(sel.recommendation, soft_wrap=False)
    if result.export is not None:
        e = result.export
        skipped = e.skipped
        out_console.print(
            f"Exported {len(e.exported)} module(s): r = {e.config['r']}, "
            f"{len(e.config['rank_pattern'])} rank_pattern "
            f"entr{'y' if len(e.config['rank_pattern']) == 1 else 'ies'}, scale 1 (lora_alpha = r per "
            "module)."
        )
        for note in e.notes:
            out_console.print(f"  [yellow]![/] {note}")
        for _, row in skipped.head(8).iterrows():
            out_console.print(f"  [yellow]•[/] not exported: {row['name']}: {row['reason']}")
        if len(skipped) > 8:
            out_console.print(f"  … and {len(skipped) - 8} more (export.csv lists them all)")
