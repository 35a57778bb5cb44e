"""lorascope/delta/items.py: lazy update items, filtering by name, and the one duplicate-name rule."""

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.base import TensorRef
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.delta.items import Plan, dense_delta, filter_names, unique_names, weight_name
from lorascope.errors import LorascopeError


@pytest.fixture
def plan(tmp_path):
    store = SafetensorsFile(save_st(tmp_path / "a.safetensors", {"w": torch.ones(3, 2)}))
    ref = TensorRef(store, "w")
    names = ["model.layers.0.q", "model.layers.0.v", "model.layers.0.q", "model.layers.0.q"]
    return Plan([dense_delta(n, ref, ref) for n in names])


def test_duplicates_are_kept_and_renamed_with_a_warning(plan):
    assert unique_names(plan) is plan
    assert [d.name for d in plan.deltas] == [
        "model.layers.0.q",
        "model.layers.0.v",
        "model.layers.0.q#2",
        "model.layers.0.q#3",
    ]
    assert [w["reason"] for w in plan.warnings] == [
        "two modules map to this name; the second is named model.layers.0.q#2",
        "two modules map to this name; the second is named model.layers.0.q#3",
    ]


def test_filters_are_regexes_searched_anywhere(plan):
    kept = filter_names(plan, r"\.q$", None)
    assert [d.name for d in kept.deltas] == ["model.layers.0.q"] * 3 and len(plan.deltas) == 4  # a new plan
    assert [d.name for d in filter_names(plan, None, "q").deltas] == ["model.layers.0.v"]
    with pytest.raises(LorascopeError, match="no module name passes the filters"):
        filter_names(plan, "k_proj", None)
    with pytest.raises(LorascopeError, match="--include '\\(' is not a valid regular expression"):
        filter_names(plan, "(", None)


def test_an_item_knows_its_shape_without_reading(plan):
    d = plan.deltas[0]
    assert d.shape == (3, 2) and d.family == "dense" and d.scale is None and d.rank is None
    assert d.tuned.key == "w" and weight_name("a.b.weight") == "a.b" and weight_name("a.bias") == "a.bias"
