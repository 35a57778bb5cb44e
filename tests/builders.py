"""Tiny checkpoints and adapters written into tmp_path for tests, in every supported format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).to(dtype).contiguous()


def save_st(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def peft_folder(path: Path, tensors: dict, config: dict, weights: str = "safetensors") -> Path:
    """A PEFT adapter folder; tensor names are given without the 'base_model.model.' prefix."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    full = {f"base_model.model.{k}": v for k, v in tensors.items()}
    if weights == "safetensors":
        save_st(path / "adapter_model.safetensors", full)
    else:
        torch.save(full, path / "adapter_model.bin")
    return path
