"""PEFT adapter folders built by hand: PEFT's scale rules (rank_pattern, alpha_pattern, rslora), .bin weights, errors."""

import json
import math

import pytest
import torch
from builders import peft_folder
from refs import assert_sigma_close, ref_sigma

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.peft import module_scale, pattern_key
from lorascope.errors import LorascopeError

g = torch.Generator().manual_seed(0)


def factors(out, inp, r):
    return torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)


def layers(n=2, r=4, r_by_name=None):
    tensors = {}
    for i in range(n):
        for proj in ("q_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{proj}"
            rr = (r_by_name or {}).get(name, r)
            a, b = factors(12, 10, rr)
            tensors[f"{name}.lora_A.weight"] = a
            tensors[f"{name}.lora_B.weight"] = b
    return tensors


def test_pattern_key_follows_peft():
    pats = {"layers.1.self_attn.q_proj": 2, "v_proj": 3, r"layers\.\d\.mlp.*": 5}
    assert pattern_key(pats, "model.layers.1.self_attn.q_proj") == "layers.1.self_attn.q_proj"
    assert pattern_key(pats, "model.layers.11.self_attn.q_proj") is None  # '.' boundary: 11 is not 1
    assert pattern_key(pats, "model.layers.0.self_attn.v_proj") == "v_proj"
    assert pattern_key(pats, "model.layers.3.mlp.up_proj") == r"layers\.\d\.mlp.*"
    assert pattern_key(pats, "model.layers.0.self_attn.xv_proj") is None


def test_scale_rules():
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"layers.0.self_attn.q_proj": 2}}
    assert module_scale(cfg, "model.layers.0.self_attn.q_proj") == (4, 2.0, 0.5)
    assert module_scale(cfg, "model.layers.1.self_attn.q_proj") == (4, 16.0, 4.0)
    assert module_scale(cfg, "model.layers.1.self_attn.v_proj") == (8, 16.0, 2.0)
    assert module_scale({"r": 16, "lora_alpha": 8, "use_rslora": True}, "x")[2] == pytest.approx(8 / 4)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_rank_and_alpha_patterns_end_to_end(tmp_path, weights):
    q1 = "model.layers.1.self_attn.q_proj"
    tensors = layers(r_by_name={q1: 2})
    cfg = {"r": 4, "lora_alpha": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2}, "alpha_pattern": {"v_proj": 1}}
    res = lorascope.analyze(peft_folder(tmp_path / "ad", tensors, cfg, weights))
    rows = res.modules.set_index("name")
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{proj}"
            r, alpha = (2, 8) if name == q1 else (4, 1 if proj == "v_proj" else 8)
            a, b = tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"]
            assert rows.loc[name, "lora_rank"] == r and rows.loc[name, "scale"] == pytest.approx(alpha / r)
            assert_sigma_close(res.spectrum(name), ref_sigma(alpha / r * (b.double() @ a.double()).numpy()), 1e-6, 1e-9)
    assert res.summary["inputs"][0]["format"] == "peft" and res.summary["kind"] == "adapter"


def test_rslora_scale(tmp_path):
    tensors = layers(n=1, r=9)
    res = lorascope.analyze(peft_folder(tmp_path / "ad", tensors, {"r": 9, "lora_alpha": 6, "use_rslora": True}))
    assert set(res.modules["scale"].round(12)) == {round(6 / math.sqrt(9), 12)}


def test_config_rank_differing_from_tensors_is_flagged(tmp_path):
    res = lorascope.analyze(peft_folder(tmp_path / "ad", layers(n=1, r=4), {"r": 8, "lora_alpha": 8}))
    assert any("tensors have rank 4 but the config gives r=8" in w["reason"] for w in res.summary["warnings"])


def test_non_lora_peft_types_fail_naming_the_type(tmp_path):
    d = tmp_path / "ia3"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(LorascopeError, match="PREFIX_TUNING"):
        open_checkpoint(d)


def test_broken_configs_and_missing_weights(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "adapter_config.json").write_text("{not json")
    with pytest.raises(LorascopeError, match="not valid JSON"):
        open_checkpoint(d)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 0}))
    with pytest.raises(LorascopeError, match="'r' must be a positive number"):
        open_checkpoint(d)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 4}))
    with pytest.raises(LorascopeError, match="no adapter weights"):
        open_checkpoint(d)


def test_module_with_one_factor_is_an_error(tmp_path):
    a, _ = factors(6, 5, 2)
    with pytest.raises(LorascopeError, match="not both LoRA factors"):
        open_checkpoint(peft_folder(tmp_path / "ad", {"model.q.lora_A.weight": a}, {"r": 2}))


def test_modules_to_save_listed_as_skipped_without_base(tmp_path):
    tensors = {**layers(n=1), "classifier.weight": torch.randn(3, 12), "classifier.bias": torch.zeros(3)}
    res = lorascope.analyze(peft_folder(tmp_path / "ad", tensors, {"r": 4, "modules_to_save": ["classifier"]}))
    reasons = {w["name"]: w["reason"] for w in res.summary["warnings"]}
    assert "modules_to_save" in reasons["classifier"] and "classifier.bias" in reasons
    assert "classifier" not in set(res.modules["name"])
