"""The layer profile of one layer with 40 module types (a model whose per-layer modules are all distinct)
pushed its two-column legend off the bottom of a fixed 3.6-inch canvas, and a single layer left the x axis
spanning ±0.05 with tick labels such as '−0.054' drawn over each other. The figure now grows to hold every
legend row, and one or two layers get an axis of whole layers around them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from report.layout import text_problems

from lorascope.report import figures as fg


def _profile(layers, n_types):
    rng = np.random.default_rng(0)
    cols = [f"t{j}_proj" for j in range(n_types)]
    values = rng.random((len(layers), n_types)) + 1
    return pd.DataFrame(values, index=pd.Index(layers, name="layer"), columns=cols)


def test_forty_types_in_one_layer_fit_the_canvas():
    fig = fg.layer_profile(_profile([0], 40), {}, "‖ΔW‖ (Frobenius, weight units)")
    assert text_problems(fig) == []
    low, high = fig.axes[0].get_xlim()
    ticks = [t for t in fig.axes[0].get_xticks() if low <= t <= high]
    assert all(float(t).is_integer() for t in ticks)


def test_many_types_over_many_layers_fit_the_canvas():
    for n_types in (12, 40, 60):
        assert text_problems(fg.layer_profile(_profile(range(30), n_types), {}, "‖ΔW‖")) == [], n_types
