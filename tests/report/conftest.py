"""Fixtures of the report tests: a synthetic results folder and its report, rendered once."""

from __future__ import annotations

import pytest
from report.synthetic import synthetic_results

from lorascope.report import render_report


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory):
    """A saved synthetic adapter analysis: 4 layers × 3 module types plus an lm_head without layer."""
    folder = tmp_path_factory.mktemp("adapter-results")
    synthetic_results(4, kind="adapter", r=8, unlayered=("lm_head",)).save(folder)
    return folder


@pytest.fixture(scope="session")
def adapter_report(adapter_dir):
    """report.html of ``adapter_dir``, rendered once for the whole session (tests only read it)."""
    return render_report(adapter_dir)
