"""lorascope/checkpoint/peft_multiplicative.py: IA3, OFT and BOFT folders, read as the installed PEFT reads
them."""

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.peft_multiplicative import is_feedforward, open_boft, open_ia3, open_oft
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.errors import LorascopeError


def test_feedforward_modules_follow_peft_matching():
    assert is_feedforward({"feedforward_modules": ["down_proj"]}, "model.layers.0.mlp.down_proj")
    assert not is_feedforward({"feedforward_modules": ["down_proj"]}, "model.layers.0.mlp.up_proj")
    assert is_feedforward({"feedforward_modules": r".*\.mlp\..*"}, "model.layers.0.mlp.up_proj")


def test_ia3_axis_comes_from_the_config_and_must_fit_the_stored_shape(tmp_path):
    p = "base_model.model.model.layers.0"
    store = SafetensorsFile(
        save_st(
            tmp_path / "a.safetensors",
            {f"{p}.mlp.down_proj.ia3_l": torch.ones(1, 6), f"{p}.self_attn.k_proj.ia3_l": torch.ones(4, 1)},
        )
    )
    adapter = open_ia3(tmp_path, store, {"feedforward_modules": ["down_proj"]})
    axes = {m.name: m.params["axis"] for m in adapter.modules}
    assert axes == {"model.layers.0.mlp.down_proj": "in", "model.layers.0.self_attn.k_proj": "out"}
    with pytest.raises(LorascopeError, match="feedforward_modules"):
        open_ia3(tmp_path, store, {"feedforward_modules": []})


def test_oft_and_boft_modules_are_named_and_typed(tmp_path):
    pytest.importorskip("peft")
    p = "base_model.model.lin"
    oft = SafetensorsFile(save_st(tmp_path / "oft.safetensors", {f"{p}.oft_R.weight": torch.randn(2, 6)}))
    (m,) = open_oft(tmp_path, oft, {"r": 2, "oft_block_size": 4, "peft_version": "0.17.0"}).modules
    assert m.family == "oft" and m.name == "lin"
    boft = SafetensorsFile(
        save_st(
            tmp_path / "boft.safetensors",
            {f"{p}.boft_R": torch.randn(1, 2, 4, 4), f"{p}.boft_s": torch.ones(8, 1)},
        )
    )
    (b,) = open_boft(tmp_path, boft, {"boft_block_size": 4, "boft_n_butterfly_factor": 1}).modules
    assert b.family == "boft" and b.name == "lin"
