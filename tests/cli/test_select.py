"""lorascope/cli/select.py: ``lorascope select`` by energy, with an exported adapter that loads back."""

import torch
from builders import peft_folder
from click.testing import CliRunner

from lorascope.checkpoint import open_checkpoint
from lorascope.cli import main

Q = "model.layers.0.self_attn.q_proj"


def test_select_by_energy_and_export(tmp_path):
    g = torch.Generator().manual_seed(1)
    ad = peft_folder(
        tmp_path / "ad",
        {
            f"{Q}.lora_A.weight": torch.randn(4, 16, generator=g),
            f"{Q}.lora_B.weight": torch.randn(12, 4, generator=g),
        },
        {"r": 4, "lora_alpha": 4},
    )
    res = CliRunner().invoke(
        main,
        [
            "select",
            str(ad),
            "--energy",
            "0.999999",
            "--out",
            str(tmp_path / "sel"),
            "--export",
            str(tmp_path / "ex"),
            "--no-report",
        ],
    )
    assert res.exit_code == 0, res.output
    (m,) = open_checkpoint(tmp_path / "ex").modules
    assert m.name == Q and m.rank == 4 and m.scale == 1.0  # every direction kept, at scale 1
