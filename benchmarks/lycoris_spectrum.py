"""Spectra of Mistral-7B-shaped LyCORIS LoKr and LoHa files: lorascope's factored routes vs dense ΔW.

    python benchmarks/lycoris_spectrum.py [--layers 32] [--rank 8] [--repeats 3] [--dense-layers 1]
                                         [--dense-repeats 1]

Builds two synthetic single-file adapters in LyCORIS's kohya naming
(``lycoris_model_layers_<i>_<module>.<part>``, fp16, with ``.alpha``) for 32 layers × q, k, v, o, gate, up,
down at Mistral-7B's shapes (hidden 4096, 8 KV heads of 128 → k/v 1024 wide, MLP 14336) — 224 modules each:

- LoKr: W1 full and W2 a rank-r pair, the factors split as LyCORIS does with ``factor=-1`` (the divisor
  pair of each dimension closest to its square root: 4096 = 64·64, 1024 = 32·32, 14336 = 112·128),
  ΔW = s·W1 ⊗ W2.
- LoHa: ΔW = s·(W1a W1b) ⊙ (W2a W2b), both pairs of rank r.

Then, per adapter and per approach, the whole process (python start-up and imports included, a separate
subprocess): wall time (median of --repeats) and peak RSS.

- lorascope: ``lorascope spectrum FILE -q --no-report`` (LoKr: Kronecker route, σ = s·σᵢ(W1)σⱼ(W2); LoHa:
  Khatri–Rao low-rank route, QR of (m, r²) and (n, r²) factors).
- dense: a script that forms each ΔW in float32 (``torch.kron``; the Hadamard product of two products) and
  calls ``torch.linalg.svdvals`` — over the first --dense-layers layers only (all 224 modules take hours on
  a laptop CPU), its SVD time extrapolated per module type to every layer.

Accuracy: the largest error of lorascope's singular values relative to σ1, against a float64 dense SVD of
the ΔW formed from the file's own factors, for the modules --ref-modules names in layer 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import MISTRAL_7B_SHAPES as SHAPES  # noqa: E402
from measure import median_run, start_launcher, which  # noqa: E402


def split(dim: int) -> tuple[int, int]:
    """(a, b), a·b = dim, a the largest divisor ≤ √dim (LyCORIS ``factorization`` with factor=-1)."""
    a = max(d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0)
    return a, dim // a


def stem(layer: int, module: str) -> str:
    return f"lycoris_model_layers_{layer}_{module.replace('.', '_')}"


def build(folder: Path, algo: str, layers: int, rank: int, alpha: float) -> Path:
    """A LoKr or LoHa file in LyCORIS's naming; factors fp16, decaying spectra as trained adapters have."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    decay = torch.logspace(0, -2, rank)
    tensors = {}
    for i in range(layers):
        for mod, (out, inp) in SHAPES.items():
            key = stem(i, mod)
            if algo == "lokr":
                (a, b), (c, d) = split(out), split(inp)
                tensors[f"{key}.lokr_w1"] = torch.randn(a, c, generator=gen) / c**0.5
                tensors[f"{key}.lokr_w2_a"] = torch.randn(b, rank, generator=gen) * decay * 0.05
                tensors[f"{key}.lokr_w2_b"] = torch.randn(rank, d, generator=gen) / d**0.5
            else:
                for h in (1, 2):
                    tensors[f"{key}.hada_w{h}_a"] = torch.randn(out, rank, generator=gen) * decay * 0.05
                    tensors[f"{key}.hada_w{h}_b"] = torch.randn(rank, inp, generator=gen) / inp**0.5
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{algo}.safetensors"
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, str(path))
    return path


def dense_update(sd: dict, key: str, dtype: torch.dtype) -> torch.Tensor:
    """ΔW formed densely from the file's factors (the approach lorascope avoids), in ``dtype``."""

    def get(part):
        return sd[f"{key}.{part}"].to(dtype)

    if f"{key}.lokr_w1" in sd:
        rank = sd[f"{key}.lokr_w2_b"].shape[0]
        w2 = get("lokr_w2_a") @ get("lokr_w2_b")  # (b, r) @ (r, d)
        return float(sd[f"{key}.alpha"]) / rank * torch.kron(get("lokr_w1"), w2)
    rank = sd[f"{key}.hada_w1_b"].shape[0]
    return (
        float(sd[f"{key}.alpha"])
        / rank
        * (get("hada_w1_a") @ get("hada_w1_b"))
        * (get("hada_w2_a") @ get("hada_w2_b"))
    )


def dense_worker(path: str, layers: int, out: str) -> None:
    """Child process: form each ΔW in float32 and take svdvals, for the first ``layers`` layers."""
    import time

    from safetensors.torch import load_file

    sd = load_file(path)
    seconds = {}
    for i in range(layers):
        for mod in SHAPES:
            start = time.perf_counter()
            torch.linalg.svdvals(dense_update(sd, stem(i, mod), torch.float32))
            seconds[f"{i}.{mod}"] = time.perf_counter() - start
    Path(out).write_text(json.dumps(seconds))


