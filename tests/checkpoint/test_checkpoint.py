"""lorascope/checkpoint/__init__.py: formats detected from content, forced formats, and the summary entry."""

import hashlib

import pytest
import torch
from builders import peft_folder, save_st

from lorascope.checkpoint import FORMATS, Adapter, Weights, describe_input, open_checkpoint, open_store
from lorascope.errors import LorascopeError

NAME = "model.layers.0.self_attn.q_proj"


def test_content_decides_the_format_not_the_file_name(tmp_path):
    path = save_st(tmp_path / "weights.bin", {f"{NAME}.weight": torch.ones(4, 4)})  # safetensors named .bin
    ckpt = open_checkpoint(path)
    assert isinstance(ckpt, Weights) and ckpt.store.format == "safetensors"
    torch.save(
        {f"{NAME}.weight": torch.ones(2, 2)}, tmp_path / "w.safetensors"
    )  # a pickle named .safetensors
    assert open_checkpoint(tmp_path / "w.safetensors").store.format == "torch"
    with pytest.raises(LorascopeError, match="was given as torch but its content is safetensors"):
        open_checkpoint(path, "torch")
    with pytest.raises(LorascopeError, match="unknown format 'onnx'"):
        open_checkpoint(path, "onnx")
    assert {"auto", "safetensors", "torch", "peft", "gguf", "kohya"} <= set(FORMATS)


def test_a_folder_reads_its_config_and_weights(tmp_path):
    folder = tmp_path / "model"
    save_st(folder / "model.safetensors", {f"{NAME}.weight": torch.ones(4, 4)})
    (folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 1}')
    ckpt = open_checkpoint(folder)
    assert ckpt.format == "hf" and ckpt.config["model_type"] == "llama"
    assert open_store(folder).keys() == [f"{NAME}.weight"]
    (folder / "config.json").write_text('{"num_hidden_layers": 1e12}')
    with pytest.raises(LorascopeError, match="num_hidden_layers"):
        open_checkpoint(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LorascopeError, match="folder without weights"):
        open_store(tmp_path / "empty")


def test_describe_input_hashes_small_files_and_names_the_adapter(tmp_path):
    ad = peft_folder(
        tmp_path / "ad",
        {f"{NAME}.lora_A.weight": torch.ones(2, 4), f"{NAME}.lora_B.weight": torch.ones(4, 2)},
        {"r": 2, "lora_alpha": 4},
    )
    ckpt = open_checkpoint(ad)
    assert isinstance(ckpt, Adapter)
    entry = describe_input("adapter", ckpt)
    weights = ad / "adapter_model.safetensors"
    assert entry["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and entry["modules"] == 1
    assert entry["config"]["r"] == 2 and entry["bytes"] == weights.stat().st_size
    assert describe_input("adapter", ckpt, hash_limit=1)["sha256"] is None  # too large to hash: size only
