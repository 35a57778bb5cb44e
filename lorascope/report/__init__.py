"""Reports people read: one self-contained HTML page and PNG figures, from saved results only.

Three steps, each its own room: ``data.py`` computes what is shown from a results folder,
``sections.py`` (one analysis) and ``comparison.py`` (several side by side) structure it into
sections of figures and tables, and ``html.py`` renders those to PNGs and a page. Checkpoints are
never read here: a report re-renders from ``modules.csv``, ``singular_values.safetensors`` and
``summary.json`` alone.

    render_report("reports/spectrum-my-adapter")              # -> .../report.html + figures/*.png
    render_comparison(["runs/r8", "runs/r64", "runs/full"], "reports/compare.html")
    render_folder("reports/demo")                             # any folder lorascope wrote (report.folder)

Analyses of trainer runs (``trained.py``) open their page with the answer: task outcome against rank and
parameters, forgetting, and effective rank during training (``outcome_figures.py``); a training sweep or a
single run folder has a page of that alone (``training_page.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LorascopeError
from ..results import Results, load_results

REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

__all__ = ["REPORT_HTML", "build_page", "render_comparison", "render_report"]


def build_page(results: Results):
    """The structured page of one analysis (sections of blocks), before any drawing."""
    from .blocks import Page
    from .sections import SECTIONS, RunContext

    return Page(run_title(results), run_subtitle(results), SECTIONS.build(RunContext(results)))


def render_report(results_dir: str | Path | Results, out: str | Path | None = None) -> Path:
    """Write the report of one analysis: an HTML page and its figures as PNG files.

    Args:
        results_dir: a results folder (or ``Results`` already loaded or computed).
        out: the HTML file to write, or a folder to write ``report.html`` into; default
            ``report.html`` inside the results folder. Figures go to ``figures/`` beside it
            (``<stem>-figures/`` when the page is not named ``report.html``).

    Returns:
        The path of the HTML file.

    Raises:
        LorascopeError: the folder is not a readable results folder, or no output path can be chosen.
    """
    results = results_dir if isinstance(results_dir, Results) else load_results(results_dir)
    if out is None and results.path is None:
        raise LorascopeError(
            "these results were never saved to a folder; give the report an output path (out=...)"
        )
    html = html_path(out if out is not None else results.path)
    return publish(html, lambda page_file, figures: write_report(results, page_file, figures))


def write_report(results: Results, html: Path, figures: Path | None = None) -> Path:
    """Draw the report of ``results`` into ``html`` and ``figures`` as they are (inside a transaction's
    stage)."""
    from .html import collector_paused, write_page

    with collector_paused():  # building imports matplotlib and the figure modules: nothing to collect there
        page = build_page(results)
    return write_page(
        page, html, figures if figures is not None else figures_dir(html), footer=footer_text([results])
    )


def publish(html: Path, draw, command: str = "report") -> Path:
    """Write a page and its figures through the output transaction (``lorascope.outputs``); return ``html``.

    ``draw(page_file, figures_folder)`` writes them. A ``report.html`` in a folder lorascope owns (new, empty,
    or holding its manifest) is written by one transaction of that folder, which drops the earlier page and
    figures; a page beside files lorascope did not write is replaced atomically and its figures folder is a
    transaction of its own.
    """
    from ..outputs import INTERNAL, read_manifest, shown, writing

    html = Path(html)
    folder = html.parent
    if shown(folder) != folder:  # already inside an open transaction's stage: write as it is
        draw(html, figures_dir(html))
        return html
    owned = (
        not folder.exists()
        or read_manifest(folder) is not None
        or not any(INTERNAL not in p.name for p in folder.iterdir())
    )
    if html.name == REPORT_HTML and owned:
        with writing(folder, command, mode="update", drop=[REPORT_HTML, FIGURES_DIR]) as tx:
            draw(tx.stage / REPORT_HTML, tx.stage / FIGURES_DIR)
        return html
    from .html import check_writable

    check_writable(html)
    page = f"{INTERNAL}page.html"  # drawn inside the stage, so a refused or failed run writes no page either
    with writing(figures_dir(html), command) as tx:
        draw(tx.stage / page, tx.stage)
    os.replace(tx.path / page, html)
    return html


def render_comparison(
    results_dirs: list[str | Path | Results],
    out: str | Path,
    labels: list[str] | None = None,
    run_folders: list[Path | None] | None = None,
    title: str | None = None,
    command: str = "report",
) -> Path:
    """Write one page that sets several analyses of the same model side by side.

    Args:
        results_dirs: two or more results folders (or ``Results``).
        out: the HTML file to write, or a folder to write ``report.html`` into.
        labels: a short name per run; default the folder names (made unique).
        run_folders: each analysis' trainer run folder (None where it has none); default: found from each
            results folder's summary.json (the run's ``adapter/`` or ``tuned/`` it analyzed).
        title: the page title; default "Comparison: " and the labels.
        command: the command recorded in the output folder's manifest.

    Returns:
        The path of the HTML file.

    Raises:
        LorascopeError: fewer than two runs, a folder that is not a results folder, labels that do not fit, or
            a trainer run folder that cannot be read.
    """
    from .comparison import build_comparison_page
    from .html import write_page

    runs = [r if isinstance(r, Results) else load_results(r) for r in results_dirs]
    if len(runs) < 2:
        raise LorascopeError(f"a comparison needs at least two results folders, got {len(runs)}")
    if labels is not None and len(labels) != len(runs):
        raise LorascopeError(
            f"got {len(labels)} labels for {len(runs)} results folders; give one label per folder"
        )
    if labels is not None and len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise LorascopeError(
            f"the label(s) {', '.join(map(repr, twice))} are given more than once; each run's column "
            "is named by its label, so labels must differ"
        )
    html = html_path(out)
    page = build_comparison_page(runs, labels or run_labels(runs), run_folders, title)
    footer = footer_text(runs)
    return publish(
        html, lambda page_file, figures: write_page(page, page_file, figures, footer=footer), command
    )


def html_path(out: str | Path) -> Path:
    """``out`` itself when it names a file, ``out/report.html`` when it is (or looks like) a folder."""
    out = Path(out)
    if out.is_dir() or (not out.exists() and out.suffix.lower() not in (".html", ".htm")):
        return out / REPORT_HTML
    return out


def figures_dir(html: Path) -> Path:
    """Where the PNGs of a page go: ``figures/`` beside ``report.html``, else ``<stem>-figures/``."""
    return html.parent / (FIGURES_DIR if html.name == REPORT_HTML else f"{html.stem}-{FIGURES_DIR}")


def run_title(results: Results) -> str:
    """What was analyzed, in a few words: the input names (base → tuned), else the folder name."""
    inputs = (results.summary or {}).get("inputs") or []
    names = [
        (i.get("hub") or {}).get("repo_id") or Path(str(i.get("path", ""))).name
        for i in inputs
        if i.get("path")
    ]
    if names:
        return " → ".join(names)
    return results.path.name if results.path is not None else "lorascope results"


def run_subtitle(results: Results) -> str:
    s = results.summary or {}
    parts = ["lorascope spectrum report", f"{len(results.modules)} modules"]
    if s.get("kind"):
        parts.append(str(s["kind"]))
    if s.get("created"):
        parts.append(f"analyzed {s['created']}")
    return " · ".join(parts)


def run_labels(runs: list[Results]) -> list[str]:
    """A short unique label per run: its folder name, with the parent folder added where names repeat."""
    labels = [r.path.name if r.path is not None else f"run {i + 1}" for i, r in enumerate(runs)]
    for i, r in enumerate(runs):
        if labels.count(labels[i]) > 1 and r.path is not None:
            labels[i] = f"{r.path.parent.name}/{r.path.name}"
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return labels


def footer_text(runs: list[Results]) -> str:
    from .. import __version__

    from ..outputs import shown

    where = ", ".join(str(shown(r.path)) for r in runs if r.path is not None)
    return (
        f"Written by lorascope {__version__} from the saved results in {where or 'memory'}; "
        "it reads no checkpoint."
    )
