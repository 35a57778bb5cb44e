"""Full-diff spectra side by side: lorascope against the plain float32 loop a user would write, and
WeightWatcher.

    python benchmarks/full_diff.py [--repeats 3] [--modules self_attn.q_proj,mlp.up_proj] [--layers 1]
                                   [--work DIR]

Writes a Llama-2-7B-shaped pair (bfloat16, W ~ N(0, 1/n), ΔW = a rank-64 signal plus small noise; by default
the two matrices the issue measured, q_proj 4096×4096 and up_proj 11008×4096), then measures each tool as a
whole process (start-up and imports included): wall time (median of --repeats), peak RSS, and the largest
error of its singular values against a float64 LAPACK SVD of the same ΔW, as a fraction of σ1.

- lorascope: `lorascope spectrum BASE TUNED -q --no-report` (defaults: float64, ΔW streamed in row blocks
  through a float64 Gram matrix), and with `--workers 2`. Its σ error is taken from the same computation
  through the Python API, in float64 (singular_values.safetensors stores float32, 6e-8 relative).
- plain loop: safetensors → (tuned.float() − base.float()) → torch.linalg.svdvals, one matrix at a time.
- WeightWatcher: `WeightWatcher().analyze(model=TUNED, base_model=BASE)` (its ΔW analysis), where it is
  installed.
- On a GPU (when torch sees one): lorascope --device cuda and the plain loop on cuda.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import median_run, start_launcher, which  # noqa: E402

ALL_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def shapes(
    width: int, intermediate: int, modules: tuple[str, ...] = ALL_MODULES
) -> dict[str, tuple[int, int]]:
    every = {
        "self_attn.q_proj": (width, width),
        "self_attn.k_proj": (width, width),
        "self_attn.v_proj": (width, width),
        "self_attn.o_proj": (width, width),
        "mlp.gate_proj": (intermediate, width),
        "mlp.up_proj": (intermediate, width),
        "mlp.down_proj": (width, intermediate),
    }
    return {m: every[m] for m in modules}


def write_pair(
    root: Path,
    width: int,
    intermediate: int,
    layers: int,
    update_rank: int,
    modules: tuple[str, ...] = ALL_MODULES,
) -> tuple[Path, Path]:
    """Base W ~ N(0, 1/width) and tuned W + ΔW, ΔW = rank-`update_rank` signal + small noise; shard per
    layer."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base_dir, tuned_dir = root / "base", root / "tuned"
    for folder in (base_dir, tuned_dir):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "llama",
                    "hidden_size": width,
                    "intermediate_size": intermediate,
                    "num_hidden_layers": layers,
                }
            )
        )
    weight_map = {}
    for i in range(layers):
        shard = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        base, tuned = {}, {}
        for mod, (out, inp) in shapes(width, intermediate, modules).items():
            key = f"model.layers.{i}.{mod}.weight"
            w = torch.randn(out, inp, generator=gen) / inp**0.5
            signal = (
                torch.randn(out, update_rank, generator=gen) @ torch.randn(update_rank, inp, generator=gen)
            ) * 1e-3
            dw = signal + torch.randn(out, inp, generator=gen) * 1e-5
            base[key] = w.bfloat16()
            tuned[key] = (w + dw).bfloat16()
            weight_map[key] = shard
        save_file(base, str(base_dir / shard))
        save_file(tuned, str(tuned_dir / shard))
        del base, tuned
    for folder in (base_dir, tuned_dir):
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    return base_dir, tuned_dir


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def pair_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark on a synthetic pair shares."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--update-rank", type=int, default=64)
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the pair (default: temporary; reused if it holds one)",
    )
    return ap


def ensure_pair(args: argparse.Namespace, prefix: str, modules: tuple[str, ...] = ALL_MODULES) -> Path:
    """The folder holding base/ and tuned/, written unless --work already holds them."""
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    if not (work / "tuned" / "model.safetensors.index.json").exists():
        print(f"writing the pair to {work} …", flush=True)
        write_pair(work, args.width, args.intermediate, args.layers, args.update_rank, modules)
    return work


# ---- the tools ------------------------------------------------------------------------------------------


