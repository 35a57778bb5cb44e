"""Our LoRA, rsLoRA and DoRA against PEFT itself: same losses step by step, and adapters PEFT loads.

Needs the hf extra (transformers, peft); models are built from configs, nothing is downloaded.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lorascope.train.data import IGNORE, Encoded
from lorascope.train.lora import LoraSpec, adapter_parameters, inject, lora_layers, resolve_targets
from lorascope.train.trainer import LoopConfig, OptimConfig, logits_of, train

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

STEPS = 20


def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def token_data(n: int = 48, t: int = 12) -> Encoded:
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 64, (n, 1), generator=g)
    ids = (start + 3 * torch.arange(t)) % 64  # a learnable pattern: each token is the previous one + 3
    labels = ids.clone()
    labels[:, :3] = IGNORE  # a prompt with no loss, as the tasks have
    return Encoded(ids, labels)


def run(model: torch.nn.Module, params: list, lr: float = 1e-2) -> list[float]:
    result = train(
        model,
        [{"params": params}],
        token_data(),
        {},
        OptimConfig(lr=lr, warmup_steps=3, clip=1.0),
        LoopConfig(steps=STEPS, batch_size=8, eval_every=0, rank_every=0, seed=0),
        torch.device("cpu"),
    )
    return result.losses


def ours_and_peft(make, targets: str, peft_targets: list[str], spec: LoraSpec, fan_in_fan_out: bool = False):
    base = make()
    ours = copy.deepcopy(base)
    inject(ours, resolve_targets(ours, targets), spec)
    config = peft.LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=peft_targets,
        use_rslora=spec.rslora,
        use_dora=spec.dora,
        fan_in_fan_out=fan_in_fan_out,
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    theirs_layers = {
        n.removeprefix("base_model.model."): m
        for n, m in theirs.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    assert set(theirs_layers) == {n for n, _ in lora_layers(ours)}
    with torch.no_grad():  # the same initial A and B (and magnitude) on both sides
        for name, layer in lora_layers(ours):
            layer.lora_B.weight.normal_(0, 0.02)  # non-zero B, so the first steps already exercise B @ A
            other = theirs_layers[name]
            other.lora_A["default"].weight.copy_(layer.lora_A.weight)
            other.lora_B["default"].weight.copy_(layer.lora_B.weight)
            if spec.dora:
                assert torch.allclose(
                    other.lora_magnitude_vector["default"].weight, layer.lora_magnitude_vector
                )
                other.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude_vector)
    ours_params = [p for group in adapter_parameters(ours).values() for p in group]
    theirs_params = [p for p in theirs.parameters() if p.requires_grad]
    assert sum(p.numel() for p in ours_params) == sum(p.numel() for p in theirs_params)
    return ours, ours_params, theirs, theirs_params


@pytest.mark.parametrize(
    "spec,targets",
    [
        (LoraSpec(r=4, alpha=8.0), "attn"),
        (LoraSpec(r=3, alpha=5.0, rslora=True), "all-linear"),
        (LoraSpec(r=4, alpha=8.0, dora=True), "all-linear"),
        (
            LoraSpec(r=4, alpha=8.0, dropout=0.2),
            "attn",
        ),  # same seed, same masks: dropout acts where PEFT's does
        (LoraSpec(r=4, alpha=8.0, dropout=0.2, dora=True), "attn"),
    ],
)
def test_losses_match_peft_every_step(spec, targets):
    names = {
        "attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }[targets]
    ours, ours_params, theirs, theirs_params = ours_and_peft(tiny_llama, targets, names, spec)
    ours_losses = run(ours, ours_params)
    theirs_losses = run(theirs, theirs_params)
    assert ours_losses[-1] < ours_losses[0] - 0.05  # the adapters learned something
    diff = max(abs(a - b) for a, b in zip(ours_losses, theirs_losses))
    assert diff < 1e-5, f"max loss difference {diff:.2e}"


def test_conv1d_losses_match_peft_with_fan_in_fan_out():
    spec = LoraSpec(r=4, alpha=8.0)
    ours, ours_params, theirs, theirs_params = ours_and_peft(
        tiny_gpt2, "attn", ["c_attn", "attn.c_proj"], spec, fan_in_fan_out=True
    )
    ours_losses, theirs_losses = run(ours, ours_params), run(theirs, theirs_params)
    assert ours_losses[-1] < ours_losses[0] - 0.05
    assert max(abs(a - b) for a, b in zip(ours_losses, theirs_losses)) < 1e-5


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_saved_adapter_loads_in_peft_with_our_merged_logits(tiny_base, tmp_path, method):
    from lorascope.train.folders import load_minigpt
    from lorascope.train.methods import MethodConfig
    from lorascope.train.runs import RunSpec, train_run

    spec = RunSpec(
        method=MethodConfig(method=method, rank=4, targets="all-linear"),
        task="edit:4",
        optim=OptimConfig(lr=1e-2),
        loop=LoopConfig(steps=15, batch_size=8, eval_every=0, rank_every=0),
        device="cpu",
    )
    train_run(spec, tiny_base, tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["use_dora"] is (method == "dora") and cfg["base_model_name_or_path"] == str(
        tiny_base.resolve()
    )
    base = transformers.LlamaForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter")).eval()
    tuned = load_minigpt(tmp_path / "run" / "tuned").model.eval()
    untouched = load_minigpt(tiny_base).model.eval()
    ids = torch.randint(4, 40, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs, before = tuned(ids), logits_of(loaded, ids), untouched(ids)
    assert (ours - before).abs().max() > 1e-2  # the adapter changed the model
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)
