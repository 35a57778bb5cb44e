"""gd_rank of an exactly rank-3 full diff stored in float32, at the scale of fine-tuning (weights of std 0.02,
an update small against them): the rounding of W_tuned follows W and is white, so gd_rank and numerical_rank
are both 3, and `select --noise --export` exports r = 3. (An update ten times the size of its weights rounds
along its own entries and can add a direction to gd_rank: README, "Numbers you can rely on".)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from regressions._util import cli
from safetensors.torch import save_file

KEY = "model.layers.0.self_attn.q_proj.weight"


def _pair(tmp_path, seed, scale=0.05):
    g = np.random.default_rng(seed)
    w = g.standard_normal((64, 64)) * 0.02
    u, _ = np.linalg.qr(g.standard_normal((64, 3)))
    v, _ = np.linalg.qr(g.standard_normal((64, 3)))
    dw = u @ np.diag(np.array([1.5, 1.2, 1.0]) * scale) @ v.T  # exactly rank 3
    save_file({KEY: torch.tensor(w, dtype=torch.float32)}, tmp_path / "base.safetensors")
    save_file({KEY: torch.tensor(w + dw, dtype=torch.float32)}, tmp_path / "tuned.safetensors")
    return tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"


@pytest.mark.parametrize("seed", range(4))
def test_planted_rank_3_in_float32_gets_gd_rank_3(tmp_path, seed):
    import lorascope

    b, t = _pair(tmp_path, seed)
    row = lorascope.analyze(str(b), str(t)).modules.iloc[0]
    assert (row["numerical_rank"], row["gd_rank"]) == (3, 3), row[
        ["gd_rank", "numerical_rank", "sigma_floor"]
    ]


def test_an_update_larger_than_its_weights_keeps_numerical_rank(tmp_path):
    import lorascope

    b, t = _pair(tmp_path, 0, scale=1.0)
    row = lorascope.analyze(str(b), str(t)).modules.iloc[0]
    assert row["numerical_rank"] == 3 and row["gd_rank"] in (3, 4)  # the documented limit of gd_rank


def test_select_noise_exports_the_planted_rank(tmp_path):
    b, t = _pair(tmp_path, 0)
    p = cli("select", b, t, "--noise", "--no-report", "--out", tmp_path / "sel", "--export", tmp_path / "exp")
    assert p.returncode == 0, p.stderr
    config = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert config["r"] == 3
