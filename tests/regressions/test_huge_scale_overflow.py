"""A kohya LoRA whose alpha is finite but huge (1e38, within float32) gives singular values above float32's
range. `spectrum` exits 0 and its modules.csv holds finite numbers, but singular_values.safetensors is written
in float32 and holds inf; every later command on that results folder (`report`, `sweep`, `select`) then dies
with exit code 1 ("unexpected ValueError: Axis limits cannot be NaN or Inf", "unexpected TypeError:
unsupported format string passed to NoneType.__format__"). Either the spectrum is stored so that it
round-trips, or the input is refused up front (exit 2 naming the alpha); a saved results folder must not
crash the commands that read it."""

from __future__ import annotations

import numpy as np
import torch
from regressions._util import cli
from safetensors.numpy import load_file
from safetensors.torch import save_file

STEM = "lora_unet_down_blocks_0_attentions_0_proj_in"


def _file(tmp_path):
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "huge.safetensors"
    save_file(
        {
            f"{STEM}.lora_down.weight": torch.randn(4, 24, generator=g),
            f"{STEM}.lora_up.weight": torch.randn(32, 4, generator=g),
            f"{STEM}.alpha": torch.tensor(1e38),
        },
        path,
    )
    return path


def test_spectrum_never_saves_inf_for_finite_numbers(tmp_path):
    p = cli("spectrum", _file(tmp_path), "--no-report", "--out", tmp_path / "res")
    assert p.returncode in (0, 2), p.stderr
    if p.returncode == 0:
        sv = load_file(str(tmp_path / "res" / "singular_values.safetensors"))
        assert all(np.isfinite(v).all() for v in sv.values())


def test_commands_on_saved_results_do_not_crash(tmp_path):
    p = cli("spectrum", _file(tmp_path), "--no-report", "--out", tmp_path / "res")
    if p.returncode == 2:
        return  # refused up front: fine
    for args in (
        ("report", tmp_path / "res", "--out", tmp_path / "page.html"),
        ("sweep", tmp_path / "res", "--no-report", "--out", tmp_path / "sw"),
        ("select", tmp_path / "res", "--energy", "0.9", "--out", tmp_path / "sel"),
    ):
        q = cli(*args)
        assert q.returncode in (0, 2), (args[0], q.stderr)
        assert "unexpected" not in q.stderr


def test_peft_alpha_1e300_gives_finite_norms_or_is_refused(tmp_path):
    """lora_alpha = 1e300 (finite, positive, so accepted): σ1 ≈ 4e299 fits float64 and is reported, but
    fro_norm is written as inf and stable_rank / rank_90 / rank_95 / rank_99 are empty, with exit code 0 and
    no warning; the saved spectrum is all inf. ‖ΔW‖_F = s·‖BA‖_F is finite here (about 1e300)."""
    import json

    import pandas as pd

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
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 1e300, "target_modules": ["q_proj"]})
    )
    p = cli("spectrum", folder, "--no-report", "--out", tmp_path / "res")
    assert p.returncode in (0, 2), p.stderr
    if p.returncode == 0:
        row = pd.read_csv(tmp_path / "res" / "modules.csv").iloc[0]
        assert np.isfinite(row["fro_norm"]) and np.isfinite(row["stable_rank"]), row.to_dict()
        assert row["rank_90"] == row["rank_90"]  # not empty
