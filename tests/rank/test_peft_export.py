"""PEFT itself loads the exported adapters: its ranks and scales are the selection's, and its logits equal
base + truncated ΔW computed independently with numpy. Needs the `hf` extra."""

import copy

import numpy as np
import pytest
import torch
from rank.planting import truncate
from refs import planted

import lorascope
from lorascope.rank import Policy, run_select

transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

pytestmark = pytest.mark.hf

IDS = torch.tensor([[1, 5, 9, 13, 2, 40, 33, 7, 11, 3], [4, 4, 8, 16, 23, 42, 15, 1, 0, 62]])


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=2)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=IDS).logits.double().numpy()


def with_updates(folder, cls, updates: dict[str, np.ndarray]):
    """A fresh model from ``folder`` (float64) with W ← W + ΔW per ``name`` (ΔW in the stored layout)."""
    model = cls.from_pretrained(str(folder)).double()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, dw in updates.items():
            params[f"{name}.weight"].add_(torch.from_numpy(dw))
    return model


def peft_layers(model):
    return {
        name.removeprefix("base_model.model."): m
        for name, m in model.named_modules()
        if hasattr(m, "r") and isinstance(getattr(m, "r"), dict) and "default" in m.r
    }


def test_llama_adapter_resize_loads_in_peft_with_matching_logits(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "base")
    pm = peft.get_peft_model(
        model,
        peft.LoraConfig(r=6, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"]),
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    pm.save_pretrained(tmp_path / "adapter")
    pm.double()  # the saved float32 factors, multiplied in float64
    # ΔW_ref per module from PEFT's own layers: get_delta_weight is what PEFT merges
    with torch.no_grad():
        refs = {name: layer.get_delta_weight("default").numpy() for name, layer in peft_layers(pm).items()}
    assert len(refs) == 2 * 3 + 1
    out = run_select(
        [tmp_path / "base", tmp_path / "adapter"],
        tmp_path / "sel",
        Policy("energy", energy=0.8),
        export=tmp_path / "small",
    )
    ranks = out.selection.ranks()
    assert set(ranks) == set(refs) and len(set(ranks.values())) > 1 and max(ranks.values()) < 6

    loaded = peft.PeftModel.from_pretrained(
        transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "base")).double(),
        str(tmp_path / "small"),
    )
    layers = peft_layers(loaded)
    for name, r in ranks.items():  # PEFT's own reading of rank_pattern / alpha_pattern
        assert layers[name].r["default"] == r and layers[name].scaling["default"] == 1.0, name
    want = logits(
        with_updates(
            tmp_path / "base",
            transformers.LlamaForCausalLM,
            {n: truncate(dw, ranks[n]) for n, dw in refs.items()},
        )
    )
    got = logits(loaded)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    untruncated = logits(with_updates(tmp_path / "base", transformers.LlamaForCausalLM, refs))
    assert np.max(np.abs(untruncated - want)) > 1e-3 * np.max(
        np.abs(want)
    )  # the truncation is visible in logits


def test_gpt2_full_finetune_extraction_loads_in_peft(tmp_path):
    base = tiny_gpt2()
    base.save_pretrained(tmp_path / "base")
    refs = {}  # ΔW (out, in); GPT-2 Conv1D stores the transpose
    with torch.no_grad():
        for i, (name, p) in enumerate(base.named_parameters()):
            if name.endswith(("attn.c_attn.weight", "mlp.c_fc.weight", "attn.c_proj.weight")):
                dw = planted(p.shape[1], p.shape[0], np.geomspace(0.8, 0.01, 6), seed=i)
                p.add_(torch.tensor(dw.T, dtype=p.dtype))
                refs[name.removesuffix(".weight")] = dw
    base.save_pretrained(tmp_path / "tuned")
    tuned = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "tuned"))
    base_sd = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "base")).state_dict()
    refs = {
        n: (tuned.state_dict()[f"{n}.weight"].double() - base_sd[f"{n}.weight"].double()).numpy().T
        for n in refs
    }
    out = run_select(
        [tmp_path / "base", tmp_path / "tuned"],
        tmp_path / "sel",
        Policy("budget", budget=1800),
        export=tmp_path / "extracted",
    )
    ranks = {n: r for n, r in out.selection.ranks().items() if r}
    assert set(ranks) <= set(refs) and out.export.config["fan_in_fan_out"] is True
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT notes that fan_in_fan_out suits Conv1D
        loaded = peft.PeftModel.from_pretrained(
            transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "base")).double(),
            str(tmp_path / "extracted"),
        )
    layers = peft_layers(loaded)
    assert {n: layers[n].r["default"] for n in ranks} == ranks
    want = logits(
        with_updates(
            tmp_path / "base",
            transformers.GPT2LMHeadModel,
            {n: truncate(refs[n], r).T for n, r in ranks.items()},
        )
    )
    got = logits(loaded)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_resize_keeps_the_modules_to_save_head_of_a_real_classifier_adapter(real_fixtures, tmp_path):
    """A real SEQ_CLS adapter (DistilBERT, LoRA on q_lin/v_lin, a trained classifier head in modules_to_save):
    resized at energy 1.0 it keeps every LoRA direction and its head, so PEFT gives the source's logits."""
    from safetensors.torch import load_file

    source = real_fixtures / "peft" / "Tashu014+lora-imdb-distilbert"
    results = lorascope.analyze(source).save(tmp_path / "results")
    run_select([results], tmp_path / "sel", Policy("energy", energy=1.0), export=tmp_path / "small")
    src, out = (
        load_file(source / "adapter_model.safetensors"),
        load_file(tmp_path / "small" / "adapter_model.safetensors"),
    )
    heads = [k for k in src if ".lora_" not in k]
    assert heads and all(torch.equal(src[k], out[k]) for k in heads)  # copied unchanged, same dtype

    torch.manual_seed(0)
    base = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(num_labels=2)
    ).eval()
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102], [101, 6659, 1010, 2025, 2204, 102]])

    def peft_logits(folder):
        model = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
        with torch.no_grad():
            return model(input_ids=ids).logits.double().numpy()

    want, got = peft_logits(source), peft_logits(tmp_path / "small")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    with torch.no_grad():
        plain = base(input_ids=ids).logits.double().numpy()
    assert np.abs(plain - want).max() > 1e-2  # the head and the update matter: this comparison can fail
