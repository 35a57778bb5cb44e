"""Heatmaps of updates at 1e30 (an overflowed checkpoint) wrote colour-bar ticks as thirty-digit integers
('2000000000000000000000000000000') that ran into each other, and cell values as '1.25e+30', wider than a
cell; values equal but for rounding (stable rank 1 and 1 + 1e−7) put an offset '1e−6+1' on the colour bar's
label. Ticks and cells now use a short scientific form ('1.2e30'), colour bars have no offset, and values
equal to 1e−9 relative share one colour."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from report.layout import text_problems
from report.synthetic import synthetic_results

from lorascope.report import build_page
from lorascope.report.figure_style import plain_number, short_number


def _scaled(factor):
    results = synthetic_results(4, ("q", "k", "v"), kind="full-diff", hidden=16)
    modules = results.modules.copy()
    for column in ("fro_norm", "spectral_norm", "relative_update"):
        if column in modules:
            modules[column] = modules[column] * factor
    modules["stable_rank"] = 1.0 + 1e-7 * np.arange(len(modules))
    return type(results)(modules, results.spectra, results.summary, results.vectors)


def test_numbers_are_short_at_any_magnitude():
    assert plain_number(2e30) == "2e30" and plain_number(1e-30) == "1e−30"
    assert plain_number(20000) == "20000" and plain_number(0.5) == "0.5"
    assert short_number(1.25e30, 2) == "1.2e30"


def test_heatmaps_read_cleanly_at_huge_tiny_and_nearly_equal_values():
    for factor in (1e30, 1e-30):
        for block in build_page(_scaled(factor)).figures:
            if block.key.startswith("heatmap"):
                fig = block.draw()
                assert text_problems(fig) == [], (factor, block.key)
                plt.close(fig)
