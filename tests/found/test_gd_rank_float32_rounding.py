"""README: "a full diff whose update is exactly rank 8 gets gd_rank 8 whether its checkpoints are stored in
float32, bfloat16 or float16 … and `select --noise --export` exports rank 8 rather than the rounding tail."
With weights at the usual LLM scale (std 0.02) and an exactly rank-3 update, both stored in float32, the float32
rounding of W + ΔW sits ~1e-8 of σ1 — far above sigma_floor (~2e-14) — and is not white (its size follows the
entries of ΔW), so the Gavish–Donoho threshold counts some of it: gd_rank 4 instead of 3 (seeds 0, 1, 3 here;
up to 10 on a tiny Llama whose every projection got a rank-3 update), and `select --noise --export` exports
those rounding directions. numerical_rank gives 3 on the same spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from found._util import cli
from safetensors.torch import save_file

KEY = "model.layers.0.self_attn.q_proj.weight"


def _pair(tmp_path, seed):
    g = np.random.default_rng(seed)
    w = g.standard_normal((64, 64)) * 0.02
    u, _ = np.linalg.qr(g.standard_normal((64, 3)))
    v, _ = np.linalg.qr(g.standard_normal((64, 3)))
    dw = u @ np.diag([1.5, 1.2, 1.0]) @ v.T  # exactly rank 3
    save_file({KEY: torch.tensor(w, dtype=torch.float32)}, tmp_path / "base.safetensors")
    save_file({KEY: torch.tensor(w + dw, dtype=torch.float32)}, tmp_path / "tuned.safetensors")
    return tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_planted_rank_3_in_float32_gets_gd_rank_3(tmp_path, seed):
    import lorascope

    b, t = _pair(tmp_path, seed)
    row = lorascope.analyze(str(b), str(t)).modules.iloc[0]
    assert row["numerical_rank"] == 3
    assert row["gd_rank"] == 3, row[["gd_rank", "numerical_rank", "sigma_floor"]]


def test_select_noise_exports_the_planted_rank(tmp_path):
    b, t = _pair(tmp_path, 0)
    p = cli("select", b, t, "--noise", "--no-report", "--out", tmp_path / "sel", "--export", tmp_path / "exp")
    assert p.returncode == 0, p.stderr
    config = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert config["r"] == 3