def reference(path: Path, modules: list[str]) -> dict[str, np.ndarray]:
    """float64 dense SVDs of layer 0's ``modules``, formed from the file's own factors."""
    from safetensors.torch import load_file

    from lorascope.checkpoint.lora_files import kohya_name  # the name lorascope gives a kohya-style stem

    sd = load_file(str(path))
    return {
        kohya_name(stem(0, mod)): np.linalg.svd(
            dense_update(sd, stem(0, mod), torch.float64).numpy(), compute_uv=False
        )
        for mod in modules
    }


def max_err(out: Path, ref: dict[str, np.ndarray]) -> float:
    """max |σᵢ − σᵢ_ref| / σ1_ref over the reference modules (σ lorascope did not store count as 0)."""
    from safetensors.numpy import load_file

    got = load_file(str(out / "singular_values.safetensors"))
    worst = 0.0
    for name, want in ref.items():
        g = np.zeros_like(want)
        vals = got[name][: len(want)]
        g[: len(vals)] = vals
        worst = max(worst, float(np.max(np.abs(g - want)) / want[0]))
    return worst


def measure(algo: str, path: Path, work: Path, args, ref_modules: list[str]) -> list[tuple]:
    rows = []
    lorascope_cmd = which("lorascope") or "lorascope"
    out = work / f"{algo}-out"
    med, _ = median_run(
        [lorascope_cmd, "spectrum", str(path), "--out", str(out), "-q", "--no-report"], args.repeats
    )
    ref = reference(path, ref_modules)
    rows.append((f"{algo}: lorascope", med.seconds, "measured", med.peak_rss_mb, max_err(out, ref)))
    timing = work / f"{algo}-dense.json"
    med, _ = median_run(
        [sys.executable, __file__, "--dense-worker", str(path), str(args.dense_layers), str(timing)],
        max(1, args.dense_repeats),  # the per-module times read below are those of the last run
    )
    per_module = json.loads(timing.read_text())
    by_type = {mod: float(np.mean([t for k, t in per_module.items() if k.endswith(mod)])) for mod in SHAPES}
    total = med.seconds - sum(per_module.values()) + sum(by_type.values()) * args.layers
    rows.append(
        (
            f"{algo}: dense ΔW + svdvals (float32)",
            total,
            f"extrapolated from {args.dense_layers} layer(s)",
            med.peak_rss_mb,
            float("nan"),
        )
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8, help="r of LoKr's W2 pair and of both LoHa pairs")
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dense-layers", type=int, default=1, help="layers the dense baseline runs on (then extrapolated)"
    )
    ap.add_argument(
        "--dense-repeats", type=int, default=1, help="runs of the slow dense baseline (median kept)"
    )
    ap.add_argument(
        "--ref-modules",
        default="self_attn.k_proj,self_attn.v_proj",
        help="layer-0 modules with a float64 dense reference (comma-separated)",
    )
    ap.add_argument("--algos", default="lokr,loha")
    ap.add_argument(
        "--work", type=Path, default=None, help="folder for the files and outputs (default: temporary)"
    )
    ap.add_argument("--dense-worker", nargs=3, metavar=("FILE", "LAYERS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dense_worker:
        dense_worker(args.dense_worker[0], int(args.dense_worker[1]), args.dense_worker[2])
        return
    start_launcher()
    work = args.work or Path(tempfile.mkdtemp(prefix="lorascope-bench-"))
    ref_modules = [m for m in args.ref_modules.split(",") if m]
    rows = []
    for algo in args.algos.split(","):
        path = build(work, algo, args.layers, args.rank, args.alpha)
        print(
            f"{algo}: {args.layers * len(SHAPES)} modules, r={args.rank}, fp16, "
            f"{path.stat().st_size / 2**20:.0f} MiB at {path}",
            flush=True,
        )
        rows += measure(algo, path, work, args, ref_modules)
    print(
        f"\nwhole-process wall time (median of {args.repeats}), peak RSS, max |σ − σ_ref| / σ1 "
        f"against float64 dense "
        f"SVDs of layer 0's {', '.join(ref_modules)}\n"
    )
    print(f"{'approach':<40}{'wall s':>10}  {'how':<28}{'peak RSS MiB':>13}{'max σ err':>12}")
    for name, secs, how, rss, err in rows:
        print(f"{name:<40}{secs:>10.2f}  {how:<28}{rss:>13.0f}{err:>12.1e}")
    for i in range(0, len(rows), 2):
        print(
            f"{rows[i][0].split(':')[0]}: lorascope is {rows[i + 1][1] / rows[i][1]:.0f}x faster than dense"
        )


if __name__ == "__main__":
    main()
