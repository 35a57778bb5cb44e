"""LoRA counts worked by hand, and the adapter file size against files safetensors really writes."""

import os

import pytest
import torch
from safetensors.torch import save_file

from lorascope.audit.count import (
    LoraSettings,
    adapter_file_size,
    adapter_tensors,
    count_lora,
    safetensors_size,
)
from lorascope.audit.shapes import rule_shapes
from lorascope.audit.targets import TargetSpec, parse_targets


def settings(targets="q_proj,v_proj", **kw):
    return LoraSettings(targets=parse_targets(targets), **kw)


def test_llama2_7b_q_v_r8_is_4194304(configs):
    c = count_lora(rule_shapes(configs["llama-2-7b-hf"]), settings(rank=8))
    assert c.trainable == c.lora == 32 * 2 * 8 * (4096 + 4096) == 4_194_304
    assert c.percent == pytest.approx(100 * 4_194_304 / 6_738_415_616)
    assert c.peft_percent == pytest.approx(100 * 4_194_304 / (6_738_415_616 + 4_194_304))
    assert list(c.by_type()["params"]) == [2_097_152, 2_097_152]
    assert set(c.by_layer()["params"]) == {131_072}


def test_grouped_query_attention_is_not_square(configs):
    c = count_lora(rule_shapes(configs["mistral-7b-v0.1.mlc-modified"]), settings("k_proj", rank=16))
    assert c.trainable == 32 * 16 * (4096 + 1024)  # k_proj is 1024×4096: 8 kv heads of 128
    assert c.trainable != 32 * 16 * (4096 + 4096)


def test_mixtral_experts_each_count(configs):
    c = count_lora(rule_shapes(configs["mixtral-8x7b-v0.1"]), settings("w1,w2,w3,gate", rank=8))
    per_layer = 8 * 3 * 8 * (4096 + 14336) + 8 * (4096 + 8)
    assert c.trainable == 32 * per_layer
    assert set(c.by_type()["module_type"]) == {"block_sparse_moe.gate", "block_sparse_moe.experts.*.w1",
                                               "block_sparse_moe.experts.*.w2", "block_sparse_moe.experts.*.w3"}


def test_dora_embeddings_conv1d_and_rank_pattern(configs):
    gpt2 = rule_shapes(configs["gpt2"])
    c = count_lora(gpt2, settings("c_attn", rank=4, dora=True))
    assert c.lora == 12 * 4 * (768 + 2304) and c.magnitude == 12 * 2304  # Conv1D counted as (out, in)
    emb = count_lora(gpt2, settings("wte", rank=4, dora=True))
    assert emb.lora == 4 * (50257 + 768) and emb.magnitude == 768  # DoRA on an embedding: one value per dimension
    llama = rule_shapes(configs["llama-2-7b-hf"])
    rp = count_lora(llama, settings(rank=8, rank_pattern={"v_proj": 16, r"layers\.0\.self_attn\.q_proj": 2}))
    assert rp.trainable == 31 * 8 * 8192 + 2 * 8192 + 32 * 16 * 8192
    assert rp.table.set_index("name").loc["model.layers.1.self_attn.q_proj", "r"] == 8


def test_bias_modes_and_modules_to_save(configs):
    qwen = rule_shapes(configs["qwen2.5-7b"])  # q, k, v have biases; o does not
    lora_only = count_lora(qwen, settings("q_proj,o_proj", rank=8, bias="lora_only"))
    assert lora_only.bias == 28 * 3584
    every = count_lora(qwen, settings("q_proj", rank=8, bias="all"))
    assert every.bias == 28 * (3584 + 512 + 512)
    distil = rule_shapes({"model_type": "distilbert", "dim": 8, "n_layers": 1, "hidden_dim": 16, "vocab_size": 10,
                          "max_position_embeddings": 4}, head="seq-cls")
    saved = count_lora(distil, settings("q_lin", rank=2, modules_to_save=("classifier",)))
    # PEFT matches modules_to_save by plain suffix: 'classifier' reaches pre_classifier too
    assert saved.saved_modules == ("pre_classifier", "classifier")
    assert saved.saved == (8 * 8 + 8) + (2 * 8 + 2)


def test_adapter_size_equals_what_safetensors_writes(tmp_path, configs):
    gpt2 = rule_shapes(configs["gpt2"])
    count = count_lora(gpt2, settings("c_attn,c_proj", rank=4, dora=True, bias="lora_only"))
    tensors = {k: torch.zeros(shape, dtype=torch.bfloat16) for k, shape in adapter_tensors(count)}
    save_file(tensors, tmp_path / "a.safetensors", metadata={"format": "pt"})
    assert adapter_file_size(count, "bf16") == os.path.getsize(tmp_path / "a.safetensors")
    header = '{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    assert len(header) == 86  # padded with spaces to 88, after the 8-byte length
    assert safetensors_size([("x", (3,))], "fp32") == 8 + 88 + 3 * 4


@pytest.mark.parametrize(("folder", "cfg_changes", "head", "targets", "saved"), [
    ("abrhaleyarefaine1997+gpt2-tigrinya-lora", {}, "causal-lm", "c_attn,c_proj", ()),
    ("anirudh-ak+peft-gpt2", {"num_labels": 6}, "seq-cls", "c_attn", ("score",)),
])
def test_adapter_size_equals_real_peft_files(real_fixtures, configs, folder, cfg_changes, head, targets, saved):
    """The same configuration as these real adapters predicts their files to the byte (fp32, as they were saved)."""
    model = rule_shapes({**configs["gpt2"], **cfg_changes}, head=head)
    count = count_lora(model, settings(targets, rank=8, modules_to_save=saved))
    assert adapter_file_size(count, "fp32") == os.path.getsize(real_fixtures / "peft" / folder / "adapter_model.safetensors")


def test_settings_validate_fields():
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="bias must be one of"):
        LoraSettings(bias="some")
    with pytest.raises(ValueError, match=r"rank_pattern\['v_proj'\] must be a positive integer"):
        LoraSettings(rank_pattern={"v_proj": 0})
    assert LoraSettings(targets=TargetSpec(preset="attn")).targets.preset == "attn"
