"""lorascope/compare/summary.py: the headline numbers of a comparison, from its tables."""

import pandas as pd
import pytest

from lorascope.compare.results import CompareResults
from lorascope.compare.summary import headline, run_summary


def test_headline_means_medians_and_intruder_totals():
    modules = pd.DataFrame(
        {
            "cosine": [0.2, 0.4],
            "phi_1_1": [0.5, 0.7],
            "phi_min": [0.1, 0.3],
            "phi_all": [0.6, 0.8],
            "random_all": [0.1, 0.1],
            "shared_dims": [1.0, 2.0],
            "random_dims": [0.5, 0.5],
        }
    )
    amp = pd.DataFrame({"update": ["a", "a", "a"], "amplification": [1.0, 3.0, 2.0], "rank": [4, 4, 8]})
    intr = pd.DataFrame({"update": ["a", "a"], "intruders": [2, 0], "epsilon": [0.5, 0.5]})
    res = CompareResults({}, modules=modules, amplification=amp, intruder_modules=intr)
    h = headline(res, ["a", "b"])
    assert h["mean_cosine"] == pytest.approx(0.3) and h["mean_phi_all"] == pytest.approx(0.7)
    assert h["updates"]["a"] == {
        "median_amplification": 2.0,
        "median_rank": 4.0,
        "intruders": 2,
        "epsilon": 0.5,
        "modules_with_intruders": 1,
        "modules": 2,
    }
    assert h["updates"]["b"] == {}
    summary = run_summary(
        "compare", [], ["a", "b"], {"seed": 0}, res, [{"name": "x", "reason": "y"}], 1.23456
    )
    assert summary["totals"] == {"modules": 2, "skipped": 1} and summary["timing"]["total_seconds"] == 1.235
    assert summary["kind"] == "compare" and summary["versions"]["lorascope"] == summary["lorascope_version"]
