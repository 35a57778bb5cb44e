"""Tiny base, adapters and full fine-tunes of one model for the comparison tests, with their dense updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from builders import peft_folder, save_st, t
from refs import planted

# module -> (rows, cols): square, wide (m < n) and tall (m > n) weights
SHAPES = {"self_attn.q_proj": (48, 48), "self_attn.v_proj": (32, 48), "mlp.up_proj": (64, 48)}
LAYERS = 2


def key(layer: int, module: str) -> str:
    return f"model.layers.{layer}.{module}"


@dataclass
class Tiny:
    root: Path
    base: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # name -> W (m, n), float32 values in float64
    deltas: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # input label -> name -> dense ΔW

    def base_file(self) -> Path:
        return save_st(
            self.root / "base" / "model.safetensors", {f"{k}.weight": t(w) for k, w in self.weights.items()}
        )

    def adapter(
        self, label: str, r: int, seed: int, alpha: float | None = None, prefix: str = "", only: str = ""
    ) -> Path:
        """A PEFT adapter of rank r on every module (whose name contains ``only``); ΔW recorded as s·B@A."""
        rng = np.random.default_rng(seed)
        alpha = alpha if alpha is not None else 2 * r
        tensors, deltas = {}, {}
        for name, w in self.weights.items():
            if only not in name:
                continue
            m, n = w.shape
            a = np.float32(rng.standard_normal((r, n)) / np.sqrt(n))
            b = np.float32(rng.standard_normal((m, r)) * 0.05)
            stored = prefix + name.removeprefix("model.") if prefix else name
            tensors[f"{stored}.lora_A.weight"] = t(a)
            tensors[f"{stored}.lora_B.weight"] = t(b)
            deltas[name] = (alpha / r) * b.astype(np.float64) @ a.astype(np.float64)
        self.deltas[label] = deltas
        targets = sorted({n.split(".")[-1] for n in self.weights})
        return peft_folder(
            self.root / label, tensors, {"r": r, "lora_alpha": alpha, "target_modules": targets}
        )

    def full(self, label: str, seed: int, updates: dict[str, np.ndarray] | None = None) -> Path:
        """A fully fine-tuned checkpoint: W + ΔW with ΔW dense noise (or given), stored as float32."""
        rng = np.random.default_rng(seed)
        tensors, deltas = {}, {}
        for name, w in self.weights.items():
            dw = updates[name] if updates and name in updates else 0.02 * rng.standard_normal(w.shape)
            tuned = np.float32(w + dw)
            tensors[f"{name}.weight"] = t(tuned)
            deltas[name] = tuned.astype(np.float64) - w
        self.deltas[label] = deltas
        return save_st(self.root / label / "model.safetensors", tensors)


@pytest.fixture
def tiny(tmp_path) -> Tiny:
    """Base weights with well-separated planted spectra (float32-exact values kept in float64)."""
    out = Tiny(tmp_path)
    for layer in range(LAYERS):
        for i, (module, (m, n)) in enumerate(SHAPES.items()):
            p = min(m, n)
            sigmas = 3.0 * 0.85 ** np.arange(p) + 0.05
            w = planted(m, n, sigmas, seed=10 * layer + i)
            out.weights[key(layer, module)] = np.float32(w).astype(np.float64)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """These matrices are tiny: one intra-op thread avoids thread start-up and spin-waiting on a busy
    machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
