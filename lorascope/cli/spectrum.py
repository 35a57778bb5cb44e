"""`lorascope spectrum`: analyze every ΔW of an adapter, an adapter on its base, or a base/fine-tuned pair."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    CHECKPOINT,
    check_out,
    default_out,
    emit,
    json_mode,
    json_option,
    records,
    resolve_input,
    wrote,
)
from .options import format_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=CHECKPOINT)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Results folder [default: reports/spectrum-<inputs>]."
)
@format_option(
    "--format",
    "fmt",
    help="Force the format of the adapter / tuned input instead of detecting it from content.",
)
@format_option("--base-format", help="Force the format of the base input.")
@click.option(
    "--revision",
    default=None,
    help="Hub revision (branch, tag or commit) of the adapter / tuned input, when it is a Hub id.",
)
@click.option("--base-revision", default=None, help="Hub revision of the base input, when it is a Hub id.")
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    help="Randomized SVD: only the top K singular values of dense updates (‖ΔW‖_F stays exact).",
)
@click.option(
    "--precision",
    type=click.Choice(["float32", "float64"]),
    default="float64",
    show_default=True,
    help="dtype of dense ΔW held in memory and its SVD (factored and streamed full-diff spectra are "
    "always float64; float32 is for GPUs with slow float64).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Modules computed in parallel (BLAS threads are divided among them).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine; ray: one task per module (or group of small ones) on a Ray cluster.",
)
@click.option("--ray-address", default=None, help="Ray cluster to connect to [default: start a local one].")
@click.option("--include", default=None, help="Only modules whose name matches this regex.")
@click.option("--exclude", default=None, help="Skip modules whose name matches this regex.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the randomized SVD.")
@click.option(
    "--memory",
    default=None,
    metavar="SIZE",
    help="Memory budget, e.g. 768M or 8G [default: 60% of the memory available at start]. Full-diff "
    "matrices are streamed in row blocks within it; a module that cannot fit is refused.",
)
@click.option("--no-report", is_flag=True, help="Write only the results tables, not report.html and figures.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no terminal summary.")
@json_option
def spectrum(
    inputs,
    out,
    fmt,
    base_format,
    revision,
    base_revision,
    top_k,
    precision,
    device,
    workers,
    backend,
    ray_address,
    include,
    exclude,
    seed,
    memory,
    no_report,
    quiet,
    as_json,
):
    """Singular values of every weight update, with effective ranks and magnitudes.

    \b
      lorascope spectrum ADAPTER             a LoRA adapter alone: ΔW = s·B@A
      lorascope spectrum BASE TUNED          base vs fine-tuned checkpoints: ΔW = tuned − base
      lorascope spectrum BASE ADAPTER        an adapter on its base: adds base norms, exact DoRA ΔW

    Each input is a local path or a Hugging Face Hub id (org/name; hf://org/name when a local
    path reads the same), fetched into the Hub cache with only the config and weight files needed.
    A trainer run folder (lorascope train) is read as its base and its adapter (or tuned model).

    Writes modules.csv, singular_values.safetensors, vectors.csv and summary.json to --out,
    and report.html with figures/*.png beside them unless --no-report.
    """
    from ..analysis import analyze
    from ..errors import LorascopeError

    if len(inputs) > 2:
        raise LorascopeError(
            f"spectrum takes one input (an adapter) or two (BASE and TUNED/ADAPTER), got {len(inputs)}."
        )
    from ..outputs import writing
    from ..report import REPORT_HTML, write_report

    from .folders import update_inputs

    inputs = update_inputs(inputs, "spectrum")
    out = check_out(out or default_out("spectrum", *inputs))
    if len(inputs) == 2:
        first = resolve_input(inputs[0], base_revision, quiet=quiet)
        second = resolve_input(inputs[1], revision, quiet=quiet)
    else:
        first, second = resolve_input(inputs[0], revision, quiet=quiet), resolve_input(None, base_revision)
    resolved = [str(Path(p).resolve()) for p in (first, second) if p is not None]
    with writing(out, "spectrum", inputs=resolved) as tx:
        results = analyze(
            first,
            second,
            format=None if fmt == "auto" else fmt,
            base_format=None if base_format == "auto" else base_format,
            progress=not quiet,
            backend=backend,
            ray_address=ray_address,
            top_k=top_k,
            precision=precision,
            device=device,
            workers=workers,
            include=include,
            exclude=exclude,
            seed=seed,
            memory=memory,
        )
        tx.keep_files(results.save_options(out)["keep"])
        results.write(tx.stage)
        if not no_report:
            if not quiet:
                click.echo("rendering the report …", err=True)
            write_report(results, tx.stage / REPORT_HTML)
    results.path = tx.path
    if not quiet and not json_mode():
        from .summary import print_summary

        print_summary(results)
    wrote(out)
    if not no_report:
        wrote(out / REPORT_HTML, "report")
    if json_mode():
        emit(
            {"results": out, "report": None if no_report else out / REPORT_HTML}, **spectrum_document(results)
        )


def spectrum_document(results) -> dict:
    """The ``--json`` fields of an analysis: what was analyzed, medians per module type, totals, warnings."""
    from .summary import module_type_table

    s = results.summary
    table = module_type_table(results.modules).reset_index().rename(columns={"type": "module_type"})
    return {
        "kind": s.get("kind"),
        "modules": len(results.modules),
        "inputs": s.get("inputs"),
        "totals": s.get("totals"),
        "seconds": (s.get("timing") or {}).get("total_seconds"),
        "module_types": records(table),
        "warnings": s.get("warnings") or [],
    }
