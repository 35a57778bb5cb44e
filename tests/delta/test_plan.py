"""lorascope/delta/plan.py: ``plan_deltas`` sends a full fine-tune, an adapter alone and an adapter on its
base to their planners, and refuses inputs given the wrong way round."""

import pytest
import torch
from builders import peft_folder, save_st

from lorascope.checkpoint import open_checkpoint
from lorascope.delta.plan import plan_deltas
from lorascope.errors import LorascopeError

Q = "model.layers.0.q_proj"


@pytest.fixture
def inputs(tmp_path):
    base = open_checkpoint(save_st(tmp_path / "b.safetensors", {f"{Q}.weight": torch.zeros(4, 6)}))
    tuned = open_checkpoint(save_st(tmp_path / "t.safetensors", {f"{Q}.weight": torch.ones(4, 6)}))
    ad = open_checkpoint(
        peft_folder(
            tmp_path / "ad",
            {f"{Q}.lora_A.weight": torch.ones(2, 6), f"{Q}.lora_B.weight": torch.ones(4, 2)},
            {"r": 2},
        )
    )
    return base, tuned, ad


def test_each_pair_of_inputs_gets_its_planner(inputs):
    base, tuned, ad = inputs
    assert plan_deltas(base, tuned).kind == "full-diff"
    assert plan_deltas(None, ad).kind == "adapter" and plan_deltas(base, ad).kind == "adapter+base"


def test_inputs_the_wrong_way_round_are_refused(inputs):
    base, tuned, ad = inputs
    with pytest.raises(LorascopeError, match="first of two inputs must be the base"):
        plan_deltas(ad, tuned)
    with pytest.raises(LorascopeError, match="holds plain weights"):
        plan_deltas(None, tuned)