def plain_worker(base: str, tuned: str, out: str, device: str) -> None:
    """Child process: the loop a user would write — float32 ΔW and torch.linalg.svdvals, one matrix at a
    time."""
    import torch
    from safetensors import safe_open

    sigmas = {}
    for shard in sorted(Path(tuned).glob("*.safetensors")):
        with safe_open(str(shard), "pt") as ft, safe_open(str(Path(base) / shard.name), "pt") as fb:
            for key in ft.keys():
                dw = ft.get_tensor(key).to(device).float() - fb.get_tensor(key).to(device).float()
                sigmas[key.removesuffix(".weight")] = torch.linalg.svdvals(dw).double().cpu().numpy()
                del dw
    np.savez(out, **{k.replace(".", "/"): v for k, v in sigmas.items()})


def ww_worker(base: str, tuned: str) -> None:
    """Child process: WeightWatcher's analysis of ΔW = tuned − base (its base_model option)."""
    import weightwatcher as ww

    details = ww.WeightWatcher().analyze(model=tuned, base_model=base)
    print(f"weightwatcher analyzed {len(details)} layer(s)")


def reference(base: Path, tuned: Path, cache: Path) -> dict[str, np.ndarray]:
    """σ of every stored ΔW by float64 LAPACK (numpy), cached in the work folder."""
    if cache.exists():
        data = np.load(cache)
        return {k.replace("/", "."): data[k] for k in data.files}
    from safetensors import safe_open

    out = {}
    for shard in sorted(tuned.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as ft, safe_open(str(base / shard.name), "pt") as fb:
            for key in ft.keys():
                dw = ft.get_tensor(key).double().numpy() - fb.get_tensor(key).double().numpy()
                out[key.removesuffix(".weight")] = np.linalg.svd(dw, compute_uv=False)
                del dw
    np.savez(cache, **{k.replace(".", "/"): v for k, v in out.items()})
    return out


def max_error(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """max over matrices and values of |σ − σ_ref| / σ1_ref."""
    return max(
        float(np.max(np.abs(np.asarray(got[k], np.float64)[: len(v)] - v)) / v[0]) for k, v in ref.items()
    )


def lorascope_sigmas(base: Path, tuned: Path, device: str = "cpu") -> tuple[dict[str, np.ndarray], float]:
    """lorascope's float64 spectra (the API, not the float32 file) and the largest floor / σ1."""
    import lorascope

    res = lorascope.analyze(base, tuned, device=device)
    floor = float((res.modules["sigma_floor"] / res.modules["spectral_norm"]).max())
    return {k: np.asarray(v, np.float64) for k, v in res.spectra.items()}, floor


def fresh(folder: Path) -> Path:
    """An output folder emptied of an earlier run's results (a stale folder from another version is
    refused)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        return None


def main() -> None:
    start_launcher()
    ap = pair_arguments(__doc__)
    ap.set_defaults(layers=1)
    ap.add_argument(
        "--modules",
        default="self_attn.q_proj,mlp.up_proj",
        help=f"comma-separated, from {', '.join(ALL_MODULES)}",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--plain-worker", nargs=4, metavar=("BASE", "TUNED", "OUT", "DEVICE"), help=argparse.SUPPRESS
    )
    ap.add_argument("--ww-worker", nargs=2, metavar=("BASE", "TUNED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_worker:
        plain_worker(*args.plain_worker)
        return
    if args.ww_worker:
        ww_worker(*args.ww_worker)
        return
    modules = tuple(m.strip() for m in args.modules.split(",") if m.strip())
    work = ensure_pair(args, "lorascope-fulldiff-", modules)
    base, tuned = work / "base", work / "tuned"
    shape_text = ", ".join(
        f"{m} {r}×{c}" for m, (r, c) in shapes(args.width, args.intermediate, modules).items()
    )
    print(
        f"pair: {args.layers} layer(s) × ({shape_text}), bfloat16, "
        f"{(folder_bytes(base) + folder_bytes(tuned)) / 2**20:.0f} "
        f"MiB on disk together, at {work}",
        flush=True,
    )
    ref = reference(base, tuned, work / "reference-float64.npz")
    load_before = os.getloadavg()
    rows = []

    lorascope_cmd = which("lorascope") or "lorascope"
    sig, floor = lorascope_sigmas(base, tuned)
    for label, extra in (
        ("lorascope (float64, streamed Gram)", []),
        ("lorascope --workers 2", ["--workers", "2"]),
    ):
        out = fresh(work / ("out-" + "".join(ch if ch.isalnum() else "-" for ch in label)))
        med, runs = median_run(
            [
                lorascope_cmd,
                "spectrum",
                str(base),
                str(tuned),
                "--out",
                str(out),
                "-q",
                "--no-report",
                "--device",
                "cpu",
                *extra,
            ],
            args.repeats,
        )
        rows.append((label, med.seconds, [r.seconds for r in runs], med.peak_rss_mb, max_error(sig, ref)))
    print(
        f"lorascope: largest floor / σ1 {floor:.1e} "
        "(values under it count as zero in the noise-sensitive ranks)"
    )

    npz = work / "plain.npz"
    med, runs = median_run(
        [sys.executable, __file__, "--plain-worker", str(base), str(tuned), str(npz), "cpu"], args.repeats
    )
    data = np.load(npz)
    rows.append(
        (
            "plain loop (float32 ΔW, torch svdvals)",
            med.seconds,
            [r.seconds for r in runs],
            med.peak_rss_mb,
            max_error({k.replace("/", "."): data[k] for k in data.files}, ref),
        )
    )

    try:
        import weightwatcher  # noqa: F401

        med, runs = median_run([sys.executable, __file__, "--ww-worker", str(base), str(tuned)], args.repeats)
        rows.append(
            (
                f"WeightWatcher {weightwatcher.__version__} (base_model)",
                med.seconds,
                [r.seconds for r in runs],
                med.peak_rss_mb,
                None,
            )
        )
    except ImportError:
        rows.append(("WeightWatcher", None, [], None, "not installed"))
    except RuntimeError as exc:
        rows.append(
            ("WeightWatcher (base_model)", None, [], None, f"failed: {str(exc).splitlines()[-1][:60]}")
        )

    gpu = gpu_name()
    if gpu:
        out = fresh(work / "out-gpu")
        gsig, _ = lorascope_sigmas(base, tuned, device="cuda")
        med, runs = median_run(
            [
                lorascope_cmd,
                "spectrum",
                str(base),
                str(tuned),
                "--out",
                str(out),
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
                [r.seconds for r in runs],
                med.peak_rss_mb,
                max_error(gsig, ref),
            )
        )
        med, runs = median_run(
            [sys.executable, __file__, "--plain-worker", str(base), str(tuned), str(npz), "cuda"],
            args.repeats,
        )
        data = np.load(npz)
        rows.append(
            (
                f"plain loop on cuda ({gpu})",
                med.seconds,
                [r.seconds for r in runs],
                med.peak_rss_mb,
                max_error({k.replace("/", "."): data[k] for k in data.files}, ref),
            )
        )
    else:
        print("no CUDA GPU visible to torch: the GPU rows are omitted")

    load_after = os.getloadavg()
    print(
        f"\nwhole process, median of {args.repeats}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after, on {os.cpu_count()} CPUs\n"
    )
    print(f"{'tool':<44}{'wall s':>8}{'peak RSS MiB':>14}{'max |σ − σ64| / σ1':>22}   runs (s)")
    plain = next(r[1] for r in rows if r[0].startswith("plain loop (float32"))
    for label, secs, runs, rss, err in rows:
        err_text = err if isinstance(err, str) else ("–" if err is None else f"{err:.1e}")
        secs_text = "–" if secs is None else f"{secs:.2f}"
        rss_text = "–" if rss is None else f"{rss:.0f}"
        print(f"{label:<44}{secs_text:>8}{rss_text:>14}{err_text:>22}   {' '.join(f'{r:.1f}' for r in runs)}")
    best = rows[0][1]
    print(f"\nlorascope (default) against the plain float32 loop: {plain / best:.2f}× faster")


if __name__ == "__main__":
    main()
