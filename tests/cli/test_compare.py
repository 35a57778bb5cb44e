"""lorascope/cli/compare.py: one option vocabulary (--intruder-k, --svd) and the old spellings that still
work."""

import json

import pandas as pd
import pytest
import torch
from builders import peft_folder, save_st
from click.testing import CliRunner

from lorascope.cli import main

NAME = "model.layers.0.self_attn.q_proj"


@pytest.fixture
def inputs(tmp_path):
    g = torch.Generator().manual_seed(3)
    base = save_st(
        tmp_path / "base" / "model.safetensors", {f"{NAME}.weight": torch.randn(24, 20, generator=g)}
    )
    adapter = peft_folder(
        tmp_path / "lora",
        {
            f"{NAME}.lora_A.weight": torch.randn(4, 20, generator=g),
            f"{NAME}.lora_B.weight": torch.randn(24, 4, generator=g),
        },
        {"r": 4, "lora_alpha": 8},
    )
    return base, adapter


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def options_used(out):
    return json.loads((out / "compare_summary.json").read_text())["options"]


def test_intruder_k_and_svd_reach_the_options(inputs, tmp_path):
    base, adapter = inputs
    out = tmp_path / "new"
    res = run(
        "intruders",
        base,
        adapter,
        "--intruder-k",
        3,
        "--svd",
        "randomized",
        "--out",
        out,
        "-q",
        "--no-report",
    )
    assert res.exit_code == 0, res.output
    assert (
        options_used(out)["intruders"]["intruder_k"] == 3
        and options_used(out)["intruders"]["svd"] == "randomized"
    )
    assert set(pd.read_csv(out / "intruders.csv")["j"]) == {1, 2, 3}
    assert "intruder_k" in pd.read_csv(out / "intruder_modules.csv").columns


@pytest.mark.parametrize(
    "old, new, value, key",
    [
        ("--top-k", "--intruder-k", 2, "intruder_k"),
        ("--tuned-svd", "--svd", "randomized", "svd"),
    ],
)
def test_old_spellings_still_work_and_say_so(inputs, tmp_path, old, new, value, key):
    base, adapter = inputs
    out = tmp_path / "old"
    res = run("intruders", base, adapter, old, value, "--out", out, "-q", "--no-report")
    assert res.exit_code == 0, res.output
    assert f"{old} is now {new}" in res.output
    assert options_used(out)["intruders"][key] == value


def test_old_and_new_spelling_together_are_refused(inputs, tmp_path):
    base, adapter = inputs
    res = run("intruders", base, adapter, "--top-k", 2, "--intruder-k", 3, "--out", tmp_path / "both", "-q")
    assert res.exit_code == 2 and "--intruder-k only" in res.output


def test_the_old_spellings_are_hidden_from_help():
    res = run("compare", "--help")
    assert res.exit_code == 0
    assert "--intruder-k" in res.output and "--svd" in res.output
    assert "--top-k" not in res.output.replace("Was --top-k", "") and "--tuned-svd " not in res.output
