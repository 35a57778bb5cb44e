"""`lorascope compare` and `lorascope intruders`: two updates side by side,
and the intruder dimensions of one."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import CHECKPOINT, check_out, default_out, emit, json_mode, json_option, resolve_input, wrote
from .options import SVD_CHOICES, format_option, renamed, svd_option, takes_renamed


def _fmt(value: str) -> str | None:
    return None if value == "auto" else value


def _common_options(f):
    """Options both commands share: intruder settings, numerics, module filters, output."""
    options = [
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            help="Results folder [default: reports/<command>-<inputs>].",
        ),
        renamed("--top-k", "--intruder-k", "intruder_k"),
        renamed("--tuned-svd", "--svd", "svd", SVD_CHOICES),
        click.option(
            "--intruder-k",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            callback=takes_renamed,
            help="Intruders: how many top singular vectors of W_tuned are checked (Shuttleworth et al.'s "
            "k: 10). Was --top-k, which now means only the randomized SVD's k (spectrum).",
        ),
        click.option(
            "--epsilon",
            type=click.FloatRange(min=0, max=1, min_open=True),
            default=0.5,
            show_default=True,
            help="Intruders: a vector is an intruder when its largest |cos| with any base vector is below "
            "this; the counts for 0.10 … 0.90 are written too.",
        ),
        svd_option(
            "exact",
            "Every dense SVD that needs only a top-k (W_tuned's for intruders, a dense ΔW's for "
            "φ; was --tuned-svd)",
            callback=takes_renamed,
        ),
        click.option(
            "--precision",
            type=click.Choice(["float32", "float64"]),
            default="float32",
            show_default=True,
            help="dtype of the dense SVDs (factored LoRA SVDs and projections are always float64).",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (dense SVDs)."
        ),
        click.option("--include", default=None, help="Only modules whose name matches this regex."),
        click.option("--exclude", default=None, help="Skip modules whose name matches this regex."),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Random directions and randomized SVDs."
        ),
        click.option("--no-report", is_flag=True, help="Write only the tables, not report.html and figures."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no terminal summary."),
        json_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.argument("x", type=CHECKPOINT)
@click.argument("y", type=CHECKPOINT)
@click.option(
    "--base",
    type=CHECKPOINT,
    default=None,
    help="The base model both were tuned from: needed for full checkpoints, amplification and intruders.",
)
@click.option(
    "--side",
    type=click.Choice(["left", "right"]),
    default="left",
    show_default=True,
    help="φ on left (output) or right (input) singular vectors; Hu et al. use the right vectors of A.",
)
@click.option(
    "--cap",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="φ grid: i, j up to min(rank, CAP); every value to 16, then log-spaced.",
)
@click.option(
    "--amp-rank",
    type=click.IntRange(min=1),
    default=None,
    help="r of the amplification factor [default: a LoRA update's rank; a dense one takes the other's].",
)
@click.option(
    "--no-intruders", is_flag=True, help="Skip intruder dimensions (the dense SVDs of W and W + ΔW)."
)
@click.option(
    "--labels", nargs=2, default=None, metavar="X_LABEL Y_LABEL", help="Names of X and Y in the tables."
)
@format_option("--format-x", help="Force X's format.")
@format_option("--format-y", help="Force Y's format.")
@format_option("--base-format", help="Force the base's format.")
@click.option("--revision-x", default=None, help="Hub revision (branch, tag or commit) of X, if a Hub id.")
@click.option("--revision-y", default=None, help="Hub revision of Y, when it is a Hub id.")
@click.option("--base-revision", default=None, help="Hub revision of --base, when it is a Hub id.")
@_common_options
def compare(
    x,
    y,
    base,
    side,
    cap,
    amp_rank,
    no_intruders,
    labels,
    format_x,
    format_y,
    base_format,
    revision_x,
    revision_y,
    base_revision,
    out,
    intruder_k,
    epsilon,
    svd,
    precision,
    device,
    include,
    exclude,
    seed,
    no_report,
    quiet,
    as_json,
):
    """Compare two updates of the same base: subspace similarity, cosine, amplification, intruder dimensions.

    \b
      lorascope compare ADAPTER_R8 ADAPTER_R64                 φ and cosine (no base needed)
      lorascope compare ADAPTER FULL_TUNED --base BASE         adds amplification and intruders
      lorascope compare TUNED_A TUNED_B --base BASE            two full fine-tunes
      lorascope compare RUN_A RUN_B                            two trainer runs (--base: the one they
                                                               were trained from)

    Writes compare_modules.csv, subspace_similarity.csv, amplification.csv, intruders.csv,
    intruder_modules.csv, intruder_sweep.csv and compare_summary.json to --out.
    """
    from ..compare import compare as run_compare

    from ..outputs import writing
    from .folders import compare_inputs

    out = _check_out(out or default_out("compare", x, y))
    x, y, base = compare_inputs(x, y, base)
    x, y = resolve_input(x, revision_x, quiet=quiet), resolve_input(y, revision_y, quiet=quiet)
    base = resolve_input(base, base_revision, quiet=quiet)
    with writing(out, "compare", mode="update", drop=["report.html", "figures"]) as tx:
        results = run_compare(
            x,
            y,
            base,
            labels=tuple(labels) if labels else None,
            format_x=_fmt(format_x),
            format_y=_fmt(format_y),
            base_format=_fmt(base_format),
            progress=not quiet,
            side=side,
            cap=cap,
            amp_rank=amp_rank,
            intruders=not no_intruders,
            intruder_k=intruder_k,
            epsilon=epsilon,
            svd=svd,
            precision=precision,
            device=device,
            include=include,
            exclude=exclude,
            seed=seed,
        )
        _write(results, tx, no_report)
    results.path = tx.path
    _finish(results, out, no_report, quiet)


@click.command()
@click.argument("base", type=CHECKPOINT)
@click.argument("tuned", type=CHECKPOINT)
@click.option("--label", default=None, help="Name of the update in the tables [default: from its path].")
@format_option("--format", "fmt", help="Force the format of the tuned checkpoint or adapter.")
@format_option("--base-format", help="Force the base's format.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of TUNED, if a Hub id.")
@click.option("--base-revision", default=None, help="Hub revision of BASE, when it is a Hub id.")
@_common_options
def intruders(
    base,
    tuned,
    label,
    fmt,
    base_format,
    revision,
    base_revision,
    out,
    intruder_k,
    epsilon,
    svd,
    precision,
    device,
    include,
    exclude,
    seed,
    no_report,
    quiet,
    as_json,
):
    """Intruder dimensions: top singular vectors of W_tuned unlike every singular vector of W_base.

    \b
      lorascope intruders BASE ADAPTER
      lorascope intruders BASE TUNED --intruder-k 10 --epsilon 0.5
      lorascope intruders BASE RUN_DIR                 a trainer run's update

    Shuttleworth et al. 2024, Algorithm 1. Writes intruders.csv (each top-k vector's largest |cos| with the
    base), intruder_modules.csv, intruder_sweep.csv (counts for ε = 0.10 … 0.90) and compare_summary.json.
    """
    from ..compare import intruders as run_intruders

    from ..outputs import writing
    from .folders import base_input, tuned_input

    out = _check_out(out or default_out("intruders", base, tuned))
    base, tuned = base_input(base, "intruders"), tuned_input(tuned, "intruders")
    base = resolve_input(base, base_revision, quiet=quiet)
    tuned = resolve_input(tuned, revision, quiet=quiet)
    with writing(out, "intruders", mode="update", drop=["report.html", "figures"]) as tx:
        results = run_intruders(
            base,
            tuned,
            label=label,
            format=_fmt(fmt),
            base_format=_fmt(base_format),
            progress=not quiet,
            intruder_k=intruder_k,
            epsilon=epsilon,
            svd=svd,
            precision=precision,
            device=device,
            include=include,
            exclude=exclude,
            seed=seed,
        )
        _write(results, tx, no_report)
    results.path = tx.path
    _finish(results, out, no_report, quiet)


def _check_out(out: Path) -> Path:
    """A new folder, one this command wrote, or a spectrum results folder (the tables join its report)."""
    from ..compare.results import SUMMARY_JSON, TABLES

    return check_out(out, marker=(SUMMARY_JSON, *TABLES.values(), "report.html"))


def _write(results, tx, no_report: bool) -> None:
    """Tables and report into the transaction's stage: the spectrum report with its comparison section where
    the
    folder holds spectrum results, else a compare page; without a report, the earlier one is dropped."""
    from ..report.folder import render_folder

    results.write(tx.stage)
    if not no_report:
        render_folder(tx.stage, None)


def _finish(results, out: Path, no_report: bool, quiet: bool) -> None:
    if not quiet and not json_mode():
        print_headline(results.summary)
    wrote(out)
    if not no_report:
        wrote(out / "report.html", "report")
    s = results.summary
    emit(
        {"results": out, "report": None if no_report else out / "report.html"},
        kind=s.get("kind"),
        labels=s.get("labels"),
        inputs=s.get("inputs"),
        totals=s.get("totals"),
        headline=s.get("headline"),
        seconds=(s.get("timing") or {}).get("total_seconds"),
        warnings=s.get("warnings") or [],
    )


def print_headline(summary: dict) -> None:
    """A few lines: mean cosine and φ over modules, then amplification and intruders per update."""
    from ..report.formatting import counted

    h = summary.get("headline") or {}
    n = (summary.get("totals") or {}).get("modules", 0)
    if "mean_cosine" in h:
        click.echo(
            f"{n} modules compared: mean cosine {_g(h['mean_cosine'])}, mean φ(1,1) {_g(h['mean_phi_1_1'])}, "
            f"mean φ(k_x, k_y) {_g(h['mean_phi_all'])} (random subspaces: {_g(h['mean_random_all'])})"
        )
    for label, u in (h.get("updates") or {}).items():
        parts = []
        if u.get("median_amplification") is not None:
            parts.append(
                f"median amplification {_g(u['median_amplification'])} along the top "
                f"{_g(u.get('median_rank'))} singular directions of its ΔW"
            )
        if "intruders" in u:
            parts.append(
                f"{counted(u['intruders'], 'intruder dimension')} at ε = {u['epsilon']:g} in "
                f"{u['modules_with_intruders']} of {counted(u['modules'], 'module')}"
            )
        if parts:
            click.echo(f"  {label}: " + "; ".join(parts))


def _g(v) -> str:
    return "–" if v is None else f"{float(v):.3g}"
