"""lorascope/rank/training.py: a training sweep against r, and the Kneedle point (Satopää et al. 2011, §3)."""

import numpy as np
import pandas as pd

from lorascope.rank.training import knee, knees, lower_is_better, metric_columns, training_table


def test_the_knee_is_the_point_farthest_above_the_chord():
    ranks = np.array([1, 2, 4, 8, 16, 32])
    acc = np.array([0.1, 0.5, 0.85, 0.9, 0.92, 0.93])  # saturates after r = 4
    got = knee(ranks, acc, lower_better=False)
    x = np.log2(ranks)
    xs, ys = (x - x[0]) / (x[-1] - x[0]), (acc - acc[0]) / (acc[-1] - acc[0])
    assert got["rank"] == ranks[int(np.argmax(ys - xs))] == 4  # Kneedle written out: distance above y = x
    loss = knee(ranks, 1 - acc, lower_better=True)
    assert loss["rank"] == 4  # a loss is oriented so larger is better first
    straight = knee(ranks, np.log2(ranks), lower_better=False)
    assert straight["rank"] is None  # a curve that never rises above its chord has no knee


def test_metric_columns_and_orientation():
    index = pd.DataFrame(
        {"run": ["a"], "method": ["lora"], "rank": [4], "edit_loss": [0.2], "edit_acc": [0.9], "note": ["x"]}
    )
    assert metric_columns(index) == ["edit_loss", "edit_acc"] and lower_is_better("edit_loss")
    assert not lower_is_better("edit_acc")
    table = training_table(index)
    assert list(table.columns[:3]) == ["run", "method", "rank"]
    assert isinstance(knees(table), pd.DataFrame)
