"""The adapter audit: the real PEFT adapters, and adapters built with planted defects."""

import math

import pytest
import torch
from builders import peft_folder

from lorascope.audit.adapter import audit_adapter, load_adapter, scan_adapter, settings_of
from lorascope.audit.shape_source import rule_shapes

g = torch.Generator().manual_seed(0)


def audit(folder, model=None):
    adapter = load_adapter(folder)
    return audit_adapter(adapter, scan_adapter(adapter), model)


def messages(result, severity=None):
    return [f.message for f in result.findings if severity is None or f.severity == severity]


def test_real_adapters_audit_without_error(real_fixtures):
    folders = sorted((real_fixtures / "peft").iterdir())
    assert len(folders) == 6
    for folder in folders:
        result = audit(folder)
        assert result.actual == result.configured > 0, folder.name
        assert not messages(result, "error"), (folder.name, messages(result))


def test_gpt2_c_proj_reaches_two_module_types(real_fixtures, configs, hf):
    result = audit(real_fixtures / "peft" / "abrhaleyarefaine1997+gpt2-tigrinya-lora", hf(configs["gpt2"]))
    assert result.targets["c_proj"] == {"attn.c_proj": 12, "mlp.c_proj": 12}
    assert any("target 'c_proj' reaches 2 module types" in m for m in messages(result))
    # 12 · 8 · ((768+2304) + (768+768) + (3072+768))
    assert result.actual == 12 * 8 * (3072 + 1536 + 3840) == 811_008
    assert result.model_count.trainable == result.actual and result.model_count.total == 124_439_808
    assert not messages(result, "warning")  # the config creates exactly what the adapter holds


def test_targets_that_match_nothing(real_fixtures):
    result = audit(real_fixtures / "peft" / "sidkris+Parameter-Efficient-Fine-Tuning-with-LoRA")
    assert {t for t, types in result.targets.items() if not types} == {"q", "k", "v"}
    assert any("'q', 'k', 'v'" in m and "reached no module" in m for m in messages(result, "warning"))


def test_modules_to_save_suffix_and_task_heads(real_fixtures):
    result = audit(real_fixtures / "peft" / "Tashu014+lora-imdb-distilbert")
    assert result.saved_params == (768 * 768 + 768) + (2 * 768 + 2)
    assert any(
        "pre_classifier was saved and trained in full" in m and "plain string suffix" in m
        for m in messages(result, "warning")
    )
    assert settings_of({"r": 8, "task_type": "SEQ_CLS", "modules_to_save": ["x"]}).modules_to_save == (
        "x",
        "classifier",
        "score",
    )


def lora_layers(n=2, r=4, zero_b=False, rank_of=None):
    tensors = {}
    for i in range(n):
        rr = (rank_of or {}).get(i, r)
        a = torch.randn(rr, 16, generator=g)
        b = torch.zeros(24, rr) if zero_b else torch.randn(24, rr, generator=g)
        tensors[f"model.layers.{i}.self_attn.q_proj.lora_A.weight"] = a
        tensors[f"model.layers.{i}.self_attn.q_proj.lora_B.weight"] = b
    return tensors


def test_untrained_adapter_is_an_error(tmp_path):
    result = audit(peft_folder(tmp_path / "a", lora_layers(zero_b=True), {"r": 4}))
    assert any(
        "lora_B is all zeros in every module" in m and "never trained" in m for m in messages(result, "error")
    )


def test_rank_mismatch_and_nan(tmp_path):
    tensors = lora_layers(rank_of={1: 2})
    tensors["model.layers.0.self_attn.q_proj.lora_A.weight"][0, 0] = math.nan
    tensors["model.layers.0.self_attn.q_proj.lora_B.weight"][1, 1] = math.inf
    result = audit(peft_folder(tmp_path / "a", tensors, {"r": 4}))
    errors = messages(result, "error")
    assert any("model.layers.1.self_attn.q_proj (rank 2, config r=4)" in m for m in errors)
    assert any("hold NaN or Inf" in m and "(1 NaN, 0 Inf)" in m and "(0 NaN, 1 Inf)" in m for m in errors)
    assert result.actual == (4 + 2) * (16 + 24) and result.configured == 2 * 4 * (16 + 24)


def test_against_the_wrong_base_model(tmp_path):
    folder = peft_folder(tmp_path / "a", lora_layers(), {"r": 4})
    llama = {
        "model_type": "llama",
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 8,
        "num_hidden_layers": 3,
        "vocab_size": 10,
    }
    result = audit(folder, rule_shapes(llama))  # q_proj is 16×16 here, 24×16 in the adapter; layer 2 missing
    assert any("differ in shape from the given base model" in m for m in messages(result, "error"))
    assert any(
        "does not hold, e.g. model.layers.2.self_attn.q_proj" in m for m in messages(result, "warning")
    )


@pytest.mark.parametrize("folder", ["TheSotti+Lightweight-Fine-Tuning-to-FM"])
def test_pickle_weights_audit(real_fixtures, folder):
    result = audit(real_fixtures / "peft" / folder)
    assert set(result.targets) == {"attn.c_attn", "attn.c_proj"} and result.actual == 442_368
