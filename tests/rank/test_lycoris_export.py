"""LyCORIS files exported to PEFT LoRA with their base: PEFT loads the adapter, and each module's ΔW as PEFT
computes it (``get_delta_weight``) is the rank-k truncation of the ΔW LyCORIS's forward applies —
‖ΔW − ΔW_PEFT‖_F / ‖ΔW‖_F = sqrt(1 − energy(k)) within 1e-5, energy from an independent float64 SVD."""

import logging

import numpy as np
import pytest
import torch
from refs import ref_sigma
from safetensors.torch import load_file

from lorascope.rank import Policy, run_select

peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")
lycoris_nets = pytest.importorskip(
    "checkpoint.lycoris_nets", reason="needs the lycoris-lora package (test extra)"
)

pytestmark = pytest.mark.hf
logging.getLogger("LyCORIS").setLevel(logging.ERROR)


@pytest.mark.parametrize(
    "config", ["locon-tucker", "loha-tucker", "lokr-both", "full", "ia3-in", "dora-in", "dokr-out"]
)
def test_lycoris_export_loads_in_peft_and_is_the_truncated_update(tmp_path, config):
    algo, options, _, _ = lycoris_nets.CONFIGS[config]
    _, net, path, base = lycoris_nets.build(tmp_path / "src", algo, **dict(options))
    refs = lycoris_nets.references(net)
    out = run_select([base, path], tmp_path / "sel", Policy("energy", energy=0.9), export=tmp_path / "peft")
    ranks = {n: r for n, r in out.selection.ranks().items() if r}
    assert set(out.selection.ranks()) == set(refs) and ranks

    model = lycoris_nets.Tiny()
    model.load_state_dict(load_file(str(base)))
    loaded = peft.PeftModel.from_pretrained(model, str(tmp_path / "peft")).double()
    layers = {
        name.removeprefix("base_model.model."): m
        for name, m in loaded.named_modules()
        if isinstance(getattr(m, "r", None), dict) and "default" in m.r
    }
    assert {n: layers[n].r["default"] for n in ranks} == ranks
    for name, k in ranks.items():
        dw = refs[name]
        with torch.no_grad():
            got = layers[name].get_delta_weight("default").reshape(dw.shape[0], -1).numpy()
        s = ref_sigma(dw)
        predicted = np.sqrt(max(0.0, 1.0 - np.sum(s[:k] ** 2) / np.sum(s**2)))
        achieved = np.linalg.norm(dw - got) / np.linalg.norm(dw)
        assert abs(achieved - predicted) <= 1e-5, (name, k, achieved, predicted)
