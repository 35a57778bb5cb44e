"""On the uniform-rank sweep's parameters figure, the 'k=…' labels of ranks whose energy is near zero were put
below their points, on the x axis's tick labels ('k=16' over '10 k' for a full diff of 10000 σ). A label goes
below its point only where the axes have room for it there."""

from __future__ import annotations

import numpy as np

from lorascope.metrics import module_metrics
from lorascope.report import build_page
from lorascope.results import Results
from report.layout import text_problems


def full_diff_results(n_sigma: int) -> Results:
    rows, spectra = [], {}
    for layer in range(2):
        name = f"model.layers.{layer}.q"
        s = np.sort(np.random.default_rng(layer).random(n_sigma))[::-1]
        row = {"name": name, "layer": layer, "module": "q", "rows": n_sigma, "cols": n_sigma}
        row |= {"source": "dense", "method": "exact"}
        row.update(module_metrics(s, (n_sigma, n_sigma), float(np.sqrt(np.sum(s**2))), True, 3.0))
        rows.append(row)
        spectra[name] = s
    summary = {"kind": "full-diff", "inputs": [], "options": {}, "totals": {}, "timing": {}, "warnings": []}
    return Results(rows, spectra, summary)


def test_rank_labels_of_the_sweep_stay_off_the_tick_labels():
    page = build_page(full_diff_results(10_000))
    fig = next(b for b in page.figures if b.key == "sweep_params").draw()
    assert text_problems(fig) == []
