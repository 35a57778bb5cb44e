"""Synthetic results folders with planted spectra, for report tests and the render benchmark.

Layer l, module type j gets σ_i = a_l · (d_j^(i−1) + a noise bulk for dense updates): a magnitude growing
with depth and a decay per type, so every figure has visible structure and known answers (a faster decay =
a lower rank).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lorascope.metrics import module_metrics
from lorascope.results import Results, modules_frame, vectors_frame

LLAMA_TYPES = {  # module -> (rows, cols) at hidden size d, intermediate 2.75·d, grouped-query k/v
    "self_attn.q_proj": (1.0, 1.0),
    "self_attn.k_proj": (0.25, 1.0),
    "self_attn.v_proj": (0.25, 1.0),
    "self_attn.o_proj": (1.0, 1.0),
    "mlp.gate_proj": (2.75, 1.0),
    "mlp.up_proj": (2.75, 1.0),
    "mlp.down_proj": (1.0, 2.75),
}


def synthetic_results(
    n_layers: int = 2,
    types: tuple[str, ...] = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"),
    kind: str = "adapter",
    r: int = 8,
    hidden: int = 64,
    top_k: int | None = None,
    unlayered: tuple[str, ...] = (),
    seed: int = 0,
) -> Results:
    """Results of ``n_layers × len(types)`` modules (plus ``unlayered`` names such as 'lm_head').

    kind 'adapter': LoRA modules of rank r (r non-zero σ, no base); 'full-diff': dense updates with
    min(m, n) σ and a base norm; ``top_k`` keeps only the top k σ of dense updates (a randomized run).
    """
    rng = np.random.default_rng(seed)
    rows, spectra = [], {}
    entries = [(f"model.layers.{l}.{t}", l, t) for l in range(n_layers) for t in types]
    entries += [(name, None, name) for name in unlayered]
    for name, layer, module in entries:
        j = types.index(module) if module in types else len(types)
        shape_f = LLAMA_TYPES.get(module, (4.0, 1.0))
        m, n = int(hidden * shape_f[0]), int(hidden * shape_f[1])
        p = min(m, n) if kind != "adapter" else min(r, m, n)
        depth = 0.0 if layer is None else layer / max(n_layers - 1, 1)
        decay = 0.5 + 0.4 * j / max(len(types), 1)
        bulk = (
            0.03 * np.sqrt(1 - np.arange(p) / p) if kind != "adapter" else 0.0
        )  # a noise floor of dense updates
        sigma = (0.5 + 2.0 * depth) * (decay ** np.arange(p) + bulk) * (1 + 0.05 * rng.random(p))
        sigma = np.sort(sigma)[::-1]
        fro = float(np.sqrt(np.sum(sigma**2)))
        complete = top_k is None or kind == "adapter" or top_k >= p
        stored = sigma if complete else sigma[:top_k]
        base = None if kind == "adapter" else float(np.sqrt(m * n)) * 0.02
        row = {
            "name": name,
            "layer": layer,
            "module": module,
            "rows": m,
            "cols": n,
            "source": "lora" if kind == "adapter" else "dense",
            "method": "factored" if kind == "adapter" else ("exact" if complete else "randomized"),
            "lora_rank": r if kind == "adapter" else None,
            "scale": 2.0 if kind == "adapter" else None,
            "seconds": 0.001,
        }
        row.update(module_metrics(stored, (m, n), fro, complete=complete, base_fro_norm=base))
        rows.append(row)
        spectra[name] = stored.astype(np.float32)
    modules = modules_frame(rows)
    summary = {
        "lorascope_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "kind": kind,
        "inputs": [
            {
                "role": "adapter" if kind == "adapter" else "tuned",
                "path": f"/data/synthetic-{kind}",
                "format": "peft" if kind == "adapter" else "safetensors",
                "bytes": 123456,
                "sha256": None,
                "n_tensors": 2 * len(rows),
            }
        ],
        "options": {"precision": "float32", "top_k": top_k, "seed": 0},
        "versions": {"python": "3.11", "numpy": np.__version__},
        "totals": {
            "modules": len(rows),
            "vectors": 0,
            "skipped": 1,
            "delta_parameters": int((modules["rows"] * modules["cols"]).sum()),
            "adapter_parameters": 0,
        },
        "timing": {"total_seconds": 0.5},
        "warnings": [{"name": "model.norm.weight", "reason": "no partner in the base checkpoint"}],
    }
    return Results(modules, spectra, summary, vectors_frame([]))


def llama_like(n_layers: int, kind: str = "adapter", **kw) -> Results:
    """A Llama-shaped analysis: seven module types per layer (32 layers → 224 modules)."""
    return synthetic_results(n_layers, tuple(LLAMA_TYPES), kind=kind, **kw)


def saved(results: Results, folder: Path) -> Path:
    results.save(folder)
    return folder
