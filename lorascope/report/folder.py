"""The page of any folder lorascope wrote, whatever it holds: the one renderer ``lorascope report FOLDER`` and
the commands that write into a results folder (``compare``, ``intruders``) call.

It sits beside the report's other entry points rather than in the package's ``__init__``, because the pages it
may draw (``compare_figures``, ``training_page``, the demo's) are themselves built on that ``__init__``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LorascopeError


def render_folder(folder: str | Path, out: str | Path | None = None) -> Path:
    """The page of any folder lorascope writes that has one (``lorascope.kinds``): a results folder, a
    comparison, the demo, a training sweep, a trainer run, or a folder of results folders (compared).

    Args:
        folder: the folder.
        out: the HTML file (or folder for ``report.html``); default ``report.html`` inside ``folder``.

    Returns:
        The path of the HTML file.

    Raises:
        LorascopeError: a folder of a kind that has no page (parameter counts, an audit, an adapter), naming
            what it is and what to run instead.
    """
    from ..kinds import KINDS, describe, folder_kind, results_set
    from . import render_comparison, render_report  # looked up when called: the package's entry points in use

    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "results":
        return render_report(folder, out)
    if kind == "compare":
        from .compare_figures import render_compare_report

        return render_compare_report(folder, out)
    if kind == "demo":
        from ..train.demo import render_demo_folder

        return render_demo_folder(folder, out)
    if kind in ("train-sweep", "run"):
        from .training_page import render_training

        return render_training(folder, out)
    if kind == "results-set":
        found = results_set(folder)
        if len(found) < 2:
            raise LorascopeError(
                f"{folder} holds one results folder, {found[0].name}, and no page of its "
                f"own; give that folder: `lorascope report {found[0]}`."
            )
        return render_comparison(found, out if out is not None else folder)
    if kind is not None:
        raise LorascopeError(f"{folder} is {describe(folder)}, which has no report page; {KINDS[kind].hint}.")
    if not folder.exists():
        raise LorascopeError(
            f"{folder} does not exist; give a folder lorascope wrote (a results, "
            "comparison, demo, training sweep or run folder)."
        )
    raise LorascopeError(
        f"{folder} is not a folder lorascope wrote a report for: it holds none of modules.csv + "
        "singular_values.safetensors + summary.json (results: `lorascope spectrum`), compare_summary.json "
        "(`lorascope compare`), demo.json (`lorascope demo`), index.csv (`lorascope train-sweep`) or "
        "metrics.json (`lorascope train`). If it is a checkpoint or an adapter, analyze it first: "
        f"`lorascope spectrum {folder}`."
    )
