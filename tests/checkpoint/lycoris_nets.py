"""Tiny LyCORIS networks built with the lycoris-lora package itself, saved its own way, and each module's
ΔW as LyCORIS's own forward applies it — the independent reference the reader is checked against.

The reference is taken from the module's weight-rebuild forward (``bypass_mode=False``): the ΔW it passes to
the layer's op (``F.linear`` / ``F.conv2d``), captured in float64, so DoRA's decomposition and IA3's
increment are LyCORIS's own. ``get_diff_weight`` is not used for LoHa and LoKr: in lycoris-lora 4.1 it
multiplies the scale in twice (``get_weight`` already applies it), so its merge path differs from its forward
whenever α ≠ r.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import pytest

lycoris = pytest.importorskip("lycoris", reason="needs the lycoris-lora package (test extra)")
from lycoris import LycorisNetwork, create_lycoris  # noqa: E402
from lycoris.modules.full import FullModule  # noqa: E402


# name -> (algo, create_lycoris options, lorascope family, scale of blocks.0.q)
CONFIGS = {
    "locon": ("lora", {}, "lora", 0.5),
    "locon-tucker": ("lora", {"use_tucker": True}, "lora", 0.5),
    "loha": ("loha", {}, "loha", 0.5),
    "loha-tucker": ("loha", {"use_tucker": True}, "loha", 0.5),
    "lokr": ("lokr", {}, "lokr", 0.5),  # W1 full, W2 low-rank (linear); both full on the convs: s = 1
    "lokr-both": (
        "lokr",
        {"decompose_both": True, "factor": 8, "linear_dim": 2, "conv_dim": 2, "linear_alpha": 1},
        "lokr",
        0.5,
    ),
    "lokr-tucker": (
        "lokr",
        {"use_tucker": True, "linear_dim": 2, "conv_dim": 2, "factor": 4, "linear_alpha": 1},
        "lokr",
        0.5,
    ),
    "lokr-full": ("lokr", {"full_matrix": True}, "lokr", 1.0),  # α is stored, LyCORIS applies s = 1
    "full": ("full", {}, "full", 1.0),
    "ia3-out": ("ia3", {}, "ia3", 1.0),
    "ia3-in": ("ia3", {"direct": True, "train_on_input": True}, "ia3", 1.0),
    "dora-out": ("lora", {"dora_wd": True}, "dora", 0.5),
    "dora-in": ("lora", {"dora_wd": True, "wd_on_output": False}, "dora", 0.5),
    "doha-in": ("loha", {"dora_wd": True, "wd_on_output": False}, "dora", 0.5),
    "dokr-out": ("lokr", {"dora_wd": True}, "dora", 0.5),
}


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(64, 96)  # LoKr factorizes 96 = 8·12, 64 = 8·8: a low-rank W2 at r = 4
        self.conv = nn.Conv2d(16, 24, 3, padding=1)  # a 3×3 conv: Tucker cores where asked for
        self.point = nn.Conv2d(24, 16, 1)  # a 1×1 conv


class Tiny(nn.Module):
    """Two blocks: module names carry a layer index (blocks.0.q), as real models' do."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])


@contextlib.contextmanager
def prefix(name: str):
    """LyCORIS's key prefix for networks made inside (its preset ``lora_prefix``; 'lycoris' by default)."""
    before = LycorisNetwork.LORA_PREFIX
    LycorisNetwork.LORA_PREFIX = name
    try:
        yield
    finally:
        LycorisNetwork.LORA_PREFIX = before


