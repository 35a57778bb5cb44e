"""lorascope/rank/spectra.py: what the rank code knows of each module — complete or a top-k — and the tails,
summed from the smallest value up."""

import numpy as np
import pandas as pd
import pytest

from lorascope.rank.spectra import complete_spectrum, spectra_from
from lorascope.results import modules_frame


def frame(rows):
    return modules_frame([{"layer": 0, "module": "w", "rows": 8, "cols": 5, **r} for r in rows])


def test_completeness_rules():
    s = np.array([3.0, 2.0, 1.0])
    fro = float(np.sqrt(np.sum(s**2)))
    base = {"rows": 8, "cols": 5, "fro_norm": fro}
    assert complete_spectrum({**base, "method": "exact"}, s)
    assert complete_spectrum({**base, "method": "factored"}, s)  # a LoRA: the rest are exact zeros
    assert not complete_spectrum({**base, "method": "randomized"}, s)
    assert not complete_spectrum({**base, "method": "exact", "rank_beyond_k": True}, s)
    assert not complete_spectrum({**base, "method": "exact", "fro_norm": 2 * fro}, s)  # Σσ² short of ‖ΔW‖²
    assert complete_spectrum({**base, "method": "randomized"}, np.ones(5) * fro / np.sqrt(5))  # all p values


def test_tails_energies_and_unknowns():
    s = np.array([3.0, 2.0, 1.0, 2e-9])
    fro = float(np.sqrt(np.sum(s**2)))
    top = np.array([3.0, 2.0])
    sp = spectra_from(
        frame(
            [
                {"name": "a", "method": "exact", "fro_norm": fro},
                {"name": "b", "method": "randomized", "fro_norm": fro},
            ]
        ),
        {"a": s, "b": top},
    )
    assert sp.table["complete"].tolist() == [True, False]
    assert sp.tails(0)[3] == pytest.approx(4e-18, rel=1e-6)  # no cancellation against the total
    lost = sp.lost(np.array([1, 1]))
    assert lost[0] == pytest.approx(5.0 + 4e-18) and lost[1] == pytest.approx(fro**2 - 9.0)
    assert np.isnan(sp.lost(np.array([1, 3]))[1])  # past the top-k: unknown, never guessed
    assert np.isnan(sp.energy_at(np.array([4, 3]))[1]) and sp.energy_at(np.array([4, 3]))[0] == 1.0
    assert sp.max_ranks.tolist() == [4, 2] and sp.unit_costs.tolist() == [13, 13]


def test_modules_without_a_spectrum_are_left_out():
    sp = spectra_from(frame([{"name": "a", "method": "exact", "fro_norm": 1.0}]), {})
    assert sp.names == [] and isinstance(sp.table, pd.DataFrame)
