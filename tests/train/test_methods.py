"""Methods: what trains, counted from the real weight shapes (docs/METRICS.md 'Parameter counts')."""

from __future__ import annotations

import pytest
import torch

from lorascope.errors import LorascopeError
from lorascope.train.methods import MethodConfig, prepare
from lorascope.train.model import MiniGPTConfig, build
from lorascope.train.nf4 import NF4Linear
from lorascope.train.trainer import OptimConfig, build_optimizer

# GQA: q_proj and o_proj are 32×32, k_proj and v_proj 16×32; the MLP is 32↔40
CFG = MiniGPTConfig(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=16,
)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_counts_r_times_m_plus_n_per_module():
    model = build(CFG, 0)
    prepared = prepare(model, MethodConfig(method="lora", rank=4, targets="attn"))
    per_layer = 4 * ((32 + 32) + (16 + 32) + (16 + 32) + (32 + 32))
    assert trainable(model) == 3 * per_layer and len(prepared.targets) == 12
    model = build(CFG, 0)
    prepare(model, MethodConfig(method="dora", rank=4, targets="mlp"))
    assert trainable(model) == 3 * (4 * 3 * (32 + 40) + (40 + 40 + 32))  # + one magnitude per output row


def test_full_and_freeze():
    model = build(CFG, 0)
    prepare(model, MethodConfig(method="full"))
    assert trainable(model) == sum(p.numel() for p in build(CFG, 0).parameters())
    model = build(CFG, 0)
    prepare(model, MethodConfig(method="freeze", train_blocks=2))
    block = sum(p.numel() for p in model.model.layers[0].parameters())
    assert trainable(model) == 2 * block + 32 + 50 * 32  # two blocks, the final norm, the head
    assert (
        not model.model.embed_tokens.weight.requires_grad
        and not model.model.layers[0].mlp.up_proj.weight.requires_grad
    )
    with pytest.raises(LorascopeError, match="train-blocks"):
        prepare(build(CFG, 0), MethodConfig(method="freeze", train_blocks=4))


def test_lora_plus_gives_b_a_larger_learning_rate():
    model = build(CFG, 0)
    prepared = prepare(
        model, MethodConfig(method="lora-plus", rank=2, targets="v_proj", lora_plus_ratio=16.0)
    )
    opt = build_optimizer(prepared.groups, OptimConfig(lr=1e-3))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"A": 1e-3, "B": pytest.approx(1.6e-2)}
    assert all(p.shape[0] == 2 for p in opt.param_groups[0]["params"])  # A: (r, in)


def test_qlora_quantizes_the_blocks_and_adapts_on_top():
    model = build(CFG, 0)
    prepared = prepare(model, MethodConfig(method="qlora", rank=2, targets="all-linear"))
    assert len(prepared.quantized) == 21 and "lm_head" not in prepared.quantized
    assert isinstance(model.model.layers[0].self_attn.q_proj.base_layer, NF4Linear)
    assert type(model.lm_head) is torch.nn.Linear and not model.lm_head.weight.requires_grad
    assert trainable(model) == 3 * 2 * ((32 + 32) * 2 + (16 + 32) * 2 + 3 * (32 + 40))


@pytest.mark.parametrize(
    "field,value", [("method", "prefix"), ("rank", 0), ("alpha", -1.0), ("train_blocks", 0)]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MethodConfig(**{field: value})


def test_default_alpha_keeps_the_scale_at_two():
    assert MethodConfig(rank=16).lora_spec().scale == 2.0 and MethodConfig(rank=1).lora_spec().scale == 2.0
    assert MethodConfig(rank=16, alpha=8.0, rslora=True).lora_spec().scale == 2.0
