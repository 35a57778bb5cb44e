"""Full-diff analysis at scale: local CPU, --workers, a local Ray cluster, and the GPU where one exists.

    python benchmarks/scale.py [--width 4096] [--intermediate 11008] [--layers 4] [--skip-ray]

Writes a synthetic Llama-shaped pair (bfloat16, one shard per layer; see full_diff.py), analyzes it with
`lorascope spectrum BASE TUNED` in each configuration as a child process, and prints wall time, time per
matrix, peak host RSS of the driver process and peak GPU memory, then extrapolates the wall time to the
7B (32 layers, 4096 / 11008) and 70B (80 layers, 8192 / 28672, 8 KV heads) shapes from the measured
per-matrix times, using the O(m·n·min(m, n)) cost of a dense SVD.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_diff import ensure_pair, pair_arguments  # noqa: E402
from measure import run, start_launcher, which  # noqa: E402

SHAPES_7B = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
SHAPES_70B = [
    (8192, 8192),
    (1024, 8192),
    (1024, 8192),
    (8192, 8192),
    (28672, 8192),
    (28672, 8192),
    (8192, 28672),
]
MODELS = {"7B": (32, SHAPES_7B), "70B": (80, SHAPES_70B)}


def svd_cost(m: int, n: int) -> float:
    return float(m) * n * min(m, n)


def extrapolate(modules: pd.DataFrame, wall: float) -> dict[str, float]:
    """Seconds for the 7B and 70B shapes: per-matrix cost c·m·n·min(m,n) fitted on the measured matrices,
    scaled by the measured ratio of wall time to summed per-matrix time (start-up, parallelism)."""
    c = float(
        np.median(modules["seconds"] / [svd_cost(r, k) for r, k in zip(modules["rows"], modules["cols"])])
    )
    overlap = wall / modules["seconds"].sum()
    return {
        name: layers * sum(c * svd_cost(m, n) for m, n in shapes) * overlap
        for name, (layers, shapes) in MODELS.items()
    }


def configurations(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = [
        ("cpu, 1 worker", ["--device", "cpu"]),
        (f"cpu, {args.workers} workers", ["--device", "cpu", "--workers", str(args.workers)]),
    ]
    if not args.skip_ray:
        try:
            import ray  # noqa: F401

            out.append(("local Ray cluster (cpu)", ["--device", "cpu", "--backend", "ray"]))
        except ImportError:
            print("ray is not installed (pip install 'lorascope[ray]'): its row is omitted")
    try:
        import torch

        if torch.cuda.is_available():
            out.append((f"GPU ({torch.cuda.get_device_name()})", ["--device", "cuda"]))
        else:
            print("no CUDA GPU visible to torch: the GPU row is omitted")
    except ImportError:
        pass
    return out


def main() -> None:
    start_launcher()
    ap = pair_arguments(__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    work = ensure_pair(args, "lorascope-scale-")
    lorascope = which("lorascope") or "lorascope"
    rows, reference = [], None
    for label, extra in configurations(args):
        out = work / ("results-" + "".join(ch if ch.isalnum() else "-" for ch in label))
        res = run(
            [
                lorascope,
                "spectrum",
                str(work / "base"),
                str(work / "tuned"),
                "--out",
                str(out),
                "-q",
                "--no-report",
                *extra,
            ]
        )
        if res.returncode != 0:
            print(f"{label}: failed\n{res.output[-2000:]}")
            continue
        modules = pd.read_csv(out / "modules.csv")
        timing = json.loads((out / "summary.json").read_text())["timing"]
        modules["seconds"] = modules["name"].map(timing["per_module_seconds"])  # kept out of the tables
        if reference is None:
            reference = modules
        agree = float(np.max(np.abs(modules["fro_norm"] - reference["fro_norm"]) / reference["fro_norm"]))
        sigma_err = _max_sigma_difference(work / "results-cpu--1-worker", out)
        ext = extrapolate(modules, res.seconds)
        gpu = timing.get("gpu_peak_bytes")
        rows.append(
            (
                label,
                res.seconds,
                modules["seconds"].median(),
                res.peak_rss_mb / 1024,
                f"{gpu / 2**30:.2f}" if gpu else "–",
                max(agree, sigma_err),
                ext["7B"],
                ext["70B"],
            )
        )
    print(f"\n{args.layers} layers × 7 matrices, width {args.width}, MLP {args.intermediate}, bfloat16\n")
    print(
        f"{'configuration':<30}{'wall s':>8}{'s/matrix':>10}{'host GiB':>10}{'GPU GiB':>9}"
        f"{'max rel diff':>14}{'7B est.':>10}{'70B est.':>10}"
    )
    for label, wall, per, host, gpu, diff, e7, e70 in rows:
        print(
            f"{label:<30}{wall:>8.1f}{per:>10.2f}{host:>10.2f}{gpu:>9}{diff:>14.1e}{_hms(e7):>10}{_hms(e70):>10}"
        )
    print("\nmax rel diff: against the 1-worker CPU run, over fro_norm and every singular value.")


def _max_sigma_difference(ref_dir: Path, out_dir: Path) -> float:
    from safetensors.numpy import load_file

    a = load_file(str(ref_dir / "singular_values.safetensors"))
    b = load_file(str(out_dir / "singular_values.safetensors"))
    worst = 0.0
    for k, v in a.items():
        scale = float(v[0]) or 1.0
        worst = max(worst, float(np.max(np.abs(b[k].astype(np.float64) - v) / scale)))
    return worst


def _hms(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


if __name__ == "__main__":
    main()
