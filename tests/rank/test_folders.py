"""lorascope/rank/folders.py: ``run_sweep`` and ``run_select`` write folders the report and later commands
read."""

import json

import torch
from builders import peft_folder

from lorascope.rank.files import SELECTION_CSV, SELECTION_JSON, SWEEP_CSV, SWEEP_JSON, UNIFORM_CSV
from lorascope.rank.folders import run_select, run_sweep
from lorascope.rank.select import Policy
from lorascope.results import is_results_folder

Q = "model.layers.{}.self_attn.q_proj"


def test_sweep_then_select_from_its_folder(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for i in range(2):
        tensors[f"{Q.format(i)}.lora_A.weight"] = torch.randn(4, 12, generator=g)
        tensors[f"{Q.format(i)}.lora_B.weight"] = torch.randn(10, 4, generator=g)
    ad = peft_folder(tmp_path / "ad", tensors, {"r": 4, "lora_alpha": 4})
    sweep = run_sweep([ad], tmp_path / "sweep", ranks=[1, 2, 4])
    out = sweep.path
    assert out == tmp_path / "sweep" and sweep.ranks == [1, 2, 4] and list(sweep.uniform["k"]) == [1, 2, 4]
    assert is_results_folder(out) and (out / SWEEP_CSV).is_file() and (out / UNIFORM_CSV).is_file()
    assert json.loads((out / SWEEP_JSON).read_text())["ranks"] == [1, 2, 4]
    run_select([out], tmp_path / "select", Policy("energy", energy=0.9))
    chosen = json.loads((tmp_path / "select" / SELECTION_JSON).read_text())
    assert chosen["policy"]["name"] == "energy" and (tmp_path / "select" / SELECTION_CSV).is_file()
