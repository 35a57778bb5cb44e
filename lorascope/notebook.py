"""Results as notebooks and scripts hold them: the class ``analyze`` and ``load_results`` return.

``lorascope.results.Results`` is the data every step passes along (tables, spectra, summary, files) and the
report reads; this subclass adds its views — the HTML a notebook shows (``lorascope.report.notebook``), the
report's figures (``lorascope.figures``) and the training record (``lorascope.training_record``). The views
sit above the report, so the report depends on the data alone.

    results = lorascope.analyze("my-adapter/")
    results                      # in a notebook: headline cards and the main figures
    results.figure("energy")     # one of the report's figures, a matplotlib Figure
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import results as data

if TYPE_CHECKING:
    import pandas as pd


class Results(data.Results):
    """One analysis, with its views (module docstring); everything else as ``lorascope.results.Results``."""

    @classmethod
    def of(cls, results: data.Results) -> Results:
        """The same analysis (the same tables, not copies) with its views."""
        if isinstance(results, cls):
            return results
        return cls(*results.parts())

    def _repr_html_(self) -> str:
        """What a notebook shows for these results: the headline cards and the main figures, inline."""
        from .report.notebook import results_html

        return results_html(self)

    def figure(self, name: str):
        """One of the report's figures as a matplotlib ``Figure`` (``lorascope.figures.names`` lists them).

        Raises:
            KeyError: these results have no figure of that name.
        """
        from .figures import figure

        return figure(self, name)

    def training(self) -> pd.DataFrame | None:
        """The spectra recorded during training (``training_spectra.csv``: a row per step and module), or None
        where the results folder holds none (``lorascope.training_record``)."""
        from .training_record import read_training

        return read_training(self.path) if self.path is not None else None


def load_results(path: str | Path) -> Results:
    """Read a results folder written by ``Results.save`` (``lorascope.results.load_results``), with its views.

    Raises:
        LorascopeError: the folder or one of its files is missing or unreadable.
    """
    return Results.of(data.load_results(path))
