"""lorascope/checkpoint/peft_keys.py: the key grammar every PEFT type shares, and the readers' registry."""

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.peft_keys import (
    PARTS_BY_TYPE,
    PEFT_TYPES,
    Leftovers,
    finish,
    group_parts,
    part_pattern,
)
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.errors import LorascopeError

P = "base_model.model.model.layers.0"


def test_part_pattern_reads_module_part_adapter_and_param():
    pattern = part_pattern(("lora_A", "lora_B"))
    m = pattern.match(f"{P}.q_proj.lora_A.default.weight")
    assert (m["module"], m["part"], m["adapter"], m["param"]) == (
        f"{P}.q_proj",
        "lora_A",
        "default",
        "weight",
    )
    m = pattern.match(f"{P}.q_proj.lora_B.bias")
    assert (m["part"], m["adapter"], m["param"]) == ("lora_B", None, "bias")
    assert pattern.match(f"{P}.q_proj.weight") is None


def test_parts_group_by_module_and_the_rest_is_left_over(tmp_path):
    store = SafetensorsFile(
        save_st(
            tmp_path / "a.safetensors",
            {
                f"{P}.q_proj.lora_A.weight": torch.ones(2, 4),
                f"{P}.q_proj.lora_B.weight": torch.ones(4, 2),
                f"{P}.q_proj.lora_B.bias": torch.ones(4),
                "base_model.model.score.modules_to_save.default.weight": torch.ones(3, 4),
                "base_model.model.model.norm.weight": torch.ones(4),
                f"{P}.k_proj.hada_w1_a": torch.ones(4, 2),
            },
        )
    )
    left = Leftovers(store, "LORA")
    parts = group_parts(store, part_pattern(("lora_A", "lora_B")), left)
    assert parts == {
        "model.layers.0.q_proj": {
            "lora_A": f"{P}.q_proj.lora_A.weight",
            "lora_B": f"{P}.q_proj.lora_B.weight",
            "lora_B.bias": f"{P}.q_proj.lora_B.bias",
        }
    }
    assert set(left.dense) == {"score"} and set(left.vectors) == {"model.norm.weight"}
    assert left.other_types == {"LOHA"} and "PEFT type LOHA" in left.warnings[0]["reason"]


def test_two_adapters_in_one_file_and_no_module_are_refused(tmp_path):
    store = SafetensorsFile(
        save_st(
            tmp_path / "b.safetensors",
            {f"{P}.q.lora_A.weight": torch.ones(1, 2), f"{P}.q.lora_A.other.weight": torch.ones(1, 2)},
        )
    )
    with pytest.raises(LorascopeError, match="holds more than one adapter"):
        group_parts(store, part_pattern(("lora_A",)), Leftovers(store, "LORA"))
    with pytest.raises(LorascopeError, match="holds no LoRA modules"):
        finish(tmp_path, "peft", store, {}, [], Leftovers(store, "LORA"), [], [], "LoRA")


def test_every_type_lorascope_reads_is_registered():
    import lorascope.checkpoint.peft  # noqa: F401 - registers the readers

    assert {"LORA", "LOHA", "LOKR", "ADALORA", "VERA", "IA3", "OFT", "BOFT"} <= set(PEFT_TYPES)
    assert "lora_A" in PARTS_BY_TYPE["LORA"] and "ia3_l" in PARTS_BY_TYPE["IA3"]
