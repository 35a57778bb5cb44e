"""`lorascope report`: re-render the report of saved results, or set several analyses side by side."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import default_out, wrote


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="HTML file (or folder for report.html) [default: RESULTS/report.html for one folder, "
                   "reports/report-<names>/report.html for several].")
@click.option("--label", "labels", multiple=True,
              help="A short name per results folder in a comparison, in order (repeat the option).")
def report(results, out, labels):
    """Write report.html and figures/*.png from saved results, without recomputing anything.

    \b
      lorascope report RESULTS_DIR [--out FILE]                 one analysis
      lorascope report DIR_A DIR_B [DIR_C …] [--out FILE]       side by side: overlaid energy curves,
                                                                heatmaps on shared scales, one joined table
    """
    from ..report import render_comparison
    from ..report.folder import render_folder

    if len(results) == 1:
        if labels:
            click.echo("--label is used only when comparing several results folders; ignored.", err=True)
        path = render_folder(results[0], out)
    else:
        path = render_comparison(list(results), out or default_out("report", *results), list(labels) or None)
    wrote(path, "report")

