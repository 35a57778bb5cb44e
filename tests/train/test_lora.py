"""LoRA and DoRA layers against hand-worked values; merging; targets; PEFT key names."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lorascope.errors import LorascopeError
from lorascope.train.lora import (
    LoraLinear,
    LoraSpec,
    adaptable_modules,
    adapter_state_dict,
    inject,
    lora_layers,
    merge,
    merge_and_unload,
    peft_target_modules,
    resolve_targets,
    unmerge,
)
from lorascope.train.model import MiniGPTConfig, build

CFG = MiniGPTConfig(
    vocab_size=40,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=16,
)


def linear(out_f: int, in_f: int, seed: int = 0, bias: bool = False) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


def set_factors(layer: LoraLinear, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.randn(layer.lora_A.weight.shape, generator=g))
        layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g))


def test_hand_worked_forward_and_scales():
    base = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    layer = LoraLinear(base, LoraSpec(r=1, alpha=4.0))  # s = 4
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, 2.0]]))  # A (1, 2)
        layer.lora_B.weight.copy_(torch.tensor([[0.5], [-1.0]]))  # B (2, 1)
    x = torch.tensor([[3.0, 1.0]])
    # W0 x = (3, 1); A x = 5; s·B·5 = 4·(2.5, −5) = (10, −20)
    assert torch.equal(layer(x), torch.tensor([[13.0, -19.0]]))
    assert LoraSpec(r=4, alpha=8).scale == 2.0 and LoraSpec(r=4, alpha=8, rslora=True).scale == 4.0


def test_peft_initialization():
    layer = LoraLinear(linear(32, 64), LoraSpec(r=8))
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=√5) on fan_in 64: U(−1/√64, 1/√64)
    a = layer.lora_A.weight
    assert a.shape == (8, 64) and a.abs().max() <= bound and a.abs().max() > 0.8 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    x = torch.randn(3, 64)
    assert torch.equal(layer(x), layer.base_layer(x))  # B = 0: the adapter starts as the identity change
    assert not layer.base_layer.weight.requires_grad


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_merge_equals_forward_and_unmerge_restores_exactly(dora, bias):
    layer = LoraLinear(linear(6, 5, bias=bias), LoraSpec(r=2, alpha=3.0, dora=dora))
    set_factors(layer)
    if dora:
        with torch.no_grad():
            layer.lora_magnitude_vector.mul_(torch.linspace(0.5, 1.5, 6))
    original = layer.base_layer.weight.detach().clone()
    x = torch.randn(4, 5)
    unmerged = layer(x)
    layer.merge()
    assert not torch.equal(layer.base_layer.weight, original)
    assert torch.allclose(layer(x), unmerged, atol=1e-5, rtol=1e-5)
    layer.unmerge()
    assert torch.equal(layer.base_layer.weight, original)  # bit for bit
    assert torch.equal(layer(x), unmerged)


def test_dora_forward_matches_the_paper_formula():
    # W' = m · (W0 + sBA) / ‖W0 + sBA‖_row, y = W' x + b
    base = linear(4, 3, seed=2, bias=True)
    layer = LoraLinear(base, LoraSpec(r=2, alpha=2.0, dora=True))
    set_factors(layer, 5)
    w0 = base.weight.detach()
    assert torch.allclose(layer.lora_magnitude_vector, w0.norm(dim=1))  # m starts as the row norms of W0
    with torch.no_grad():
        layer.lora_magnitude_vector.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    v = w0 + 1.0 * layer.lora_B.weight.detach() @ layer.lora_A.weight.detach()
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])[:, None] * v / v.norm(dim=1, keepdim=True)
    x = torch.randn(5, 3)
    assert torch.allclose(layer(x), x @ w.T + base.bias.detach(), atol=1e-6)


def test_dora_norm_is_a_constant_in_backward():
    # With the norm detached, d y / d m_i = (W0 + sBA)_i x / ‖·‖_i exactly (Liu et al. 2024, §4.3)
    layer = LoraLinear(linear(3, 4, seed=3), LoraSpec(r=2, alpha=2.0, dora=True))
    set_factors(layer, 6)
    x = torch.randn(1, 4)
    layer(x).sum().backward()
    v = layer.base_layer.weight.detach() + layer.delta_weight().detach()
    expected = (v @ x[0]) / v.norm(dim=1)
    assert torch.allclose(layer.lora_magnitude_vector.grad, expected, atol=1e-6)


def test_conv1d_base_is_read_transposed():
    class Conv1D(nn.Module):  # GPT-2's layout: weight (in, out), y = x @ W + b
        def __init__(self, nf, nx):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(nx, nf))
            self.bias = nn.Parameter(torch.randn(nf))

        def forward(self, x):
            return x @ self.weight + self.bias

    torch.manual_seed(0)
    conv = Conv1D(6, 4)
    layer = LoraLinear(conv, LoraSpec(r=2, alpha=2.0))
    set_factors(layer)
    assert layer.lora_A.weight.shape == (2, 4) and layer.lora_B.weight.shape == (6, 2)
    x = torch.randn(3, 4)
    expected = x @ (conv.weight.detach().T + layer.delta_weight().detach()).T + conv.bias.detach()
    assert torch.allclose(layer(x), expected, atol=1e-5)
    merged = merge_and_unload(nn.Sequential(layer))
    assert torch.allclose(merged(x), expected, atol=1e-5) and type(merged[0]).__name__ == "Conv1D"


def test_model_merge_and_unload_gives_plain_modules():
    model = build(CFG, 0)
    inject(model, resolve_targets(model, "all-linear"), LoraSpec(r=2, alpha=4.0, dora=True))
    for _, layer in lora_layers(model):
        set_factors(layer)
    ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids)
        merge(model)
        assert torch.allclose(model(ids), before, atol=1e-4)
        unmerge(model)
        assert torch.equal(model(ids), before)
        plain = merge_and_unload(model)
        assert torch.allclose(plain(ids), before, atol=1e-4)
    assert not list(lora_layers(plain))
    assert set(plain.state_dict()) == set(build(CFG, 0).state_dict())


def test_targets_presets_names_and_regex():
    model = build(CFG, 0)
    attn = resolve_targets(model, "attn")
    assert len(attn) == 8 and all(
        n.rpartition(".")[2] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in attn
    )
    assert len(resolve_targets(model, "mlp")) == 6
    every = resolve_targets(model, "all-linear")
    assert len(every) == 14 and "lm_head" not in every  # the output layer stays out, as in PEFT
    assert resolve_targets(model, "q_proj+v_proj") == [n for n in every if n.endswith(("q_proj", "v_proj"))]
    assert resolve_targets(model, r"re:model\.layers\.1\..*v_proj") == ["model.layers.1.self_attn.v_proj"]
    assert resolve_targets(model, "lm_head") == ["lm_head"]


@pytest.mark.parametrize("spec", ["qproj", "re:.*nothing", "re:([", "+"])
def test_bad_targets_raise_a_helpful_error(spec):
    with pytest.raises(LorascopeError, match="targets"):
        resolve_targets(build(CFG, 0), spec)


def test_peft_target_modules_are_shortest_exact_suffixes():
    names = [
        "model.layers.0.attn.c_proj",
        "model.layers.0.mlp.c_proj",
        "model.layers.0.attn.c_attn",
        "lm_head",
    ]
    assert peft_target_modules(["model.layers.0.attn.c_proj", "model.layers.0.attn.c_attn"], names) == [
        "attn.c_proj",
        "c_attn",
    ]
    model = build(CFG, 0)
    all_names = list(adaptable_modules(model))
    assert peft_target_modules(resolve_targets(model, "attn"), all_names) == [
        "k_proj",
        "o_proj",
        "q_proj",
        "v_proj",
    ]
    one = ["model.layers.1.self_attn.v_proj"]
    assert peft_target_modules(one, all_names) == ["1.self_attn.v_proj"]


def test_adapter_state_dict_uses_peft_key_names():
    model = build(CFG, 0)
    inject(model, ["model.layers.0.self_attn.v_proj"], LoraSpec(r=2, dora=True))
    keys = sorted(adapter_state_dict(model))
    prefix = "base_model.model.model.layers.0.self_attn.v_proj."
    assert keys == [prefix + "lora_A.weight", prefix + "lora_B.weight", prefix + "lora_magnitude_vector"]


@pytest.mark.parametrize("field,value", [("r", 0), ("alpha", 0.0), ("dropout", 1.0)])
def test_spec_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LoraSpec(**{field: value})
