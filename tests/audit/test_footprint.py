"""Bytes: the adapter file against files safetensors and PEFT really write, and training memory — 16 bytes per
parameter for bf16 mixed-precision AdamW, the frozen base at 2 bytes for LoRA."""

import os
import warnings

import pytest
import torch
from safetensors.torch import save_file

from lorascope.audit.count import LoraSettings, copy_params, count_lora
from lorascope.audit.footprint import (
    MemoryAssumptions,
    adapter_file_size,
    adapter_tensors,
    safetensors_size,
    training_memory,
)
from lorascope.audit.targets import parse_targets


def settings(targets="q_proj,v_proj", **kw):
    return LoraSettings(targets=parse_targets(targets), **kw)


def test_adapter_size_equals_what_safetensors_writes(tmp_path, shapes):
    gpt2 = shapes("gpt2")
    count = count_lora(gpt2, settings("c_attn,c_proj", rank=4, dora=True, bias="lora_only"))
    tensors = {k: torch.zeros(shape, dtype=torch.bfloat16) for k, shape in adapter_tensors(count)}
    save_file(tensors, tmp_path / "a.safetensors", metadata={"format": "pt"})
    assert adapter_file_size(count, "bf16") == os.path.getsize(tmp_path / "a.safetensors")
    header = '{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    assert len(header) == 86  # padded with spaces to 88, after the 8-byte length
    assert safetensors_size([("x", (3,))], "fp32") == 8 + 88 + 3 * 4


@pytest.mark.parametrize(
    ("folder", "cfg_changes", "head", "targets", "saved"),
    [
        ("abrhaleyarefaine1997+gpt2-tigrinya-lora", {}, "causal-lm", "c_attn,c_proj", ()),
        ("anirudh-ak+peft-gpt2", {"num_labels": 6}, "seq-cls", "c_attn", ("score",)),
    ],
)
def test_adapter_size_equals_real_peft_files(
    real_fixtures, configs, hf, folder, cfg_changes, head, targets, saved
):
    """The same configuration as these real adapters predicts their files to the byte (fp32, as they were
    saved)."""
    model = hf({**configs["gpt2"], **cfg_changes}, head)
    count = count_lora(model, settings(targets, rank=8, modules_to_save=saved))
    assert adapter_file_size(count, "fp32") == os.path.getsize(
        real_fixtures / "peft" / folder / "adapter_model.safetensors"
    )


@pytest.mark.hf
def test_adapter_file_holds_the_copy_of_a_tied_head(tmp_path):
    """What PEFT's save_pretrained writes for a tied head in modules_to_save: the copy's full weight."""
    ref = pytest.importorskip("audit.peft_reference")
    from lorascope.audit.shape_source import hf_shapes

    cfg = {
        "model_type": "gemma2",
        "architectures": ["Gemma2ForCausalLM"],
        "vocab_size": 97,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "tie_word_embeddings": True,
    }
    c = count_lora(
        hf_shapes(cfg), settings("q_proj", rank=2, modules_to_save=("lm_head",), allow_unmatched=True)
    )
    head = c.model.by_name()["lm_head"]
    assert head.tied_to == "model.embed_tokens" and head.params == 0 and copy_params(head) == 97 * 16
    model = ref.meta_model(cfg, "causal-lm").to_empty(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = ref.peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
        pm = ref.peft.get_peft_model(model, config)
    saved = {k: tuple(v.shape) for k, v in ref.peft.get_peft_model_state_dict(pm).items()}
    assert dict(adapter_tensors(c)) == saved


def test_full_fine_tuning_is_16_bytes_per_parameter_in_bf16():
    mem = training_memory(1_000, 10).set_index("part")
    assert mem.loc["total", "full"] == 16 * 1_000  # 2 weights + 2 grads + 4 master + 8 AdamW (ZeRO §3.1)
    assert list(mem.loc[["weights", "gradients", "master weights", "optimizer states"], "full"]) == [
        2000,
        2000,
        4000,
        8000,
    ]


def test_lora_keeps_the_base_frozen_and_adapters_in_fp32():
    mem = training_memory(1_000, 10).set_index("part")
    # base 2·1000 + adapter 4·10; grads 4·10; no master copy of fp32 weights; AdamW 8·10
    assert mem.loc["total", "lora"] == 2000 + 40 + 40 + 0 + 80


def test_assumptions_change_the_numbers_and_are_printed():
    fp32 = training_memory(100, 1, MemoryAssumptions(weights_dtype="fp32")).set_index("part")
    assert fp32.loc["total", "full"] == 16 * 100  # 4 + 4 + 0 master + 8
    plain = training_memory(100, 1, MemoryAssumptions(master_weights=False)).set_index("part")
    assert plain.loc["total", "full"] == 12 * 100
    lines = MemoryAssumptions().lines()
    assert any("activations" in line and "not included" in line for line in lines)
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        MemoryAssumptions(weights_dtype="int3")
