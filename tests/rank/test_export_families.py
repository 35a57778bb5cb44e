"""``select --export`` of every PEFT family to a plain PEFT LoRA: PEFT loads the export, and the update it
applies is the selected truncation of the source's ΔW — its relative error is sqrt(1 − energy(k)) within 1e-5
(Eckart–Young: the error of the best rank-k approximation). Fused MoE experts export as a target_parameters
LoRA. Needs `hf`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lorascope
from lorascope.checkpoint.peft import module_scale
from lorascope.rank import Policy, run_select
from lorascope.rank.export import ExpertSlot, expert_tensors

transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

from checkpoint.peft_cases import (  # noqa: E402
    ConvNet,
    make_case,
    matrices,
    save_fused,
    tiny_gpt2,
    tiny_llama,
)

pytestmark = [pytest.mark.hf, pytest.mark.filterwarnings("ignore::UserWarning")]


def fresh(case, factory):
    """The base model again, float64, for PEFT to load the export into."""
    if case.base.is_dir():
        return type(factory()).from_pretrained(str(case.base)).double()
    model = factory()
    model.load_state_dict(load_file(str(case.base)))
    return model.double()


def check_export(tmp_path, case, factory, energy=0.9, transpose=False):
    results = lorascope.analyze(case.base, case.adapter).save(tmp_path / "results")
    out = run_select([results], tmp_path / "sel", Policy("energy", energy=energy), export=tmp_path / "export")
    table = out.export.table.set_index("name")
    merged = peft.PeftModel.from_pretrained(fresh(case, factory), str(tmp_path / "export")).merge_and_unload()
    got_sd, base_sd = merged.state_dict(), fresh(case, factory).state_dict()
    truncated = 0
    for name, dw in case.deltas.items():
        key = name if ".experts." in name + "." else f"{name}.weight"
        got_all = (got_sd[key] - base_sd[key]).numpy()
        for (label, want), (_, got) in zip(matrices(name, dw), matrices(name, got_all)):
            want, got = (want.T, got.T) if transpose else (want, got)
            k = int(table.loc[label, "rank"]) if table.loc[label, "exported"] else 0
            s = np.linalg.svd(want, compute_uv=False)
            expected = np.sqrt(max(0.0, 1 - np.sum(s[:k] ** 2) / np.sum(s**2)))
            error = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert error == pytest.approx(expected, abs=1e-5), label
            truncated += k < min(want.shape)
    assert truncated > 0  # some update was actually truncated
    return out


FAMILIES = {
    "loha": (tiny_llama, peft.LoHaConfig(r=3, alpha=4, target_modules=["q_proj", "v_proj"]), {}),
    "lokr": (
        tiny_llama,
        peft.LoKrConfig(r=2, alpha=4, target_modules=["q_proj", "down_proj"], decompose_both=True),
        {},
    ),
    "adalora": (
        tiny_llama,
        peft.AdaLoraConfig(
            init_r=4, target_r=2, lora_alpha=8, total_step=10, target_modules=["q_proj", "v_proj"]
        ),
        {},
    ),
    "vera": (tiny_llama, peft.VeraConfig(r=4, target_modules=["q_proj", "down_proj"]), {}),
    "ia3": (
        tiny_llama,
        peft.IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]),
        {"around_one": ("ia3_l",)},
    ),
    "oft": (
        tiny_llama,
        peft.OFTConfig(oft_block_size=8, target_modules=["q_proj", "v_proj"]),
        {"scale": 0.1},
    ),
    "boft": (
        tiny_llama,
        peft.BOFTConfig(boft_block_size=8, target_modules=["q_proj"]),
        {"scale": 0.1, "around_one": ("boft_s",)},
    ),
    "conv-loha": (
        ConvNet,
        peft.LoHaConfig(r=2, alpha=4, target_modules=["conv", "conv1d", "lin"], use_effective_conv2d=True),
        {},
    ),
    "conv-lokr": (
        ConvNet,
        peft.LoKrConfig(
            r=2,
            alpha=4,
            target_modules=["conv", "conv1d", "lin", "wide", "wide1d"],
            use_effective_conv2d=True,
        ),
        {},
    ),
    "conv-oft": (
        ConvNet,
        peft.OFTConfig(oft_block_size=4, target_modules=["conv", "lin", "emb"]),
        {"scale": 0.1},
    ),
}


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_every_family_exports_to_a_peft_lora(tmp_path, kind):
    factory, config, kwargs = FAMILIES[kind]
    case = make_case(tmp_path, factory(), copy.deepcopy(config), **kwargs)
    out = check_export(tmp_path, case, factory)
    assert out.export.table["exported"].all()
    assert out.export.config["peft_type"] == "LORA"


def test_gpt2_conv1d_families_export_with_fan_in_fan_out(tmp_path):
    config = peft.VeraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    case = make_case(tmp_path, tiny_gpt2(), config)
    out = check_export(tmp_path, case, tiny_gpt2, transpose=True)
    assert out.export.config["fan_in_fan_out"] is True


def test_flattened_factors_without_the_base_are_listed_not_exported(tmp_path):
    """LoHa's 2-D factors do not say whether the layer is linear or a 1×1 / flattened conv: the base does."""
    case = make_case(tmp_path, ConvNet(), peft.LoHaConfig(r=2, alpha=4, target_modules=["conv", "lin"]))
    results = lorascope.analyze(case.adapter).save(tmp_path / "results")
    with pytest.raises(lorascope.errors.LorascopeError, match="exports no module"):
        run_select([results], tmp_path / "sel", Policy("energy", energy=0.9), export=tmp_path / "export")


