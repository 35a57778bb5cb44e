"""Shapes from checkpoint headers alone: a GPT-2-style and a Llama-style file written in tmp_path."""

import torch
from builders import save_st

from lorascope.audit.count import LoraSettings, count_lora
from lorascope.audit.headers import checkpoint_shapes
from lorascope.audit.sources import load_model
from lorascope.audit.targets import parse_targets


def test_llama_style_checkpoint(tmp_path):
    tensors = {"model.embed_tokens.weight": torch.zeros(10, 8), "lm_head.weight": torch.zeros(10, 8),
               "model.norm.weight": torch.zeros(8), "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(2)}
    for i in range(2):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.zeros(8, 8)
        tensors[f"model.layers.{i}.self_attn.k_proj.weight"] = torch.zeros(4, 8)
    path = save_st(tmp_path / "model.safetensors", tensors)
    model = load_model(path)
    assert model.shapes_from == "headers" and model.output_head == "lm_head" and model.hidden == 8
    assert model.total == 10 * 8 * 2 + 8 + 2 * (64 + 32)  # the rotary buffer is not a parameter
    assert model.by_name()["model.embed_tokens"].kind == "embedding"
    assert count_lora(model, LoraSettings(rank=2, targets=parse_targets("k_proj"))).trainable == 2 * 2 * (4 + 8)


def test_gpt2_conv1d_is_transposed_and_buffers_skipped():
    shapes = {"wte.weight": ((50, 8), True), "h.0.attn.c_attn.weight": ((8, 24), True),
              "h.0.attn.c_attn.bias": ((24,), True), "h.0.attn.bias": ((1, 1, 4, 4), True),
              "h.0.mlp.c_fc.weight": ((8, 32), True), "step": ((), False)}
    model = checkpoint_shapes(shapes)
    assert model.by_name()["h.0.attn.c_attn"].shape == (24, 8) and model.by_name()["h.0.attn.c_attn"].kind == "conv1d"
    assert model.total == 50 * 8 + 8 * 24 + 24 + 8 * 32
