"""Spectra of a LoRA on fused MoE experts (PEFT target_parameters), Qwen3-30B-A3B-shaped: lorascope vs dense.

    python benchmarks/peft_experts.py [--layers 4] [--experts 128] [--rank 8] [--repeats 3]
                                      [--dense-experts 8] [--threads 1]

Writes a synthetic PEFT adapter on ``mlp.experts.gate_up_proj`` (E experts of (2·768) × 2048, as
Qwen3-30B-A3B; lora_A (E·r, 2048), lora_B (1536, r·E), float32) in a temporary folder, then measures the whole
process (start-up included): wall time (median of --repeats) and peak RSS of

- lorascope: ``lorascope spectrum ADAPTER -q --no-report`` — one factored LoRA per expert;
- dense: a script that forms every expert's s·B_e A_e (1536 × 2048) in float32 and calls
  torch.linalg.svdvals, over --dense-experts experts and extrapolated to all of them;

and the largest error of lorascope's top singular values against a float64 dense SVD of a few experts,
relative to σ1. Both children run with --threads BLAS/OpenMP threads (default 1: on a shared machine more
threads than free cores make LAPACK spin, and a dense 1536 × 2048 SVD then takes a minute instead of a
second).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import median_run, start_launcher  # noqa: E402

HIDDEN, MOE_INTERMEDIATE = 2048, 768  # Qwen3-30B-A3B


def write_adapter(folder: Path, layers: int, experts: int, rank: int) -> None:
    from safetensors.torch import save_file

    out, inp = 2 * MOE_INTERMEDIATE, HIDDEN
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        key = f"base_model.model.model.layers.{i}.mlp.experts"
        tensors[f"{key}.lora_A.weight"] = torch.randn(experts * rank, inp, generator=gen) / inp**0.5
        tensors[f"{key}.lora_B.weight"] = torch.randn(out, rank * experts, generator=gen) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": [],
        "target_parameters": ["mlp.experts.gate_up_proj"],
        "lora_dropout": 0.0,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))


DENSE = """
import sys, time, torch
from safetensors.torch import load_file
sd = load_file(sys.argv[1]); layers, experts, rank, count = map(int, sys.argv[2:6])
done = 0
for i in range(layers):
    a = sd[f"base_model.model.model.layers.{i}.mlp.experts.lora_A.weight"].reshape(experts, rank, -1)
    b = sd[f"base_model.model.model.layers.{i}.mlp.experts.lora_B.weight"].reshape(-1, rank, experts)
    for e in range(experts):
        if done == count:
            sys.exit(0)
        torch.linalg.svdvals(2.0 * b[:, :, e] @ a[e])  # (1536, r) @ (r, 2048) -> (1536, 2048)
        done += 1
"""


def reference_error(folder: Path, results: Path, experts: int, rank: int, check: int) -> float:
    """max |σ_lorascope − σ_ref| / σ1 over the first ``check`` experts of layer 0 (float64 dense
    reference)."""
    from safetensors.numpy import load_file as load_np

    from lorascope.results import load_results

    sd = load_np(str(folder / "adapter_model.safetensors"))
    a = (
        sd["base_model.model.model.layers.0.mlp.experts.lora_A.weight"]
        .astype(np.float64)
        .reshape(experts, rank, -1)
    )
    b = sd["base_model.model.model.layers.0.mlp.experts.lora_B.weight"].astype(np.float64)
    b = b.reshape(-1, rank, experts)
    res = load_results(results)
    worst = 0.0
    for e in range(check):
        want = np.linalg.svd(2.0 * b[:, :, e] @ a[e], compute_uv=False)[:rank]
        got = res.spectrum(f"model.layers.0.mlp.experts.gate_up_proj.{e}")
        worst = max(worst, float(np.max(np.abs(got[:rank] - want)) / want[0]))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-experts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the launcher and every child
    start_launcher()
    modules = args.layers * args.experts
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "adapter", Path(tmp) / "results"
        write_adapter(folder, args.layers, args.experts, args.rank)
        size = (folder / "adapter_model.safetensors").stat().st_size
        cli = [
            sys.executable,
            "-m",
            "lorascope.cli",
            "spectrum",
            str(folder),
            "-q",
            "--no-report",
            "--out",
            str(out),
        ]
        ours, _ = median_run(cli, args.repeats)
        script = Path(tmp) / "dense.py"
        script.write_text(DENSE)
        dense_cmd = [
            sys.executable,
            str(script),
            str(folder / "adapter_model.safetensors"),
            str(args.layers),
            str(args.experts),
            str(args.rank),
        ]
        empty, _ = median_run([*dense_cmd, "0"], args.repeats)  # start-up and reading alone
        dense, _ = median_run([*dense_cmd, str(args.dense_experts)], args.repeats)
        per_expert = max(0.0, dense.seconds - empty.seconds) / args.dense_experts
        error = reference_error(folder, out, args.experts, args.rank, min(4, args.experts))
    print(
        f"{args.layers} layers × {args.experts} experts = {modules} expert modules, r = {args.rank}, "
        f"adapter {size / 2**20:.0f} MiB, {args.threads} BLAS thread(s)"
    )
    print("| tool | wall (s) | peak RSS (MiB) | note |")
    print("| --- | --- | --- | --- |")
    print(
        f"| lorascope spectrum | {ours.seconds:.1f} | {ours.peak_rss_mb:.0f} | every expert, factored; "
        f"max error {error:.1e} of σ1 |"
    )
    print(
        f"| dense s·B_e A_e + svdvals | {empty.seconds + per_expert * modules:.1f} (extrapolated) | "
        f"{dense.peak_rss_mb:.0f} | {per_expert:.3f} s per expert over {args.dense_experts} |"
    )


if __name__ == "__main__":
    main()
