"""`lorascope report`: re-render the page of any folder lorascope wrote, or set several analyses side by
side."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ._common import default_out, emit, json_option, wrote


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="HTML file (or folder for report.html) [default: FOLDER/report.html for one folder, "
    "reports/report-<names>/report.html for several].",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="A short name per results folder in a comparison, in order (repeat the option).",
)
@json_option
def report(results, out, labels, as_json):
    """Write report.html and figures/*.png from saved results, without recomputing anything.

    \b
      lorascope report RESULTS_DIR [--out FILE]                 one analysis (spectrum, sweep, select,
                                                                compare, intruders)
      lorascope report DEMO_DIR                                 the demo's page, re-rendered
      lorascope report RUNS_DIR | RUN_DIR                       a training sweep or one trainer run: outcome
                                                                against rank, forgetting, rank during training
      lorascope report DIR_A DIR_B [DIR_C …] [--out FILE]       side by side: overlaid energy curves,
                                                                heatmaps, one joined table (trainer runs'
                                                                analyses open with their task outcome)
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
    figures = path.parent / ("figures" if path.name == "report.html" else f"{path.stem}-figures")
    emit(
        {"report": path, "figures": figures}, inputs=[str(p) for p in results], **page_document(path, figures)
    )


def page_document(html: Path, figures: Path) -> dict:
    """What a page holds, read back from it: its title, its sections (keys in order) and its figures."""
    text = html.read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", text, re.S)
    import html as html_lib

    return {
        "title": html_lib.unescape(title.group(1).strip()) if title else "",
        "sections": re.findall(r'<section id="[^"]*" data-section="([^"]+)"', text),
        "figures": sorted(str(p) for p in figures.glob("*.png")) if figures.is_dir() else [],
    }