def build(
    folder: Path, algo: str, seed: int = 0, key_prefix: str = "lycoris", net_seed: int | None = None, **kwargs
):
    """A random Tiny base (from ``seed``) saved as ``base.safetensors`` and a randomized LyCORIS network on it
    (from ``net_seed``) saved with its own ``save_weights`` as ``<algo>.safetensors``; returns (model,
    network, adapter path, base path)."""
    torch.manual_seed(seed)
    model = Tiny()
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(base))
    direct = kwargs.pop("direct", False)
    with prefix(key_prefix):
        if direct:  # options create_lycoris does not pass on (IA3's train_on_input)
            net = LycorisNetwork(
                model,
                network_module=algo,
                lora_dim=kwargs.pop("linear_dim", 4),
                conv_lora_dim=kwargs.pop("conv_dim", 4),
                **kwargs,
            )
        else:
            net = create_lycoris(
                model,
                1.0,
                linear_dim=kwargs.pop("linear_dim", 4),
                linear_alpha=kwargs.pop("linear_alpha", 2),
                algo=algo,
                **kwargs,
            )
    net.apply_to()
    gen = torch.Generator().manual_seed(seed + 1 if net_seed is None else net_seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(noise.abs() + 0.5 if "dora_scale" in name else noise)  # magnitudes positive
    path = folder / f"{algo}.safetensors"
    net.save_weights(str(path), torch.float32, None)
    return model, net, path, base


def forward_delta(module) -> np.ndarray:
    """ΔW (out, in·kh·kw) float64 as the module's forward applies it (module docstring)."""
    module.double()
    module.org_module[0].double()
    if isinstance(module, FullModule):
        return module.get_diff_weight()[0].detach().reshape(module.shape[0], -1).numpy()
    seen = {}
    op = module.op

    def capture(x, weight, *args, **kwargs):
        seen["w"] = weight.detach().clone()
        return op(x, weight, *args, **kwargs)

    module.op = capture
    try:
        x = (
            torch.randn(2, module.shape[1], dtype=torch.float64)
            if module.module_type == "linear"
            else torch.randn(1, module.shape[1], 5, 5, dtype=torch.float64)
        )
        with torch.no_grad():
            module.forward(x)
    finally:
        module.op = op
    w = seen["w"]
    return w.reshape(w.shape[0], -1).numpy()


def base_name(lora_name: str, key_prefix: str = "lycoris") -> str:
    """'lycoris_blocks_0_q' -> 'blocks.0.q' for Tiny (whose own names hold no '_')."""
    return re.sub(r"_(\d+)_", r".\1.", lora_name.removeprefix(key_prefix + "_"))


def references(net, key_prefix: str = "lycoris") -> dict[str, np.ndarray]:
    """ΔW per base module name, float64, for every module of the network."""
    return {base_name(m.lora_name, key_prefix): forward_delta(m) for m in net.loras}


def mixed(folder: Path, picks: dict[str, str], net_seed: int = 1) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """One file whose modules come from networks of different configurations on the same base (LyCORIS lets a
    preset pick the algorithm per module): ``picks`` maps a base module name to a ``CONFIGS`` entry. Returns
    (adapter path, base path, ΔW per module)."""
    tensors, refs, base = {}, {}, None
    for config in sorted(set(picks.values())):
        algo, options, _, _ = CONFIGS[config]
        _, net, path, base = build(folder / config, algo, net_seed=net_seed, **dict(options))
        own = references(net)
        stored = load_file(str(path))
        for name, chosen in picks.items():
            if chosen == config:
                refs[name] = own[name]
                stem = "lycoris_" + name.replace(".", "_")
                tensors.update({k: v for k, v in stored.items() if k.split(".")[0] == stem})
    path = folder / f"mixed-{net_seed}.safetensors"
    save_file(tensors, str(path))
    return path, base, refs


def rekey(
    tensors: dict[str, torch.Tensor], style: str, key_prefix: str = "lycoris"
) -> dict[str, torch.Tensor]:
    """The same tensors under another tool's names: 'diffusers' (``unet.<path>.<part>``), 'comfyui'
    (``diffusion_model.<path>.<part>``) or 'ai-toolkit' (``transformer.<path>.<part>``, lora_A / lora_B)."""
    head = {"diffusers": "unet.", "comfyui": "diffusion_model.", "ai-toolkit": "transformer."}[style]
    out = {}
    for key, value in tensors.items():
        stem, part = key.split(".", 1)
        if style == "ai-toolkit":
            part = part.replace("lora_down.weight", "lora_A.weight").replace(
                "lora_up.weight", "lora_B.weight"
            )
        out[f"{head}{base_name(stem, key_prefix)}.{part}"] = value
    return out
