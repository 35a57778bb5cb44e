"""lorascope/cli/rank.py: ``lorascope sweep`` and ``select`` parse counts and rank lists, and write
folders."""

import click
import pytest
import torch
from builders import peft_folder
from click.testing import CliRunner

from lorascope.cli import main
from lorascope.cli.rank import parse_count, parse_ranks

Q = "model.layers.0.self_attn.q_proj"


def test_budgets_and_rank_lists():
    assert parse_count("40k") == 40_000 and parse_ranks("1,4,2-3") == [1, 2, 3, 4]
    with pytest.raises(click.BadParameter, match="--budget"):
        parse_count("lots")
    with pytest.raises(click.BadParameter):
        parse_ranks("0")


def test_sweep_and_select_from_the_command_line(tmp_path):
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
        main, ["sweep", str(ad), "--out", str(tmp_path / "sw"), "-q", "--no-report", "--ranks", "1,2,4"]
    )
    assert res.exit_code == 0, res.output and (tmp_path / "sw" / "sweep.csv").is_file()
    res = CliRunner().invoke(
        main,
        [
            "select",
            str(tmp_path / "sw"),
            "--budget",
            "56",
            "--out",
            str(tmp_path / "sel"),
            "-q",
            "--no-report",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sel" / "selection.csv").read_text().count("\n") == 2  # a header and the one module
