"""Fixtures of the CLI tests: one folder of every kind lorascope writes, built small and without training.

Two trainer run folders laid out as ``lorascope train-sweep`` writes them (``metrics.json`` with planted
outcomes, ``history.csv``, ``rank_history.csv``, ``tuned/``, a PEFT ``adapter/``) share a base model folder;
the sweep folder lists them in ``index.csv``. The other kinds are written by lorascope itself from those.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import peft_folder, save_st
from report.synthetic_runs import histories, metrics_of

HIDDEN, R = 24, 4
MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def _run(folder: Path, base: Path, name: str, rank: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    factors = {}
    for n in MODULES:
        factors[f"{n}.lora_A.weight"] = torch.randn(rank, HIDDEN, generator=g)
        factors[f"{n}.lora_B.weight"] = torch.randn(HIDDEN, rank, generator=g)
    peft_folder(
        folder / name / "adapter",
        factors,
        {"r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"]},
    )
    (folder / name / "tuned").mkdir()
    metrics = metrics_of("lora", rank, "q_proj+v_proj", 0) | {"run": name, "base": str(base)}
    (folder / name / "metrics.json").write_text(json.dumps(metrics))
    history, rank_history = histories(metrics)
    history.to_csv(folder / name / "history.csv", index=False)
    rank_history.to_csv(folder / name / "rank_history.csv", index=False)
    return folder / name


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    """kind -> folder: base (a model), run, run2, train-sweep, results, compare, demo, params, audit."""
    from lorascope import analyze
    from lorascope.compare import compare

    tmp = tmp_path_factory.mktemp("kinds")
    g = torch.Generator().manual_seed(0)
    base = tmp / "base"
    weights = {f"{n}.weight": torch.randn(HIDDEN, HIDDEN, generator=g) for n in MODULES}
    save_st(base / "model.safetensors", weights)
    (base / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": HIDDEN,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "intermediate_size": 2 * HIDDEN,
                "vocab_size": 32,
            }
        )
    )
    sweep = tmp / "sweep"
    runs = [_run(sweep, base, f"lora-r{r}-q_proj-v_proj", r, seed=r) for r in (2, R)]
    rows = [
        {
            "run": p.name,
            "method": "lora",
            "rank": r,
            "targets": "q_proj+v_proj",
            "folder": p.name,
            "trainable_parameters": 4 * r * 2 * HIDDEN,
        }
        for p, r in zip(runs, (2, R))
    ]
    import pandas as pd

    pd.DataFrame(rows).to_csv(sweep / "index.csv", index=False)
    results = analyze(base, runs[1] / "adapter").save(tmp / "results")
    compared = compare(runs[0] / "adapter", runs[1] / "adapter", base).save(tmp / "compare")
    demo = tmp / "demo"  # the demo's layout: runs/ (a sweep), spectra/ (a results folder per run), demo.json
    spectra = {p.name: analyze(base, p / "adapter").save(demo / "spectra" / p.name) for p in runs}
    (demo / "runs").symlink_to(sweep, target_is_directory=True)
    record = {"runs": "runs", "spectra": {k: f"spectra/{k}" for k in spectra}}
    (demo / "demo.json").write_text(json.dumps(record))
    params = tmp / "params"
    params.mkdir()
    (params / "params.json").write_text("{}")
    audit = tmp / "audit"
    audit.mkdir()
    (audit / "audit.csv").write_text("name,verdict\n")
    return {
        "base": base,
        "run": runs[1],
        "run2": runs[0],
        "train-sweep": sweep,
        "results": results,
        "compare": compared,
        "demo": demo,
        "params": params,
        "audit": audit,
    }
