"""A kohya file whose lora_down / lora_up have rank 0 (shapes (0, in) and (out, 0)) ends with exit code 1,
"unexpected ZeroDivisionError: float division by zero". A rank of 0 is bad input: exit code 2 naming the key,
as the README promises for `r` 0 in PEFT configs."""

from __future__ import annotations

import torch
from regressions._util import cli
from safetensors.torch import save_file

STEM = "lora_unet_down_blocks_0_attentions_0_proj_in"


def test_rank_zero_factors_are_bad_input(tmp_path):
    path = tmp_path / "r0.safetensors"
    save_file(
        {
            f"{STEM}.lora_down.weight": torch.zeros(0, 24),
            f"{STEM}.lora_up.weight": torch.zeros(32, 0),
            f"{STEM}.alpha": torch.tensor(1.0),
        },
        path,
    )
    p = cli("spectrum", path, "--no-report", "--out", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert "unexpected" not in p.stderr
    assert STEM in p.stderr
