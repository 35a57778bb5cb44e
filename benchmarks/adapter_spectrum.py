"""Spectrum of a Mistral-7B-shaped PEFT adapter: lorascope's factored path vs forming s·B@A densely, and
gradience.

    python benchmarks/adapter_spectrum.py [--layers 32] [--rank 16] [--repeats 5] [--dense-layers 1]

Builds a synthetic adapter (32 layers; q, k, v, o, gate, up, down; r = 16; fp16; grouped-query shapes:
hidden 4096, 8 KV heads of 128 → k/v 1024 wide, MLP 14336) in a temporary folder, then measures, per
tool, the whole process (python start-up and imports included): wall time (median of --repeats), peak
RSS, and the largest relative error of the top singular values against a float64 reference (lorascope's
through its API, in float64: its singular_values.safetensors stores float32).

- lorascope: `lorascope spectrum ADAPTER -q --no-report`.
- dense: a script that forms each s·B@A in float32 and calls torch.linalg.svdvals — run over the first
  --dense-layers layers (all 224 modules take hours on a laptop CPU) and extrapolated per module type.
- gradience: `gradience audit --peft-dir ADAPTER --json --layers --top-singular-values R`, when the
  `gradience` command is found (PATH, or --gradience); otherwise its row says "not installed".
- On a GPU (when torch sees one): `lorascope spectrum ADAPTER --device cuda`.
The float64 reference is dense: s·B@A formed in float64 and fully decomposed, for --ref-layers layers.
The machine's load average is printed beside the table: timings taken while other work runs are noisy.
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
from measure import MISTRAL_7B_SHAPES as SHAPES  # noqa: E402
from measure import median_run, start_launcher, which  # noqa: E402


def build_adapter(folder: Path, layers: int, rank: int, alpha: float) -> Path:
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    tensors = {}
    decay = torch.logspace(0, -2, rank)  # a decaying spectrum, as trained adapters have
    for i in range(layers):
        for mod, (out, inp) in SHAPES.items():
            key = f"base_model.model.model.layers.{i}.{mod}"
            a = torch.randn(rank, inp, generator=gen) / inp**0.5
            b = torch.randn(out, rank, generator=gen) * decay * 0.05
            tensors[f"{key}.lora_A.weight"] = a.half()
            tensors[f"{key}.lora_B.weight"] = b.half()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": alpha,
                "target_modules": sorted({m.split(".")[-1] for m in SHAPES}),
                "base_model_name_or_path": "synthetic/mistral-7b-shaped",
                "task_type": "CAUSAL_LM",
            }
        )
    )
    return folder


def dense_worker(adapter: str, layers: int, out: str) -> None:
    """Child process: the dense approach — form s·B@A in float32, svdvals — for the first `layers` layers."""
    import time

    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    sd = load_file(str(Path(adapter) / "adapter_model.safetensors"))
    sigmas, seconds = {}, {}
    for i in range(layers):
        for mod in SHAPES:
            key = f"base_model.model.model.layers.{i}.{mod}"
            start = time.perf_counter()
            dw = scale * (
                sd[f"{key}.lora_B.weight"].float() @ sd[f"{key}.lora_A.weight"].float()
            )  # (out, r) @ (r, in)
            s = torch.linalg.svdvals(dw)
            seconds[f"layers.{i}.{mod}"] = time.perf_counter() - start
            sigmas[f"layers.{i}.{mod}"] = s[: cfg["r"]].double().numpy()
    np.savez(out, seconds=json.dumps(seconds), **{k.replace(".", "/"): v for k, v in sigmas.items()})


def reference(adapter: Path, layers: int) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    sd = load_file(str(adapter / "adapter_model.safetensors"))
    ref = {}
    for i in range(layers):
        for mod in SHAPES:
            key = f"base_model.model.model.layers.{i}.{mod}"
            dw = scale * (sd[f"{key}.lora_B.weight"].double() @ sd[f"{key}.lora_A.weight"].double())
            ref[f"layers.{i}.{mod}"] = np.linalg.svd(dw.numpy(), compute_uv=False)[: cfg["r"]]
    return ref


def max_rel_err(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, want in ref.items():
        g = np.asarray(got[name][: len(want)], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(g - want) / want)))
    return worst


def lorascope_sigmas(adapter: Path, device: str = "auto") -> dict[str, np.ndarray]:
    """lorascope's float64 spectra, through the API (singular_values.safetensors stores them as float32)."""
    import lorascope

    res = lorascope.analyze(adapter, device=device)
    return {k.removeprefix("model."): np.asarray(v, np.float64) for k, v in res.spectra.items()}


