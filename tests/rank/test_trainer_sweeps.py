"""Sweeps over the reference trainer's folders: a run's functional sweep on its task, a train-sweep's table
and knees."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lorascope.rank import run_sweep
from lorascope.rank.training import knee, knees, training_table


@pytest.fixture(scope="module")
def train_sweep(tmp_path_factory):
    """A tiny MiniGPT base (not pre-trained) and a sweep: LoRA r = 1, 2, 4 on attention, and a full
    fine-tune."""
    from lorascope.train.folders import save_minigpt
    from lorascope.train.model import build, sized_config
    from lorascope.train.runs import RunSpec, expand_sweep, sweep
    from lorascope.train.tokenizer import WordTokenizer
    from lorascope.train.trainer import LoopConfig
    from lorascope.train.world import WorldConfig, build_world

    tmp = tmp_path_factory.mktemp("trainer")
    world = build_world(WorldConfig(n_entities=8, seed=0))
    tok = WordTokenizer(tuple(world.words()))
    save_minigpt(tmp / "base", build(sized_config("tiny", tok.vocab_size), seed=0), tok, world)
    template = RunSpec(
        task="edit:4", loop=LoopConfig(steps=12, batch_size=8, eval_every=0, rank_every=0), device="cpu"
    )
    sweep(
        expand_sweep(["lora", "full"], [1, 2, 4], ["attn"], template),
        tmp / "base",
        tmp / "sweep",
        copy_base=True,
    )
    return tmp / "sweep"


def test_trainer_run_functional_sweep_measures_its_task(train_sweep, tmp_path):
    from lorascope.train.folders import load_base
    from lorascope.train.runs import load_task
    from lorascope.train.data import encode
    from lorascope.train.trainer import evaluate

    run = train_sweep / "lora-r4-attn"
    out = run_sweep([run], tmp_path / "out", [1, 2, 4])
    table = out.functional.set_index("point")
    metrics = json.loads((run / "metrics.json").read_text())
    # the base row is the trainer's own evaluation of the base; the untruncated row is the run's final
    # evaluation
    assert table.loc["base", "edit_loss"] == pytest.approx(metrics["base_eval"]["edit_loss"], rel=1e-5)
    assert table.loc["full", "edit_loss"] == pytest.approx(metrics["final"]["edit_loss"], rel=1e-4)
    assert out.pick["metric"] == "edit_loss" and table["loss"].equals(table["edit_loss"])
    # the adapter (r = 4) was analyzed, factored: truncating at k = 4 is the whole update
    assert set(out.results.modules["method"]) == {"factored"}
    at4 = out.functional[out.functional["k"] == 4].iloc[0]
    assert at4["edit_loss"] == pytest.approx(metrics["final"]["edit_loss"], rel=1e-4)
    # an independent evaluation at k = 1: base + the numpy rank-1 truncation of each adapter update
    base = load_base(metrics["base"])
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    from safetensors.numpy import load_file

    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    params = dict(base.model.named_parameters())
    scale = adapter["lora_alpha"] / adapter["r"]
    with torch.no_grad():
        for key in [k for k in tensors if k.endswith("lora_A.weight")]:
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            dw = (
                scale
                * tensors[key.replace("lora_A", "lora_B")].astype(np.float64)
                @ tensors[key].astype(np.float64)
            )
            u, s, vt = np.linalg.svd(dw)
            params[f"{name}.weight"].add_(torch.tensor(s[0] * np.outer(u[:, 0], vt[0]), dtype=torch.float32))
    task = load_task(metrics["task"]["spec"], base, metrics["loop"]["seed"])
    sets = {n: encode(ex, base.tokenizer, base.max_length)[0] for n, ex in task.evals.items()}
    want = evaluate(base.model, sets, 64, torch.device("cpu"))
    at1 = out.functional[out.functional["k"] == 1].iloc[0]
    assert at1["edit_loss"] == pytest.approx(want["edit_loss"], rel=1e-4)
    assert at1["retain_other_acc"] == pytest.approx(want["retain_other_acc"])


def test_train_sweep_table_knees_and_full_reference(train_sweep, tmp_path):
    out = run_sweep([train_sweep], tmp_path / "out")
    index = pd.read_csv(train_sweep / "index.csv")
    assert out.ranks == [1, 2, 4]  # the trained ranks
    assert out.info["trainer_run"].endswith("full")  # "what LoRA would have matched the full fine-tune?"
    assert set(out.results.modules["method"]) == {"exact"}  # dense full-diff spectra
    training = pd.read_csv(tmp_path / "out" / "training.csv")
    assert list(training["rank"].iloc[:3]) == [1, 2, 4] and training["method"].iloc[3] == "full"
    assert (
        training["trainable_parameters"].iloc[3]
        == index.loc[index["method"] == "full", "trainable_parameters"].iat[0]
    )
    k = pd.read_csv(tmp_path / "out" / "training_knees.csv")
    assert {"edit_loss", "eval_loss", "edit_acc"} <= set(k["metric"]) and "full_value" in k.columns
    full = out.functional.set_index("point").loc["full"]
    metrics = json.loads((train_sweep / "full" / "metrics.json").read_text())
    assert full["edit_loss"] == pytest.approx(metrics["final"]["edit_loss"], rel=1e-4)  # 1-D updates included


def test_knee_is_the_point_farthest_above_the_chord():
    r = np.array([1, 2, 4, 8, 16, 32])
    acc = np.array([0.2, 0.7, 0.9, 0.95, 0.97, 0.98])  # saturating: the bend is at r = 4
    got = knee(r, acc, lower_better=False)
    x = (np.log2(r) - 0) / 5
    y = (acc - acc[0]) / (acc[-1] - acc[0])
    assert got["rank"] == int(r[np.argmax(y - x)]) == 4
    assert knee(r, 3 - acc, lower_better=True)["rank"] == 4  # the same curve as a loss
    assert knee(r, np.log2(r), lower_better=False)["rank"] is None  # a straight line on log r has no knee
    assert knee(r[:2], acc[:2], lower_better=False)["rank"] is None
    table = training_table(
        pd.DataFrame(
            {
                "run": ["a", "b", "c", "d", "f"],
                "method": ["lora"] * 4 + ["full"],
                "rank": [8, 1, 2, 4, None],
                "targets": ["attn"] * 4 + [None],
                "edit_acc": [0.95, 0.2, 0.7, 0.9, 1.0],
            }
        )
    )
    assert table["run"].tolist() == ["b", "c", "d", "a", "f"]
    row = knees(table).iloc[0]
    assert row["knee_rank"] == 2 and row["full_value"] == 1.0