def test_grouped_conv_lora_is_listed_not_exported(tmp_path):
    case = make_case(
        tmp_path,
        ConvNet(),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["grouped", "conv"]),
        forward_deltas={"grouped": (4, 3, 3), "conv": (4, 3, 3)},
    )
    results = lorascope.analyze(case.base, case.adapter).save(tmp_path / "results")
    out = run_select([results], tmp_path / "sel", Policy("energy", energy=0.9), export=tmp_path / "export")
    table = out.export.table.set_index("name")
    assert not table.loc["grouped", "exported"] and "grouped convolution" in table.loc["grouped", "reason"]
    assert table.loc["conv", "exported"]


def tiny_qwen_moe():
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        moe_intermediate_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=3,
        num_experts_per_tok=2,
        head_dim=8,
    )
    torch.manual_seed(0)
    return transformers.Qwen3MoeForCausalLM(cfg)


@pytest.mark.parametrize("fused", [False, True])
def test_moe_experts_export_as_a_target_parameters_lora(tmp_path, fused):
    """Each expert at its own rank, zero-padded to the parameter's largest; gate_up_proj and down_proj keep
    their nesting, so PEFT loads both onto the right parameters."""
    model = tiny_qwen_moe()
    base = save_fused(copy.deepcopy(model), tmp_path / "fused") if fused else None
    config = peft.LoraConfig(
        r=3,
        lora_alpha=4,
        target_modules=["q_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    )
    case = make_case(tmp_path, model, config)
    hub_base = case.base
    case.base = base or case.base
    results = lorascope.analyze(case.base, case.adapter).save(tmp_path / "results")
    out = run_select([results], tmp_path / "sel", Policy("energy", energy=0.8), export=tmp_path / "export")
    cfg = out.export.config
    assert cfg["target_parameters"] == [
        "model.layers.0.mlp.experts.down_proj",
        "model.layers.0.mlp.experts.gate_up_proj",
    ]
    table = out.export.table.set_index("name")
    for param in ("gate_up_proj", "down_proj"):
        path = f"model.layers.0.mlp.experts.{param}"
        expert_ranks = [int(table.loc[f"{path}.{e}", "rank"]) for e in range(3)]
        assert module_scale(cfg, path)[:2] == (max(expert_ranks), max(expert_ranks))  # one rank per parameter
        assert "zero-padded" in table.loc[f"{path}.0", "reason"]
    case.base = hub_base  # PEFT loads the export into the model transformers builds from its own checkpoint
    merged = peft.PeftModel.from_pretrained(
        fresh(case, tiny_qwen_moe), str(tmp_path / "export")
    ).merge_and_unload()
    got_sd, base_sd = merged.state_dict(), fresh(case, tiny_qwen_moe).state_dict()
    for name, dw in case.deltas.items():
        key = name if ".experts." in name + "." else f"{name}.weight"
        for (label, want), (_, got) in zip(
            matrices(name, dw), matrices(name, (got_sd[key] - base_sd[key]).numpy())
        ):
            k = int(table.loc[label, "rank"])
            s = np.linalg.svd(want, compute_uv=False)
            expected = np.sqrt(max(0.0, 1 - np.sum(s[:k] ** 2) / np.sum(s**2)))
            assert np.linalg.norm(got - want) / np.linalg.norm(want) == pytest.approx(expected, abs=1e-5), (
                label
            )


def test_expert_tensors_follow_peft_layout():
    """Packing checked against PEFT's own reading: A.reshape(E, r, in)[e], B.reshape(out, r, E)[:, :, e]."""
    rng = np.random.default_rng(0)
    factors = {
        0: (rng.standard_normal((5, 2)), rng.standard_normal((2, 4))),
        2: (rng.standard_normal((5, 3)), rng.standard_normal((3, 4))),
    }
    tensors, ranks = expert_tensors([ExpertSlot("m.experts", "w", 3, 0, factors)])
    assert ranks == {"m.experts.w": 3}
    a = torch.tensor(tensors["base_model.model.m.experts.lora_A.weight"])
    b = torch.tensor(tensors["base_model.model.m.experts.lora_B.weight"])
    a_e, b_e = a.reshape(3, 3, 4), b.reshape(5, 3, 3)
    for e in range(3):
        got = (b_e[:, :, e] @ a_e[e]).numpy()
        want = factors[e][0] @ factors[e][1] if e in factors else np.zeros((5, 4))
        np.testing.assert_allclose(got, want, atol=1e-12)
