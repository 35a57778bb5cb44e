"""lorascope/delta/adapter_plan.py: an adapter's modules alone, or paired with their base weights."""

import json

import pytest
import torch
from builders import peft_folder, save_st

from lorascope.checkpoint import open_checkpoint
from lorascope.delta.adapter_plan import BASE_FREE_STAND_INS, BaseLookup, plan_adapter
from lorascope.errors import LorascopeError

Q = "model.layers.0.self_attn.q_proj"


def adapter(tmp_path, config=None, dora=False, name="ad"):
    tensors = {f"{Q}.lora_A.weight": torch.ones(2, 6), f"{Q}.lora_B.weight": torch.ones(4, 2)}
    if dora:
        tensors[f"{Q}.lora_magnitude_vector"] = torch.ones(4)
    return open_checkpoint(peft_folder(tmp_path / name, tensors, {"r": 2, "lora_alpha": 4, **(config or {})}))


def test_alone_a_dora_module_stands_in_as_its_direction_update(tmp_path):
    plan = plan_adapter(adapter(tmp_path, dora=True), None)
    (d,) = plan.deltas
    assert plan.kind == "adapter" and d.family == BASE_FREE_STAND_INS["dora"] == "lora"
    assert "analyzed without the base" in plan.warnings[0]["reason"]


def test_on_its_base_a_module_takes_the_base_name_and_orientation(tmp_path):
    save_st(tmp_path / "base" / "model.safetensors", {f"{Q}.weight": torch.ones(4, 6)})
    plan = plan_adapter(adapter(tmp_path), open_checkpoint(tmp_path / "base"))
    (d,) = plan.deltas
    assert (
        plan.kind == "adapter+base" and d.name == Q and d.base.key == f"{Q}.weight" and d.base.shape == (4, 6)
    )


def test_a_base_fitting_only_transposed_is_refused_not_guessed(tmp_path):
    save_st(tmp_path / "base" / "model.safetensors", {f"{Q}.weight": torch.ones(6, 4)})
    with pytest.raises(LorascopeError, match="fits only transposed, but nothing declares"):
        plan_adapter(adapter(tmp_path), open_checkpoint(tmp_path / "base"))
    declared = adapter(tmp_path, {"fan_in_fan_out": True}, name="fifo")
    (d,) = plan_adapter(declared, open_checkpoint(tmp_path / "base")).deltas
    assert d.base.view == "transpose" and d.base.shape == (4, 6)


def test_base_lookup_by_dotted_and_kohya_names(tmp_path):
    save_st(
        tmp_path / "b" / "model.safetensors",
        {f"{Q}.weight": torch.ones(2, 2), "model.layers.0.mlp.up_proj.weight": torch.ones(2, 2)},
    )
    (tmp_path / "b" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    lookup = BaseLookup(open_checkpoint(tmp_path / "b"))
    assert lookup.find("base_model.model.model.layers.0.self_attn.q_proj") == f"{Q}.weight"
    assert lookup.find("model_layers_0_mlp_up_proj", "kohya") == "model.layers.0.mlp.up_proj.weight"
    assert lookup.find("model.layers.0.mlp.down_proj") is None
