"""The page of a folder lorascope wrote, whatever it holds: the one renderer ``lorascope report FOLDER`` and the
commands that write into a results folder (``compare``, ``intruders``) call.

It sits beside the report's other entry points rather than in the package's ``__init__``, because the
comparison page it may draw (``compare_figures``) is itself built on that ``__init__``.
"""

from __future__ import annotations

from pathlib import Path

from ..compare.results import SUMMARY_JSON as COMPARE_SUMMARY
from ..results import is_results_folder


def render_folder(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the page of ``folder``: a spectrum results folder (with whatever sweep, selection or comparison
    tables joined it), or a folder that holds a comparison alone.

    Args:
        folder: the folder.
        out: the HTML file (or folder for ``report.html``); default ``report.html`` inside ``folder``.

    Returns:
        The path of the HTML file.

    Raises:
        LorascopeError: the folder holds neither results nor a comparison (``render_report`` says what it
            lacks).
    """
    from . import render_report  # looked up when called, so the package's entry point is the one in use

    folder = Path(folder)
    if not is_results_folder(folder) and (folder / COMPARE_SUMMARY).is_file():
        from .compare_figures import render_compare_report

        return render_compare_report(folder, out)
    return render_report(folder, out)
