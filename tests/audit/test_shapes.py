"""What a model is made of: module roles and types, re-layering, the head a config names, shape validation."""

import pytest

from lorascope.audit.shape_source import rule_shapes
from lorascope.audit.shapes import ModuleShape, head_of, layer_of, relayer, role_of, type_of


def test_heads_from_architectures(configs):
    assert head_of(configs["gpt2"], "gpt2") == "causal-lm"
    assert head_of({"architectures": ["DistilBertForSequenceClassification"]}, "distilbert") == "seq-cls"
    assert head_of({}, "bert") == "base"
    assert head_of({}, "qwen3") == "causal-lm"  # a decoder-only model without architectures is a causal LM


def test_roles_and_relayer(configs):
    assert role_of("model.layers.3.self_attn.k_proj") == "k"
    assert role_of("bert.encoder.layer.0.attention.output.dense") == "o"
    assert role_of("bert.encoder.layer.0.output.dense") == "down"
    assert role_of("model.layers.0.block_sparse_moe.experts.3.w3") == "up"
    m = rule_shapes(configs["llama-2-70b-hf.eLLM-EDITED-8layers"])
    assert m.num_layers == 8
    assert relayer(m, 80).total == 68_976_648_192  # Llama-2-70B as published
    one = relayer(m, 1)
    assert one.num_layers == 1 and [n.name for n in one.modules][:3] == [
        "model.embed_tokens",
        "model.layers.0.input_layernorm",
        "model.layers.0.self_attn.q_proj",
    ]
    with pytest.raises(ValueError, match="n_layers must be ≥ 1"):
        relayer(m, 0)


def test_names_group_by_type_and_layer():
    assert type_of("model.layers.1.block_sparse_moe.experts.7.w1") == "block_sparse_moe.experts.*.w1"
    assert (layer_of("model.layers.12.mlp.up_proj"), layer_of("lm_head")) == (12, None)


def test_module_shapes_are_validated():
    with pytest.raises(ValueError, match="kind must be one of"):
        ModuleShape("x", "conv2d", (2, 2), 4)
    with pytest.raises(ValueError, match="must be 2-D"):
        ModuleShape("x", "linear", (2,), 2)
    assert ModuleShape("x.norm", "other", (8,), 8).weight_numel == 8
