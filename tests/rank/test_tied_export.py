"""Exports that work unmerged: tied embeddings and extended vocabularies, loaded by PEFT itself.

Each case fine-tunes a tiny transformers model by hand (low-rank updates, which an energy-0.99999 selection
keeps whole), exports with ``select --export``, loads the adapter with ``PeftModel.from_pretrained`` on the
base and compares its logits with the tuned model's. Needs the `hf` extra.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lorascope.rank import Policy, run_select

transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

pytestmark = [pytest.mark.hf, pytest.mark.filterwarnings("ignore:.*tie_word_embeddings:UserWarning")]

IDS = torch.tensor([[1, 5, 9, 13, 2, 40, 33, 7, 11, 3], [4, 4, 8, 16, 23, 42, 15, 1, 0, 62]])
NEW_IDS = torch.tensor([[1, 64, 9, 66, 2, 67, 33, 65, 11, 3]])  # with tokens of an extended vocabulary


def llama(tie: bool, vocab: int = 64):
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(cfg)


def low_rank(shape, r: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape[0], r, generator=g) @ torch.randn(r, shape[1], generator=g)


def save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path)
    return path


def load(cls, path, vocab: int | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls.from_pretrained(str(path)).double()
        if vocab is not None:
            model.resize_token_embeddings(vocab)
    return model


def logits(model, ids=IDS) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids).logits.double().numpy()


def peft_model(cls, base, adapter, vocab: int | None = None, config=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(load(cls, base, vocab), str(adapter), config=config)


def relative(got: np.ndarray, want: np.ndarray, base: np.ndarray) -> float:
    """The error as a share of what the fine-tune changed: 1 means no closer than the base model."""
    return float(np.abs(got - want).max() / np.abs(want - base).max())


def export(tmp_path, base, tuned):
    policy = Policy("energy", energy=0.99999)
    out = run_select([base, tuned], tmp_path / "sel", policy, export=tmp_path / "adapter")
    return out.export, pd.read_csv(tmp_path / "sel" / "export.csv")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tied_embedding_update_works_unmerged(tmp_path, arch):
    """The embedding's update reaches the tied head (ensure_weight_tying); the note's merge recipe works."""
    cls, model = (
        (transformers.LlamaForCausalLM, llama(tie=True))
        if arch == "llama"
        else (transformers.GPT2LMHeadModel, gpt2())
    )
    embedding = "model.embed_tokens" if arch == "llama" else "transformer.wte"
    base = save(model, tmp_path / "base")
    tuned = copy.deepcopy(model)
    params = dict(tuned.named_parameters())
    with torch.no_grad():
        params[f"{embedding}.weight"].add_(low_rank(params[f"{embedding}.weight"].shape, 3, 1))
    assert tuned.lm_head.weight is params[f"{embedding}.weight"]  # one matrix: the tuned model is still tied
    save(tuned, tmp_path / "tuned")
    result, table = export(tmp_path, base, tmp_path / "tuned")

    assert result.config["ensure_weight_tying"] is True and "lm_head" in result.config["target_modules"]
    head = table.set_index("name").loc["lm_head"]
    assert bool(head["exported"]) and "tied to" in head["reason"] and head["rank"] == 3
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    p = "base_model.model."
    assert torch.equal(saved[f"{p}lm_head.lora_A.weight"], saved[f"{p}{embedding}.lora_embedding_B"].T)
    assert torch.equal(saved[f"{p}lm_head.lora_B.weight"], saved[f"{p}{embedding}.lora_embedding_A"].T)
    assert any("ensure_weight_tying" in n and "merge_and_unload" in n for n in result.notes)
    assert json.loads((tmp_path / "sel" / "selection.json").read_text())["export"]["notes"] == result.notes

    want, plain = logits(load(cls, tmp_path / "tuned")), logits(load(cls, base))
    assert relative(logits(peft_model(cls, base, tmp_path / "adapter")), want, plain) < 1e-5
    # the note's merge recipe: without ensure_weight_tying and lm_head, PEFT merges the update once
    config = peft.LoraConfig.from_pretrained(str(tmp_path / "adapter"))
    config.ensure_weight_tying = False
    config.target_modules = [t for t in config.target_modules if t != "lm_head"]
    merged = peft_model(cls, base, tmp_path / "adapter", config=config).merge_and_unload()
    assert relative(logits(merged), want, plain) < 1e-5
    # what the note warns of, as PEFT 0.21 behaves: a plain merge adds the update twice
    twice = peft_model(cls, base, tmp_path / "adapter").merge_and_unload()
    assert relative(logits(twice), want, plain) > 0.1


def test_untied_tuned_head_exports_both_updates(tmp_path):
    """The base ties lm_head; the tuned model untied and changed it on its own: exact unmerged, said so."""
    model = llama(tie=True)
    base = save(model, tmp_path / "base")
    tuned = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**{**model.config.to_dict(), "tie_word_embeddings": False})
    )
    tuned.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        tuned.lm_head.weight.copy_(model.model.embed_tokens.weight + low_rank((64, 32), 2, 2))
        tuned.model.embed_tokens.weight.add_(low_rank((64, 32), 3, 3))
    save(tuned, tmp_path / "tuned")
    result, table = export(tmp_path, base, tmp_path / "tuned")
    ranks = table.set_index("name")["rank"]
    assert ranks["lm_head"] == 2 and ranks["model.embed_tokens"] == 3
    assert "ensure_weight_tying" not in result.config
    assert any(
        "unties its output head" in n and "merge only into a base whose head is untied" in n
        for n in result.notes
    )
    want = logits(load(transformers.LlamaForCausalLM, tmp_path / "tuned"))
    plain = logits(load(transformers.LlamaForCausalLM, base))
    got = logits(peft_model(transformers.LlamaForCausalLM, base, tmp_path / "adapter"))
    assert relative(got, want, plain) < 1e-5


def extended(tmp_path, embed_update: bool):
    """An untied Llama whose vocabulary grew from 64 to 68 tokens (new rows in embed_tokens and lm_head), with
    q_proj changed, and the common rows of the embedding changed too when ``embed_update``."""
    model = llama(tie=False)
    base = save(model, tmp_path / "base")
    tuned = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned.resize_token_embeddings(68)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        tuned.model.embed_tokens.weight[64:] = torch.randn(4, 32, generator=g)
        tuned.lm_head.weight[64:] = torch.randn(4, 32, generator=g)
        tuned.model.layers[0].self_attn.q_proj.weight.add_(low_rank((32, 32), 2, 6))
        if embed_update:
            tuned.model.embed_tokens.weight[:64] += low_rank((64, 32), 2, 7)
    save(tuned, tmp_path / "tuned")
    return base, tmp_path / "tuned"


def test_new_vocabulary_rows_export_through_trainable_tokens(tmp_path):
    base, tuned = extended(tmp_path, embed_update=False)
    result, table = export(tmp_path, base, tuned)
    assert result.config["trainable_token_indices"] == {
        "model.embed_tokens": [64, 65, 66, 67],
        "lm_head": [64, 65, 66, 67],
    }
    rows = table[table["kind"] == "rows"]
    assert set(rows["name"]) == {"model.embed_tokens rows 64–67", "lm_head rows 64–67"}
    assert rows["exported"].all() and len(result.exported) == 1  # q_proj; the token rows are listed apart
    assert any("resize_token_embeddings(68)" in n for n in result.notes) and len(result.notes) == 2
    want = logits(load(transformers.LlamaForCausalLM, tuned), NEW_IDS)
    plain = logits(load(transformers.LlamaForCausalLM, base, vocab=68), NEW_IDS)
    got = logits(peft_model(transformers.LlamaForCausalLM, base, tmp_path / "adapter", vocab=68), NEW_IDS)
    assert relative(got, want, plain) < 1e-5


def test_new_rows_beside_a_lora_update_are_named_as_dropped(tmp_path, capsys):
    from click.testing import CliRunner

    from lorascope.cli import main

    base, tuned = extended(tmp_path, embed_update=True)
    res = CliRunner().invoke(
        main,
        [
            "select",
            str(base),
            str(tuned),
            "--energy",
            "0.99999",
            "--out",
            str(tmp_path / "sel"),
            "--export",
            str(tmp_path / "adapter"),
        ],
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "sel" / "export.csv").set_index("name")
    dropped = table.loc["model.embed_tokens rows 64–67"]
    assert not dropped["exported"]
    assert "dropped" in dropped["reason"] and "trainable_token_indices" in dropped["reason"]
    assert bool(table.loc["lm_head rows 64–67", "exported"])  # the head's common rows did not change: it fits
    printed = " ".join(res.output.split())
    assert "model.embed_tokens rows 64–67 (4 new tokens) are not in the adapter" in printed
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] == {"lm_head": [64, 65, 66, 67]}
    # the common rows are exact; the dropped rows are what the resize made of them
    want = logits(load(transformers.LlamaForCausalLM, tuned))
    plain = logits(load(transformers.LlamaForCausalLM, base, vocab=68))
    got = logits(peft_model(transformers.LlamaForCausalLM, base, tmp_path / "adapter", vocab=68))
    assert relative(got, want, plain) < 1e-5


def test_resizing_an_adapter_trained_with_ensure_weight_tying(tmp_path):
    """A PEFT adapter with LoRA on the tied embedding (ensure_weight_tying: it saved lm_head's factors too),
    resized at full energy: the smaller adapter gives the source adapter's logits, unmerged."""
    model = llama(tie=True)
    base = save(model, tmp_path / "base")
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "embed_tokens"], ensure_weight_tying=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(copy.deepcopy(model), config)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name and "lm_head" not in name:  # lm_head's factors: views of the embedding's
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.save_pretrained(tmp_path / "source")
    result, table = export(tmp_path, base, tmp_path / "source")
    assert result.config["ensure_weight_tying"] is True and (table["name"] == "lm_head").sum() == 1
    want = logits(peft_model(transformers.LlamaForCausalLM, base, tmp_path / "source"))
    plain = logits(load(transformers.LlamaForCausalLM, base))
    got = logits(peft_model(transformers.LlamaForCausalLM, base, tmp_path / "adapter"))
    assert relative(got, want, plain) < 1e-5
