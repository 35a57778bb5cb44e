"""lorascope/analysis_notes.py: what summary.json says beside the tables — floors per method, dtypes,
warnings."""

import torch
from builders import save_st

from lorascope.analysis_notes import (
    FLOOR_BY_METHOD,
    dtype_census,
    mixed_dtype_warnings,
    numerics_summary,
    zero_update_warnings,
)
from lorascope.checkpoint import open_checkpoint
from lorascope.delta import plan_deltas


def test_numerics_count_methods_and_the_largest_relative_floor():
    rows = [
        {"method": "exact", "sigma_floor": 1e-6, "spectral_norm": 2.0},
        {"method": "exact", "sigma_floor": 1e-5, "spectral_norm": 4.0},
        {"method": "factored", "sigma_floor": 0.0, "spectral_norm": 0.0},
    ]
    got = numerics_summary(rows)
    assert got["methods"] == {
        "exact": {"modules": 2, "floor": FLOOR_BY_METHOD["exact"]},
        "factored": {"modules": 1, "floor": FLOOR_BY_METHOD["factored"]},
    }
    assert got["max_floor_over_sigma1"] == 2.5e-6 and "sigma_floor" in got["floor_rule"]


def test_dtypes_are_counted_and_mixed_ones_warned(tmp_path):
    w = "model.layers.0.q.weight"
    base = open_checkpoint(save_st(tmp_path / "b.safetensors", {w: torch.zeros(4, 4, dtype=torch.bfloat16)}))
    tuned = open_checkpoint(save_st(tmp_path / "t.safetensors", {w: torch.ones(4, 4)}))
    plan = plan_deltas(base, tuned)
    census = dtype_census(plan)
    assert census and "bfloat16" in str(census) and "float32" in str(census)
    (warning,) = mixed_dtype_warnings(plan)
    assert "bfloat16" in warning["reason"] and "float32" in warning["reason"]


def test_exactly_zero_updates_are_named():
    rows = [{"name": "a", "fro_norm": 0.0}, {"name": "b", "fro_norm": 1.0}]
    (warning,) = zero_update_warnings(rows)
    assert "a" in warning["name"] + warning["reason"] and "b" not in warning["name"]
