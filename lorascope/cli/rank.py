"""What ``lorascope sweep`` and ``lorascope select`` share: parameter counts and rank lists parsed, the
analysis options for checkpoint inputs, the report of their folder, and the terminal's number format. The
commands themselves are ``cli/sweep.py`` and ``cli/select.py``."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import json_option, resolve_input, wrote
from .options import format_option

WRITES = ("modules.csv", "singular_values.safetensors", "summary.json", "vectors.csv", "report.html")


def parse_count(text: str) -> int:
    """'20M' -> 20_000_000, '1.5B' -> 1_500_000_000, '500k', '20_000_000', '2e7' (``lorascope.units``)."""
    from ..units import parse_count as count

    try:
        return count(text, "--budget")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
            raise click.BadParameter(
                f"{text!r}: expected positive integers separated by commas, e.g. 1,2,4,8"
            ) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{text!r}: expected positive integers separated by commas, e.g. 1,2,4,8")
    return sorted(set(out))


def analysis_options(f):
    """Options passed to ``lorascope.analyze`` when checkpoints (not a results folder) are given."""
    options = [
        format_option("--format", "fmt", help="Force the format of the adapter / tuned input."),
        format_option("--base-format", help="Force the format of the base input."),
        click.option(
            "--revision",
            default=None,
            help="Hub revision (branch, tag or commit) of the adapter / tuned input, if a Hub id.",
        ),
        click.option("--base-revision", default=None, help="Hub revision of the base input, if a Hub id."),
        click.option("--include", default=None, help="Only modules whose name matches this regex."),
        click.option("--exclude", default=None, help="Skip modules whose name matches this regex."),
        click.option(
            "--precision",
            type=click.Choice(["float32", "float64"]),
            default="float64",
            show_default=True,
            help="dtype of dense ΔW and its SVDs.",
        ),
        click.option("--no-report", is_flag=True, help="Write only the tables, not report.html and figures."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars and no terminal summary."),
        json_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def resolve_inputs(
    inputs: tuple[str, ...], revision: str | None, base_revision: str | None, quiet: bool
) -> list[Path]:
    """Local paths for the inputs: a Hub id becomes its cache snapshot (the last input: adapter or tuned)."""
    revisions = [base_revision, revision] if len(inputs) == 2 else [revision] * len(inputs)
    if len(inputs) < 2 and base_revision is not None:
        resolve_input(None, base_revision)  # refuses a revision for a base that was not given
    return [resolve_input(x, r, quiet=quiet) for x, r in zip(inputs, revisions)]


def analyze_kwargs(fmt, base_format, include, exclude, precision) -> dict:
    return {
        "format": None if fmt == "auto" else fmt,
        "base_format": None if base_format == "auto" else base_format,
        "include": include,
        "exclude": exclude,
        "precision": precision,
    }


def write_report(out: Path, no_report: bool) -> Path | None:
    """The folder's report, now with its sweep or selection sections (a selection made from a functional
    sweep alone has no spectra to show, and no report)."""
    if no_report or not (out / "summary.json").is_file():
        return None
    from ..report import render_report

    path = render_report(out)
    wrote(path, "report")
    return path


def console():
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def fmt(v, digits: int = 4) -> str:
    import math

    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)
