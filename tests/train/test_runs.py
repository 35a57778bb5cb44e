"""Run folders and sweeps: what a run records, shared bases, the spectrum engine reading our outputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

import lorascope
from lorascope.errors import LorascopeError
from lorascope.train.folders import load_minigpt
from lorascope.train.methods import MethodConfig
from lorascope.train.runs import RunSpec, expand_sweep, pick_device, sweep, train_one, train_run
from lorascope.train.trainer import LoopConfig, OptimConfig

LOOP = LoopConfig(steps=12, batch_size=8, eval_every=4, rank_every=6)


def spec(method: str = "lora", **kw) -> RunSpec:
    m = MethodConfig(method=method, rank=kw.pop("rank", 2), targets=kw.pop("targets", "attn"))
    return RunSpec(
        method=m,
        task=kw.pop("task", "edit:4"),
        optim=OptimConfig(lr=kw.pop("lr", 1e-2)),
        loop=LOOP,
        device="cpu",
        **kw,
    )


def test_lora_run_folder(tiny_base, tmp_path):
    out = tmp_path / "r2"
    row = train_run(spec(), tiny_base, out)
    assert {p.name for p in out.iterdir()} == {
        "tuned",
        "adapter",
        "metrics.json",
        "history.csv",
        "rank_history.csv",
    }
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "lora" and m["options"]["rank"] == 2 and m["lora"]["scale"] == 2.0
    assert (
        m["lora"]["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"] and m["lora"]["modules"] == 8
    )
    # tiny model: hidden 32, 4 heads / 2 kv heads of 8 → q, o 32×32; k, v 16×32; two layers
    assert m["trainable_parameters"] == 2 * 2 * (64 + 48 + 48 + 64)
    assert m["total_parameters"] == load_minigpt(tiny_base).model.num_parameters() + m["trainable_parameters"]
    assert m["optimizer_state_bytes"] >= 2 * 4 * m["trainable_parameters"]
    assert m["wall_seconds"] >= m["train_seconds"] > 0 and m["memory"]["peak_rss_bytes"] > 0
    assert m["final"]["step"] == 12 and set(m["final"]) >= {
        "edit_acc",
        "paraphrase_acc",
        "retain_same_acc",
        "retain_other_acc",
        "eval_loss",
    }
    assert len(m["task"]["edits"]) == 4 and m["base"] == str(tiny_base.resolve())
    history = pd.read_csv(out / "history.csv")
    assert history["step"].tolist() == [0, 4, 8, 12] and "train_loss" in history and "edit_acc" in history
    ranks = pd.read_csv(out / "rank_history.csv")
    assert sorted(ranks["step"].unique()) == [0, 6, 12] and len(ranks) == 3 * 8
    assert set(ranks.columns) >= {"name", "entropy_rank", "rank_90", "fro_norm"}
    assert (ranks[ranks.step == 0]["fro_norm"] == 0).all() and (ranks[ranks.step == 12]["fro_norm"] > 0).all()
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert {k: cfg[k] for k in ("r", "lora_alpha", "use_rslora", "use_dora", "peft_type")} == {
        "r": 2,
        "lora_alpha": 4.0,
        "use_rslora": False,
        "use_dora": False,
        "peft_type": "LORA",
    }
    assert (
        row["run"] == "lora-r2-attn" and row["folder"] == "r2" and row["edit_acc"] == m["final"]["edit_acc"]
    )


def test_the_spectrum_engine_reads_our_adapter_and_agrees_with_rank_history(tiny_base, tmp_path):
    import lorascope

    train_run(spec(rank=3, targets="all-linear"), tiny_base, tmp_path / "run")
    results = lorascope.analyze(tiny_base, tmp_path / "run" / "adapter")
    engine = results.modules.set_index("name")
    ours = pd.read_csv(tmp_path / "run" / "rank_history.csv").query("step == 12").set_index("name")
    assert set(engine.index) == set(ours.index) and len(ours) == 14
    assert (engine["lora_rank"] == 3).all() and (engine["family"] == "lora").all()
    for col in ("fro_norm", "entropy_rank", "rank_90"):
        assert engine[col].loc[ours.index].to_numpy() == pytest.approx(ours[col].to_numpy(), rel=1e-5)
    # the adapter alone, and base vs the merged model, see the same update
    full_diff = lorascope.analyze(tiny_base, tmp_path / "run" / "tuned").modules.set_index("name")
    changed = full_diff.loc[ours.index, "fro_norm"].to_numpy()
    assert changed == pytest.approx(ours["fro_norm"].to_numpy(), rel=1e-3, abs=1e-6)


def test_full_run_has_no_adapter_and_dense_rank_history(tiny_base, tmp_path):
    train_run(spec("full", lr=3e-3), tiny_base, tmp_path / "full")
    assert not (tmp_path / "full" / "adapter").exists()
    ranks = pd.read_csv(tmp_path / "full" / "rank_history.csv")
    assert set(ranks["source"]) == {"dense"} and "lm_head" in set(ranks["name"])
    tuned = load_minigpt(tmp_path / "full" / "tuned").model.state_dict()
    base = load_minigpt(tiny_base).model.state_dict()
    assert any(not torch.equal(tuned[k], base[k]) for k in base)


def test_sweep_shares_one_base_and_writes_an_index(tiny_base, tmp_path):
    template = spec()
    specs = expand_sweep(["lora", "full", "freeze"], [1, 2], ["v_proj", "mlp"], template)
    assert [s.run_name() for s in specs] == [
        "lora-r1-v_proj",
        "lora-r2-v_proj",
        "lora-r1-mlp",
        "lora-r2-mlp",
        "full",
        "freeze-b1",
    ]
    seen = []
    index = sweep(
        specs[:2] + specs[4:],
        tiny_base,
        tmp_path / "sw",
        copy_base=True,
        on_run=lambda i, n, row: seen.append((i, n, row["run"])),
    )
    table = pd.read_csv(index)
    assert table["run"].tolist() == ["lora-r1-v_proj", "lora-r2-v_proj", "full", "freeze-b1"]
    assert seen[-1] == (4, 4, "freeze-b1")
    assert table.loc[table.run == "lora-r2-v_proj", "trainable_parameters"].item() == 2 * 2 * (16 + 32)
    assert (tmp_path / "sw" / "base" / "model.safetensors").is_file()
    assert not any((tmp_path / "sw" / r / "base").exists() for r in table["folder"])
    cfg = json.loads((tmp_path / "sw" / "lora-r1-v_proj" / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((tmp_path / "sw" / "base").resolve())


def test_sweep_refuses_unknown_methods_and_repeated_runs():
    with pytest.raises(LorascopeError, match="unknown method"):
        expand_sweep(["lora", "prefix-tuning"], [1], ["attn"], spec())
    with pytest.raises(LorascopeError, match="same folder"):
        expand_sweep(["lora"], [2, 2], ["attn"], spec())


def test_default_base_is_pretrained_once_and_copied(tiny_base, tiny_config, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCOPE_CACHE", str(cache))
    train_one(spec("freeze"), tmp_path / "one", None, tiny_config)
    assert (tmp_path / "one" / "base" / "config.json").is_file()  # the cached base (from the fixture), copied
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["base"] == str(
        (tmp_path / "one" / "base").resolve()
    )


def test_text_task_on_minigpt_notes_unknown_words(tiny_base, tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(["the capital of nowhere is the moon"] * 12))
    train_run(spec(task=str(tmp_path / "t.txt")), tiny_base, tmp_path / "txt")
    m = json.loads((tmp_path / "txt" / "metrics.json").read_text())
    assert "heldout_acc" in m["final"] and "retain_acc" in m["final"]
    assert any("[UNK]" in n for n in m["notes"])


def test_cuda_request_falls_back_to_the_cpu_with_a_note():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback is for machines without it")
    device, note = pick_device("cuda")
    assert device.type == "cpu" and "CUDA" in note
    assert pick_device("auto") == (torch.device("cpu"), None)


@pytest.mark.hf
def test_hugging_face_gpt2_folder_with_conv1d(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")
    from lorascope.train.folders import write_json
    from lorascope.train.tokenizer import WordTokenizer, hf_tokenizer_config, hf_tokenizer_json

    tok = WordTokenizer(tuple("alpha beta gamma delta is the of what".split()))
    cfg = transformers.GPT2Config(
        vocab_size=tok.vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(str(tmp_path / "gpt2"))
    write_json(tmp_path / "gpt2" / "tokenizer.json", hf_tokenizer_json(tok))
    write_json(tmp_path / "gpt2" / "tokenizer_config.json", hf_tokenizer_config(tok, 32))
    lines = [
        json.dumps({"prompt": f"what is {a}", "completion": b})
        for a, b in [("alpha", "beta"), ("beta", "gamma"), ("gamma", "delta"), ("delta", "alpha")] * 5
    ]
    (tmp_path / "task.jsonl").write_text("\n".join(lines))
    run = spec(targets="attn", task=str(tmp_path / "task.jsonl"), lr=2e-2)
    train_run(run, tmp_path / "gpt2", tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["base_format"] == "hf" and m["final"]["heldout_loss"] < m["base_eval"]["heldout_loss"]
    cfg_json = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg_json["fan_in_fan_out"] is True and cfg_json["target_modules"] == ["attn.c_proj", "c_attn"]
    base = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "gpt2"))
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter")).eval()
    tuned = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "run" / "tuned")).eval()
    ids = torch.tensor([[2, 11, 7, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4)


def test_failed_sweep_leaves_nothing_behind_and_keeps_finished_runs(tiny_base, tmp_path):
    out = tmp_path / "sw"  # copy_base=True: the MiniGPT base is copied into out/base before the first run
    with pytest.raises(LorascopeError, match="unknown task"):
        sweep([spec(task="capitals:3")], tiny_base, out, copy_base=True)
    assert not out.exists()  # so the same --out works next time

    out.mkdir()  # an empty folder the user made stays, empty
    with pytest.raises(LorascopeError, match="unknown task"):
        sweep([spec(task="capitals:3")], tiny_base, out, copy_base=True)
    assert out.is_dir() and not any(out.iterdir())

    with pytest.raises(LorascopeError, match="match no linear module"):
        sweep([spec(rank=1), spec(rank=2, targets="qkv")], tiny_base, out, copy_base=True)
    # the failed run is gone
    assert {p.name for p in out.iterdir()} == {
        "base",
        "lora-r1-attn",
        "index.csv",
        ".lorascope-manifest.json",
    }
    assert pd.read_csv(out / "index.csv")["run"].tolist() == ["lora-r1-attn"]


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)"
)
@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_a_run_on_the_gpu_trains_and_saves_what_the_cpu_reads(tiny_base, tmp_path, method):
    out = tmp_path / method
    train_run(dataclasses.replace(spec(method), device="cuda"), tiny_base, out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["memory"]["peak_cuda_bytes"] > 0 and m["final"]["step"] == 12
    assert np.isfinite(m["final"]["eval_loss"])
    first, last = pd.read_csv(out / "history.csv")["train_loss"].dropna().iloc[[0, -1]]
    assert last < first  # it learned
    saved = out / ("tuned" if method == "full" else "adapter")
    res = lorascope.analyze(tiny_base, saved) if method == "full" else lorascope.analyze(saved)
    assert (res.modules["fro_norm"] > 0).all()
