"""lorascope/checkpoint/peft_experts.py: LoRA on fused expert parameters, one module per expert."""

import torch
from builders import save_st

from lorascope.checkpoint.peft_experts import expert_modules, parameter_candidates, targets_parameters
from lorascope.checkpoint.safetensors_file import SafetensorsFile


def test_candidates_follow_peft_target_parameters_matching():
    cfg = {"target_parameters": ["experts.gate_up_proj", "down_proj"]}
    assert parameter_candidates(cfg, "model.layers.0.mlp.experts") == ["gate_up_proj", "down_proj"]
    assert targets_parameters(cfg, "model.layers.0.mlp.experts") and not targets_parameters({}, "x")


def test_a_three_d_parameter_gives_one_module_per_expert(tmp_path):
    e, r, out, inp = 3, 2, 6, 4
    key = "base_model.model.mlp.experts"
    store = SafetensorsFile(
        save_st(
            tmp_path / "a.safetensors",
            {
                f"{key}.lora_A.weight": torch.randn(e * r, inp),
                f"{key}.lora_B.weight": torch.randn(out, r * e),
            },
        )
    )
    cfg = {"r": r, "lora_alpha": 4, "target_parameters": ["experts.down_proj"]}
    problems, warnings = [], []
    by_depth = {0: {"lora_A": f"{key}.lora_A.weight", "lora_B": f"{key}.lora_B.weight"}}
    modules = expert_modules("mlp.experts", by_depth, store, cfg, "peft", problems, warnings)
    assert problems == [] and [m.name for m in modules] == [f"mlp.experts.down_proj.{i}" for i in range(e)]
    assert all(m.family == "lora_expert" and m.scale == 2.0 and m.shape == (out, inp) for m in modules)
    assert modules[1].params["expert"] == 1 and modules[1].params["experts"] == e
    bad = {0: {"lora_A": f"{key}.lora_A.weight"}}
    assert expert_modules("mlp.experts", bad, store, cfg, "peft", problems, warnings) == []
    assert "not both LoRA factors" in problems[0]
