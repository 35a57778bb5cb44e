"""lorascope/checkpoint/alphas.py: the scale a single file declares — .alpha tensors, diffusers' LoraConfig
header, kohya's ss_network_alpha — each checked finite and positive."""

import json

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.alphas import DeclaredScales, tensor_alpha
from lorascope.checkpoint.base import TensorRef
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.errors import LorascopeError


def store(tmp_path, tensors, metadata=None):
    return SafetensorsFile(save_st(tmp_path / "a.safetensors", tensors, metadata))


def test_alpha_tensors_and_the_zero_that_means_r(tmp_path):
    s = store(
        tmp_path,
        {
            "x.alpha": torch.tensor(4.0),
            "y.alpha": torch.tensor(0.0),
            "z.alpha": torch.tensor(-1.0),
            "w.alpha": torch.ones(2),
        },
    )
    assert tensor_alpha(TensorRef(s, "x.alpha"), 8) == 4.0
    assert tensor_alpha(TensorRef(s, "y.alpha"), 8) == 8.0  # kohya and LyCORIS read 0 as alpha = r
    with pytest.raises(
        LorascopeError, match=r"z\.alpha: alpha must be a positive number.*finite and positive"
    ):
        tensor_alpha(TensorRef(s, "z.alpha"), 8)
    with pytest.raises(LorascopeError, match="holds 2 values"):
        tensor_alpha(TensorRef(s, "w.alpha"), 8)


def test_header_configs_per_component_and_network_alpha(tmp_path):
    header = {
        "unet.r": 4,
        "unet.lora_alpha": 8,
        "text_encoder.r": 2,
        "text_encoder.lora_alpha": 2,
        "unet.rank_pattern": {"attn1": 8},
    }
    s = store(
        tmp_path,
        {"w": torch.ones(1)},
        {"lora_adapter_metadata": json.dumps(header), "ss_network_alpha": "16"},
    )
    declared = DeclaredScales(s)
    assert declared.from_header("unet.down.attn2") == (4, 8.0, 2.0)
    assert declared.from_header("unet.down.attn1") == (8, 8.0, 1.0)  # rank_pattern, PEFT's rule
    assert declared.from_header("text_encoder.q") == (2, 2.0, 1.0) and declared.from_header("vae.x") is None
    assert declared.network_alpha == 16.0


@pytest.mark.parametrize(
    "header, message",
    [
        ({"r": 0, "lora_alpha": 4}, "'r' must be a positive integer"),
        ({"r": 4, "lora_alpha": float("inf")}, "not valid JSON|'lora_alpha' must be a positive number"),
        ({"r": 4, "lora_alpha": 4, "rank_pattern": {"q": -2}}, "'rank_pattern' entry 'q'"),
    ],
)
def test_unusable_headers_are_refused_naming_the_key(tmp_path, header, message):
    s = store(tmp_path, {"w": torch.ones(1)}, {"lora_adapter_metadata": json.dumps(header)})
    with pytest.raises(LorascopeError, match=message):
        DeclaredScales(s)
