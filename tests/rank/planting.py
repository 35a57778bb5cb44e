"""Planted updates for the rank tests: dense full fine-tunes and PEFT adapters with known spectra, written
to tmp_path."""

from __future__ import annotations

import numpy as np
import torch
from builders import peft_folder, save_st
from refs import planted, planted_factors


def truncate(dw: np.ndarray, k: int) -> np.ndarray:
    """The best rank-k approximation of dw by numpy's SVD (Eckart–Young), the independent reference."""
    u, s, vt = np.linalg.svd(np.asarray(dw, dtype=np.float64), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def energy_ref(dw: np.ndarray, k: int) -> float:
    s = np.linalg.svd(np.asarray(dw, dtype=np.float64), compute_uv=False)
    return float(np.sum(s[:k] ** 2) / np.sum(s**2))


def full_finetune(tmp_path, deltas: dict[str, np.ndarray], seed: int = 0, name: str = "pair"):
    """base.safetensors (random weights) and tuned.safetensors = base + ΔW per ``<name>.weight`` key."""
    rng = np.random.default_rng(seed)
    base, tuned = {}, {}
    for key, dw in deltas.items():
        w0 = rng.standard_normal(dw.shape) * 0.5
        base[f"{key}.weight"] = torch.tensor(w0, dtype=torch.float32)
        tuned[f"{key}.weight"] = torch.tensor(w0 + dw, dtype=torch.float32)
    b = save_st(tmp_path / name / "base.safetensors", base)
    t = save_st(tmp_path / name / "tuned.safetensors", tuned)
    # the reference ΔW is what the files hold: float32 tuned − float32 base, in float64
    refs = {k: tuned[f"{k}.weight"].double().numpy() - base[f"{k}.weight"].double().numpy() for k in deltas}
    return b, t, refs


def low_rank_plus_noise(m: int, n: int, rank: int, signal: float, noise: float, seed: int) -> np.ndarray:
    """A sum of ``rank`` rank-one updates of size ``signal`` plus i.i.d. N(0, noise²) entries."""
    rng = np.random.default_rng(seed)
    dw = planted(m, n, [signal] * rank, seed=seed) if rank else np.zeros((m, n))
    return dw + noise * rng.standard_normal((m, n))


def adapter(
    tmp_path,
    shapes: dict[str, tuple[int, int]],
    sigmas: dict[str, list[float]],
    config: dict,
    name: str = "adapter",
):
    """A PEFT adapter whose module ΔW = s·B@A has exactly the given singular values (s from ``config``)."""
    from lorascope.checkpoint.peft import module_scale

    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, **config}
    tensors, refs = {}, {}
    for i, (module, (m, n)) in enumerate(shapes.items()):
        r, _, scale = module_scale(cfg, module)
        sig = np.asarray(sigmas[module], dtype=np.float64)
        b, a = planted_factors(m, n, np.pad(sig, (0, r - sig.size)) / scale, seed=i)
        tensors[f"{module}.lora_A.weight"] = torch.tensor(a, dtype=torch.float32)
        tensors[f"{module}.lora_B.weight"] = torch.tensor(b, dtype=torch.float32)
        refs[module] = scale * (
            tensors[f"{module}.lora_B.weight"].double().numpy()
            @ tensors[f"{module}.lora_A.weight"].double().numpy()
        )
    return peft_folder(tmp_path / name, tensors, cfg), refs
