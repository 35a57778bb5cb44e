"""The report's figures as functions returning matplotlib Figures, for notebooks and scripts.

Each takes a ``Results`` (or a results folder) and returns the ``matplotlib.figure.Figure`` the report draws
for it, built by the report's own section and figure code (``lorascope.report``), so a notebook shows exactly
what report.html shows:

    from lorascope import analyze, figures
    results = analyze("my-adapter/")
    figures.energy(results)            # in a notebook, the figure displays itself
    figures.names(results)             # every figure these results have

Figures of later analyses (sweep, selection, comparison, training) are there when their files are in the
results folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .results import Results, load_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "energy",
    "figure",
    "heatmaps",
    "magnitude_profile",
    "magnitudes",
    "names",
    "spectra",
    "sweep",
    "sweep_params",
    "training",
]


def _show_in_notebooks() -> None:
    """In an IPython session, display a ``Figure`` as PNG, as ``%matplotlib inline`` would: these figures
    are built without pyplot, which is what registers that display otherwise. A formatter there is kept."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    from matplotlib.figure import Figure

    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        png.for_type(Figure, lambda fig: print_figure(fig, "png"))


def _results(results: Results | str | Path) -> Results:
    return results if isinstance(results, Results) else load_results(results)


def _blocks(results: Results) -> dict:
    from .report import build_page

    return {block.key: block for block in build_page(results).figures}


def names(results: Results | str | Path) -> list[str]:
    """The names of the figures these results have, in page order."""
    return list(_blocks(_results(results)))


def figure(results: Results | str | Path, name: str) -> Figure:
    """The report figure ``name`` of ``results``.

    Raises:
        KeyError: no figure of that name for these results (the message lists those there are).
        LorascopeError: ``results`` is a path that is not a readable results folder.
    """
    blocks = _blocks(_results(results))
    if name not in blocks:
        raise KeyError(
            f"no figure named {name!r} for these results; they have: {', '.join(blocks) or 'none'}"
        )
    _show_in_notebooks()
    return blocks[name].draw()


def heatmaps(results: Results | str | Path) -> Figure:
    """Layer × module-type heatmaps of entropy_rank, rank_90, the update size and stable_rank."""
    return figure(results, "heatmaps")


def spectra(results: Results | str | Path) -> Figure:
    """Singular values σᵢ of every module, one panel per module type, coloured by layer."""
    return figure(results, "spectra")


def energy(results: Results | str | Path) -> Figure:
    """Cumulative energy Σ_{i≤k} σᵢ² / ‖ΔW‖_F² of every module, with the 90 / 95 / 99 % guides."""
    return figure(results, "energy")


def magnitudes(results: Results | str | Path) -> Figure:
    """The update size of every module (relative_update with a base, else fro_norm) by module type."""
    return figure(results, "magnitude_distribution")


def magnitude_profile(results: Results | str | Path) -> Figure:
    """The update size per module type through the depth of the model."""
    return figure(results, "magnitude_profile")


def sweep(results: Results | str | Path) -> Figure:
    """The model's relative error if every module were truncated to one rank k, against k."""
    return figure(results, "sweep_error")


def sweep_params(results: Results | str | Path) -> Figure:
    """The energy kept by a uniform rank k against the adapter parameters it costs."""
    return figure(results, "sweep_params")


def training(results: Results | str | Path) -> Figure:
    """Effective rank, energy and magnitude per module type against the step (``lorascope.callbacks``)."""
    return figure(results, "training_spectra")
