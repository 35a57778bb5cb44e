"""Tiny adapters made by PEFT itself, of every PEFT type, with the update PEFT applies as the reference.

``make_case`` wraps a tiny model with a PEFT config, randomizes every adapter tensor (PEFT initializes most
updates to zero), saves the base and the adapter, and returns ΔW_ref per module in float64: what PEFT's
merge adds to each weight (``merge_and_unload`` − base), or, where PEFT cannot merge (a grouped conv LoRA),
the update its forward applies. Needs the `hf` extra.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

import peft  # noqa: F401 - callers skip without the hf extra first
import transformers

PREFIX = "base_model.model."


def tiny_llama() -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2() -> nn.Module:
    """GPT-2 Conv1D layers stored (in, out): attn.c_attn 24→72, attn.c_proj 24→24 (square), mlp.c_fc 24→96."""
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=2)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


class ConvNet(nn.Module):
    """Every layer kind the PEFT tuners wrap besides the transformers ones."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 6, 3)
        self.conv1d = nn.Conv1d(4, 6, 3)
        self.grouped = nn.Conv2d(4, 6, 3, groups=2)
        self.point = nn.Conv2d(6, 8, 1)
        self.lin = nn.Linear(8, 10)
        self.emb = nn.Embedding(12, 8)
        self.wide = nn.Conv2d(16, 32, 3)  # wide enough for LoKr's Tucker and low-rank W2 (r < max(8, 4) / 2)
        self.wide1d = nn.Conv1d(16, 32, 3)


@dataclass
class Case:
    base: Path  # a model folder (transformers) or a safetensors file
    adapter: Path
    deltas: dict[str, np.ndarray]  # module name -> ΔW_ref as the weight is stored, float64
    model: nn.Module  # the PEFT model (float64), after the reference was taken
    merged: dict[str, torch.Tensor] | None = None  # PEFT's merged state dict (float64), where PEFT merges


def randomize(model: nn.Module, scale: float = 0.3, seed: int = 1, around_one: tuple[str, ...] = ()) -> None:
    """Random adapter tensors: N(0, scale²), or 1 + N(0, scale²) for the multiplicative ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale
            p.copy_(1 + noise if any(k in name for k in around_one) else noise)


def save_base(model: nn.Module, path: Path) -> Path:
    if isinstance(model, transformers.PreTrainedModel):
        model.save_pretrained(path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_case(
    tmp_path: Path,
    model: nn.Module,
    config,
    *,
    scale: float = 0.3,
    around_one: tuple[str, ...] = (),
    forward_deltas: dict[str, tuple[int, ...]] | None = None,
    name: str = "case",
) -> Case:
    """Base and PEFT adapter in ``tmp_path/name``; ΔW_ref from PEFT's merge (or its forward, where named).

    Args:
        forward_deltas: module name -> input shape (channels, *spatial) for modules whose update is measured
            through PEFT's forward (layer(x) − base_layer(x) on a basis of inputs that exactly cover one
            kernel position) instead of its merge.
    """
    folder = tmp_path / name
    model = model.float()
    base_sd = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    base = save_base(
        model, folder / ("base" if isinstance(model, transformers.PreTrainedModel) else "base.safetensors")
    )
    pm = peft.get_peft_model(model, config)
    randomize(pm, scale, around_one=around_one)
    pm.save_pretrained(folder / "adapter")
    pm = pm.double()
    deltas = {}
    for module, shape in (forward_deltas or {}).items():
        deltas[module] = forward_update(pm.base_model.model.get_submodule(module), shape)
    merged = copy.deepcopy(pm).merge_and_unload().state_dict() if not forward_deltas else None
    if merged is not None:
        for key, w in merged.items():
            if key in base_sd and w.shape == base_sd[key].shape and not torch.equal(w.double(), base_sd[key]):
                if key.endswith(".bias"):
                    continue
                deltas[key.removesuffix(".weight")] = (w.double() - base_sd[key]).numpy()
    return Case(base, folder / "adapter", deltas, pm, merged)


def forward_update(layer: nn.Module, shape: tuple[int, ...]) -> np.ndarray:
    """ΔW (out, in·k…) of a conv layer's adapter from its forward: inputs the size of one kernel, one-hot."""
    n = int(np.prod(shape))
    x = torch.eye(n, dtype=torch.float64).reshape(n, *shape)  # (n, C, k…): each input one-hot
    with torch.no_grad():
        y = layer(x) - layer.get_base_layer()(x)  # (n, out, 1…)
    return y.reshape(n, -1).T.numpy()  # (out, C·k…)


def matrices(name: str, dw: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(module name, ΔW as a matrix) of one reference: a fused expert parameter splits per expert, a conv
    kernel flattens to (out, in·k…)."""
    if dw.ndim == 3 and ".experts." in name + ".":
        return [(f"{name}.{e}", dw[e]) for e in range(dw.shape[0])]
    return [(name, dw.reshape(dw.shape[0], -1))]


def save_fused(model: nn.Module, folder: Path) -> Path:
    """A model folder whose weights are the in-memory state dict (fused experts kept fused), with config."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    model.config.to_json_file(str(folder / "config.json"))
    return folder
