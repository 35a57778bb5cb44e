"""`lorascope train` and `train-sweep`: outputs, printed paths, and clean errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from cli.schema import document
from click.testing import CliRunner

from lorascope.cli import main

FAST = ["--steps", "6", "--batch-size", "8", "--eval-every", "3", "--rank-every", "3", "--device", "cpu"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_writes_a_run_and_says_where(tiny_base, tmp_path):
    res = run(
        "train",
        "--model",
        tiny_base,
        "--method",
        "dora",
        "--rank",
        "2",
        "--targets",
        "q_proj+v_proj",
        "--task",
        "edit:3",
        *FAST,
        "--out",
        tmp_path / "r",
    )
    assert res.exit_code == 0, res.output
    assert f"run written to {tmp_path / 'r'}" in res.output
    assert "dora-r2-q_proj+v_proj" in res.output and "edit_acc" in res.output  # the summary table
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").is_file()


def test_train_json_and_the_run_folder_as_input(tiny_base, tmp_path):
    """`train --json`, then the run folder given where commands take an update: its adapter on its base."""
    res = run(
        "train",
        "--model",
        tiny_base,
        "--rank",
        "2",
        "--targets",
        "attn",
        "--task",
        "edit:3",
        *FAST,
        "--out",
        tmp_path / "r",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = document(res.stdout, "train")
    assert doc["written"] == {"run": str(tmp_path / "r"), "metrics": str(tmp_path / "r" / "metrics.json")}
    assert doc["run"]["run"] == "lora-r2-attn" and doc["run"]["trainable_parameters"] > 0
    res = run("spectrum", tmp_path / "r", "--out", tmp_path / "s", "--no-report", "--json")
    doc = document(res.stdout, "spectrum")
    assert [i["path"] for i in doc["inputs"]] == [str(tiny_base), str(tmp_path / "r" / "adapter")]
    assert doc["kind"] == "adapter+base" and doc["modules"] == 2 * 4  # 2 blocks × q, k, v, o
    res = run("select", tmp_path / "r", "--energy", "0.9", "--out", tmp_path / "sel", "--no-report", "-q")
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "sel" / "selection.csv")) == 8
    res = run("train", "--model", tmp_path / "r", *FAST, "--out", tmp_path / "r2", "-q")
    assert res.exit_code == 2 and "not a model folder" in res.output and f"{tmp_path / 'r'}" in res.output


def test_train_default_out_folder(tiny_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("train", "--model", tiny_base, "--method", "freeze", "--task", "edit:2", *FAST, "-q")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "freeze-b1" / "metrics.json").is_file()
    assert res.output.strip() == "run written to runs/freeze-b1"


def test_train_sweep(tiny_base, tmp_path):
    res = run(
        "train-sweep",
        "--model",
        tiny_base,
        "--methods",
        "lora,full",
        "--ranks",
        "1,2",
        "--targets",
        "v_proj,attn",
        "--task",
        "edit:3",
        *FAST,
        "-q",
        "--out",
        tmp_path / "sw",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = document(res.stdout, "train-sweep")
    table = pd.read_csv(tmp_path / "sw" / "index.csv")
    assert [r["run"] for r in doc["runs"]] == table["run"].tolist()
    assert table["run"].tolist() == [
        "lora-r1-v_proj",
        "lora-r2-v_proj",
        "lora-r1-attn",
        "lora-r2-attn",
        "full",
    ]
    assert (
        table.set_index("run").loc["full", "lr"] == 1e-4
        and table.set_index("run").loc["lora-r1-attn", "lr"] == 1e-3
    )
    assert f"index written to {tmp_path / 'sw' / 'index.csv'}" in res.stderr
    assert not (tmp_path / "sw" / "base").exists()  # a --model folder is referenced, not copied


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--targets", "qkv"], "match no linear module"),
        (["train", "--targets", "re:(("], "not a valid regular expression"),
        (["train", "--task", "missing.jsonl"], "does not exist"),
        (["train", "--task", "edit:999"], "1 ≤ K"),
        (["train", "--alpha", "-2"], "alpha must be positive"),
        (["train-sweep", "--ranks", "1,x"], "comma-separated list"),
        (["train-sweep", "--ranks", "0,2"], "positive integer"),
        (["train-sweep", "--methods", "lora,adapterx"], "unknown method"),
    ],
)
def test_bad_input_is_one_clear_error(tiny_base, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    res = run(*args, "--model", tiny_base, *FAST, "-q", "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert match in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing left behind to block the same --out next time


@pytest.mark.parametrize("args", [["train", "--method", "prefix"], ["train", "--rank", "0"]])
def test_click_rejects_bad_choices(args):
    res = run(*args)
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_commands_are_listed_and_lazy():
    res = run("--help")
    assert all(name in res.output for name in ("train", "train-sweep", "demo"))
    code = "import sys, lorascope.cli.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