def gradience_sigmas(path: Path) -> dict[str, np.ndarray]:
    text = path.read_text()
    data = json.loads(
        text[text.index("\n{") + 1 :] if not text.startswith("{") else text
    )  # progress lines precede the JSON
    out = {}
    for row in data["layer_data"]["layer_rows"]:
        name = row["name"].removeprefix("base_model.model.model.")
        out[name] = np.asarray(row["top_singular_values"], dtype=np.float64) * row["adapter_scale"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--dense-layers",
        type=int,
        default=1,
        help="layers the dense baseline runs on (then extrapolated); 0 leaves its row out",
    )
    ap.add_argument("--ref-layers", type=int, default=1, help="layers with a dense float64 reference")
    ap.add_argument("--gradience", default=None, help="path of the gradience command (default: from PATH)")
    ap.add_argument(
        "--work", type=Path, default=None, help="folder for the adapter and outputs (default: temporary)"
    )
    ap.add_argument("--dense-worker", nargs=3, metavar=("ADAPTER", "LAYERS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dense_worker:
        dense_worker(args.dense_worker[0], int(args.dense_worker[1]), args.dense_worker[2])
        return
    start_launcher()

    work = args.work or Path(tempfile.mkdtemp(prefix="lorascope-bench-"))
    adapter = build_adapter(work / "adapter", args.layers, args.rank, args.alpha)
    n_modules = args.layers * len(SHAPES)
    size_mb = (adapter / "adapter_model.safetensors").stat().st_size / 2**20
    print(f"adapter: {n_modules} modules, r={args.rank}, fp16, {size_mb:.0f} MiB at {adapter}")
    ref = reference(adapter, args.ref_layers)
    rows = []

    load_before = os.getloadavg()
    lorascope_cmd = which("lorascope") or "lorascope"
    out = fresh(work / "lorascope-out")
    cmd = [lorascope_cmd, "spectrum", str(adapter), "--out", str(out), "-q", "--no-report"]
    med, runs = median_run(cmd, args.repeats)
    rows.append(
        (
            "lorascope (factored)",
            med.seconds,
            "measured",
            med.peak_rss_mb,
            max_rel_err(lorascope_sigmas(adapter), ref),
        )
    )
    lorascope_runs = [r.seconds for r in runs]

    by_type: dict[str, float] = {}
    if args.dense_layers > 0:
        npz = work / "dense.npz"
        cmd = [sys.executable, __file__, "--dense-worker", str(adapter), str(args.dense_layers), str(npz)]
        med, _ = median_run(cmd, max(1, min(args.repeats, 3)))
        data = np.load(npz)
        per_module = json.loads(str(data["seconds"]))
        by_type = {mod: np.mean([t for k, t in per_module.items() if k.endswith(mod)]) for mod in SHAPES}
        svd_total = sum(by_type.values()) * args.layers
        measured_svd = sum(per_module.values())
        dense_total = med.seconds - measured_svd + svd_total
        dense_sig = {k.replace("/", "."): data[k] for k in data.files if k != "seconds"}
        ref_dense = {k: v for k, v in ref.items() if k in dense_sig}
        rows.append(
            (
                "dense s·B@A + svdvals (float32)",
                dense_total,
                f"extrapolated from {args.dense_layers} layer(s)",
                med.peak_rss_mb,
                max_rel_err(dense_sig, ref_dense),
            )
        )

    gradience = which("gradience", args.gradience)
    gradience_runs: list[float] = []
    if gradience:
        gjson = work / "gradience.json"
        cmd = [
            "sh",
            "-c",
            f'"{gradience}" audit --peft-dir "{adapter}" --json --layers '
            f'--top-singular-values {args.rank} > "{gjson}"',
        ]
        med, runs = median_run(cmd, args.repeats)
        gradience_runs = [r.seconds for r in runs]
        rows.append(
            (
                "gradience audit",
                med.seconds,
                "measured",
                med.peak_rss_mb,
                max_rel_err(gradience_sigmas(gjson), ref),
            )
        )
    else:
        rows.append(("gradience audit", None, "not installed", None, None))

    gpu = _gpu_name()
    if gpu:
        out_gpu = fresh(work / "lorascope-gpu")
        med, _ = median_run(
            [
                lorascope_cmd,
                "spectrum",
                str(adapter),
                "--out",
                str(out_gpu),
                "-q",
                "--no-report",
                "--device",
                "cuda",
            ],
            args.repeats,
        )
        rows.append(
            (
                f"lorascope --device cuda ({gpu})",
                med.seconds,
                "measured",
                med.peak_rss_mb,
                max_rel_err(lorascope_sigmas(adapter, "cuda"), ref),
            )
        )
    else:
        print("no CUDA GPU visible to torch: the GPU row is omitted")
    load_after = os.getloadavg()

    print(
        f"\nwhole-process wall time (median of {args.repeats}), peak RSS, max relative σ error vs float64 "
        f"(top {args.rank} values, {args.ref_layers} layer(s) = {len(ref)} modules); load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs\n"
    )
    print(f"{'tool':<34}{'wall s':>10}  {'how':<28}{'peak RSS MiB':>13}{'max rel σ err':>15}")
    for name, secs, how, rss, err in rows:
        secs_t = "–" if secs is None else f"{secs:.2f}"
        rss_t = "–" if rss is None else f"{rss:.0f}"
        err_t = "–" if err is None else f"{err:.2e}"
        print(f"{name:<34}{secs_t:>10}  {how:<28}{rss_t:>13}{err_t:>15}")
    base = rows[0][1]
    print(
        f"\nlorascope runs (s): {' '.join(f'{t:.2f}' for t in lorascope_runs)}"
        + (f"; gradience runs (s): {' '.join(f'{t:.2f}' for t in gradience_runs)}" if gradience_runs else "")
    )
    by_name = {r[0]: r[1] for r in rows}
    speedups = [
        f"over {name}: {by_name[name] / base:.1f}x"
        for name in ("dense s·B@A + svdvals (float32)", "gradience audit")
        if by_name.get(name)
    ]
    print("speed-up of lorascope " + "; ".join(speedups))
    if by_type:
        per_type = ", ".join(f"{m.split('.')[-1]} {t * 1e3:.0f} ms" for m, t in by_type.items())
        print(f"dense svdvals per module: {per_type}")


def fresh(folder: Path) -> Path:
    """An output folder emptied of an earlier run's results (a stale folder from another version is
    refused)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
