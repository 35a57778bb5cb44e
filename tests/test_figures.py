"""lorascope/figures.py: the report's figures as functions — the same blocks the page draws, by name."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from report.synthetic import synthetic_results

from lorascope import figures
from lorascope.errors import LorascopeError
from lorascope.report import build_page


@pytest.fixture(scope="module")
def results():
    return synthetic_results(2, kind="adapter", r=4, hidden=32)


def test_names_are_the_pages_figures_in_order(results):
    page = [b.key for b in build_page(results).figures]
    assert figures.names(results) == page and "energy" in page and "training_spectra" not in page


def test_each_function_draws_its_named_figure(results):
    fig = figures.energy(results)
    assert isinstance(fig, Figure) and fig.axes
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert lines and all(
        np.all(np.diff(line.get_ydata()) >= -1e-12)
        for line in lines
        if len(line.get_ydata()) > 2 and line.get_ydata()[0] <= line.get_ydata()[-1]
    )  # energy(k) curves never fall
    assert isinstance(figures.figure(results, "heatmaps"), Figure)


def test_unknown_names_and_folders_are_refused(results, tmp_path):
    with pytest.raises(KeyError, match="no figure named 'x'.*they have: heatmaps"):
        figures.figure(results, "x")
    with pytest.raises(LorascopeError, match="not a lorascope results folder"):
        figures.names(tmp_path)
    assert figures.names(results.save(tmp_path / "run")) == figures.names(results)  # a folder reads the same
