"""Full-diff spectrum of a checkpoint pair larger than the memory it may use: streaming, one matrix at a time.

    python benchmarks/full_diff.py [--width 4096] [--intermediate 11008] [--layers 4] [--mem-cap-gb 2.5]

Writes a synthetic Llama-shaped pair (q, k, v, o, gate, up, down per layer; bfloat16; one shard per layer,
with a model.safetensors.index.json) whose two folders together exceed --mem-cap-gb, then runs
`lorascope spectrum BASE TUNED` as a child process under that memory cap (a cgroup-v1 memory limit,
where this machine allows one: the kernel keeps the child's memory, page cache included, under the cap)
and prints wall time per matrix and in total, and the child's peak RSS against the target
1.5 GB + three of the largest float32 matrices.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import MemoryCap, run, start_launcher, which  # noqa: E402


def shapes(width: int, intermediate: int) -> dict[str, tuple[int, int]]:
    return {
        "self_attn.q_proj": (width, width), "self_attn.k_proj": (width, width), "self_attn.v_proj": (width, width),
        "self_attn.o_proj": (width, width), "mlp.gate_proj": (intermediate, width),
        "mlp.up_proj": (intermediate, width), "mlp.down_proj": (width, intermediate),
    }


def write_pair(root: Path, width: int, intermediate: int, layers: int, update_rank: int) -> tuple[Path, Path]:
    """Base W ~ N(0, 1/width) and tuned W + ΔW, ΔW = rank-`update_rank` signal + small noise; shard per layer."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base_dir, tuned_dir = root / "base", root / "tuned"
    for folder in (base_dir, tuned_dir):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": width,
                                                        "intermediate_size": intermediate, "num_hidden_layers": layers}))
    weight_map = {}
    for i in range(layers):
        shard = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        base, tuned = {}, {}
        for mod, (out, inp) in shapes(width, intermediate).items():
            key = f"model.layers.{i}.{mod}.weight"
            w = torch.randn(out, inp, generator=gen) / inp**0.5
            signal = (torch.randn(out, update_rank, generator=gen) @ torch.randn(update_rank, inp, generator=gen)) * 1e-3
            dw = signal + torch.randn(out, inp, generator=gen) * 1e-5
            base[key] = w.bfloat16()
            tuned[key] = (w + dw).bfloat16()
            weight_map[key] = shard
        save_file(base, str(base_dir / shard))
        save_file(tuned, str(tuned_dir / shard))
        del base, tuned
    for folder in (base_dir, tuned_dir):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return base_dir, tuned_dir


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def _drop_page_cache() -> bool:
    """Drop clean cached pages so the run really reads the pair from disk (root only; best effort)."""
    import os

    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")
        return True
    except OSError:
        return False


def pair_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark on a synthetic pair shares."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--update-rank", type=int, default=64)
    ap.add_argument("--work", type=Path, default=None, help="folder for the pair (default: temporary; reused if it holds one)")
    return ap


def ensure_pair(args: argparse.Namespace, prefix: str) -> Path:
    """The folder holding base/ and tuned/, written unless --work already holds them."""
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    if not (work / "tuned" / "model.safetensors.index.json").exists():
        print(f"writing the pair to {work} …", flush=True)
        write_pair(work, args.width, args.intermediate, args.layers, args.update_rank)
    return work


def main() -> None:
    start_launcher()
    ap = pair_arguments(__doc__)
    ap.add_argument("--mem-cap-gb", type=float, default=2.5)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    work = ensure_pair(args, "lorascope-fulldiff-")
    base, tuned = work / "base", work / "tuned"
    pair_gb = (folder_bytes(base) + folder_bytes(tuned)) / 1e9
    cap_bytes = int(args.mem_cap_gb * 1e9)
    cap = MemoryCap(cap_bytes)
    dropped = _drop_page_cache()
    out = work / "results"
    cmd = [which("lorascope") or "lorascope", "spectrum", str(base), str(tuned), "--out", str(out), "-q",
           "--no-report", "--workers", str(args.workers)]
    try:
        res = run(cmd, cap)
        failcnt = cap.failcnt()
    finally:
        cap.close()
    if res.returncode != 0:
        raise SystemExit(f"lorascope failed ({res.returncode}):\n{res.output[-3000:]}")
    modules = pd.read_csv(out / "modules.csv")
    largest = max(r * c for r, c in shapes(args.width, args.intermediate).values()) * 4 / 1e9
    target = 1.5 + 3 * largest
    peak = res.peak_rss_mb * 2**20 / 1e9

    print(f"\npair: {args.layers} layers × 7 matrices at width {args.width} (MLP {args.intermediate}), bfloat16, "
          f"{pair_gb:.2f} GB on disk together")
    how = "enforced (cgroup v1 memory limit)" if cap.enforced else "NOT enforced (no writable cgroup here): RSS only"
    print(f"memory cap: {args.mem_cap_gb:.2f} GB, {how}; times the cap was hit (reclaim): {failcnt}; "
          f"page cache dropped before the run: {'yes' if dropped else 'no (not permitted here)'}")
    print(f"\n{'matrix shape':<16}{'count':>7}{'median s':>10}{'max s':>8}")
    modules["shape"] = modules["rows"].astype(str) + "×" + modules["cols"].astype(str)
    for shape, grp in modules.groupby("shape"):
        print(f"{shape:<16}{len(grp):>7}{grp['seconds'].median():>10.2f}{grp['seconds'].max():>8.2f}")
    print(f"\ntotal wall time: {res.seconds:.1f} s for {len(modules)} matrices "
          f"({modules['seconds'].sum():.1f} s in per-matrix work)")
    print(f"peak RSS: {peak:.2f} GB; target 1.5 GB + 3 × {largest:.3f} GB = {target:.2f} GB: "
          f"{'met' if peak < target else 'MISSED'}")
    rank90 = modules["rank_90"].median()
    print(f"median rank_90 of the planted rank-{args.update_rank} updates: {rank90:.0f}")


if __name__ == "__main__":
    main()
