"""lorascope/cli/sweep.py: ``lorascope sweep`` on an adapter writes its tables and prints the uniform
sweep."""

import pandas as pd
import torch
from builders import peft_folder
from click.testing import CliRunner

from lorascope.cli import main

Q = "model.layers.0.self_attn.q_proj"


def test_sweep_prints_and_writes_the_grid(tmp_path):
    g = torch.Generator().manual_seed(0)
    ad = peft_folder(
        tmp_path / "ad",
        {
            f"{Q}.lora_A.weight": torch.randn(4, 16, generator=g),
            f"{Q}.lora_B.weight": torch.randn(12, 4, generator=g),
        },
        {"r": 4, "lora_alpha": 4},
    )
    res = CliRunner().invoke(
        main, ["sweep", str(ad), "--out", str(tmp_path / "sw"), "--no-report", "--ranks", "1,4"]
    )
    assert res.exit_code == 0, res.output
    uniform = pd.read_csv(tmp_path / "sw" / "sweep_uniform.csv")
    assert (
        list(uniform["k"]) == [1, 4] and abs(uniform["energy"].iloc[-1] - 1.0) < 1e-12
    )  # all of a rank-4 ΔW
    assert "sweep written to" in res.output
