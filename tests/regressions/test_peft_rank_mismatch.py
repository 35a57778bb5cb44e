"""adapter_config.json says r = 8 (or rank_pattern q_proj: 2) but the stored lora_A / lora_B have rank 4. PEFT
refuses to load such an adapter (size mismatch for lora_A), so there is no scale "as PEFT does"; lorascope
nevertheless analyzes it with exit code 0, scale α/8 (half of α/4), lora_rank 8 in modules.csv, and a
summary.json warning saying "scale uses r=8 as PEFT does". The file is inconsistent: the scale it implies is
ambiguous, which the project promises to refuse (exit 2 naming the key) rather than show with confidence."""

from __future__ import annotations

import json

import pytest
import torch
from regressions._util import cli
from safetensors.torch import save_file


@pytest.mark.parametrize("config", [{"r": 8}, {"r": 4, "rank_pattern": {"q_proj": 2}}])
def test_config_rank_that_does_not_match_the_factors_is_refused(tmp_path, config):
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "adapter"
    folder.mkdir()
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{key}.lora_A.weight": torch.randn(4, 64, generator=g),
            f"{key}.lora_B.weight": torch.randn(64, 4, generator=g),
        },
        folder / "adapter_model.safetensors",
    )
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "lora_alpha": 8, "target_modules": ["q_proj"], **config})
    )
    p = cli("spectrum", folder, "--no-report", "--out", tmp_path / "res")
    assert p.returncode == 2, p.stderr
