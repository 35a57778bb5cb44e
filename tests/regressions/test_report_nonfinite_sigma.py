"""A results folder whose spectrum held an infinite σ (an overflowed float16 update) crashed the spectra
figure with "Axis limits cannot be NaN or Inf": the per-type y-limits were taken over every positive σ,
inf included. Non-finite σ are now left out of every curve and of the limits."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from lorascope.report import figures as fg
from lorascope.report.data import Curve


def test_spectra_and_energy_with_infinite_and_nan_sigma_draw():
    curves = {
        "q_proj": [
            Curve("model.layers.0.q_proj", 0.0, np.array([np.inf, 1.0, 0.5])),
            Curve("model.layers.1.q_proj", 1.0, np.array([np.nan, 2.0, 0.1])),
            Curve("model.layers.2.q_proj", 2.0, np.array([3.0, 1.0, 0.2])),
        ]
    }
    fig = fg.spectra(curves, {}, {})
    assert isinstance(fig, Figure)
    low, high = fig.axes[0].get_ylim()
    assert np.isfinite([low, high]).all() and low <= 0.1 and high >= 3.0
    assert isinstance(fg.energy_curves(curves, {}, {}), Figure)
