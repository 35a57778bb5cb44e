"""`lorascope select ADAPTER --energy 0.9 --out X --export X` exits 0, prints "adapter written to X" and its
--json says written.adapter = X, but X holds only the selection tables: adapter_config.json and
adapter_model.safetensors are gone (the selection's transaction replaced the export's folder). Either both
land there or the run is refused with exit code 2.

With `--export X/adapter --out X` the export is written first and then the selection is refused (exit 2,
"--out X holds files which lorascope did not write"): a failed run that changed the disk."""

from __future__ import annotations

import json

import torch
from regressions._util import cli
from safetensors.torch import save_file


def _adapter(tmp_path):
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "adapter"
    folder.mkdir()
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{key}.lora_A.weight": torch.randn(4, 32, generator=g),
            f"{key}.lora_B.weight": torch.randn(32, 4, generator=g),
        },
        folder / "adapter_model.safetensors",
    )
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    return folder


def test_export_and_out_in_one_folder(tmp_path):
    out = tmp_path / "x"
    p = cli("select", _adapter(tmp_path), "--energy", "0.9", "--no-report", "--out", out, "--export", out)
    if p.returncode == 0:
        assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists(), (
            p.stderr
        )
        assert (out / "selection.csv").exists()
    else:
        assert p.returncode == 2, p.stderr


def test_export_inside_out_does_not_write_when_the_selection_is_refused(tmp_path):
    out = tmp_path / "x"
    p = cli(
        "select",
        _adapter(tmp_path),
        "--energy",
        "0.9",
        "--no-report",
        "--out",
        out,
        "--export",
        out / "adapter",
    )
    if p.returncode != 0:
        assert p.returncode == 2, p.stderr
        assert not (out / "adapter").exists(), "a refused run left an exported adapter behind"


def test_the_library_refuses_it_too_before_any_work(tmp_path):
    import pytest

    from lorascope.errors import LorascopeError
    from lorascope.rank.folders import run_select
    from lorascope.rank.select import Policy

    out = tmp_path / "x"
    with pytest.raises(LorascopeError, match="overlap"):
        run_select([_adapter(tmp_path)], out, Policy(name="energy", energy=0.9), export=out / "adapter")
    assert not out.exists()
