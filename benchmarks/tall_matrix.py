"""A tall full diff (an embedding-sized 131072×1024 float32 pair, 512 MiB each): memory that does not grow
with it.

    python benchmarks/tall_matrix.py [--rows 131072] [--cols 1024] [--repeats 3] [--work DIR]

Writes base W ~ N(0, 1/cols) and tuned = W + ΔW in float32, ΔW = U diag(σ) Vᵀ with planted σ (geometric,
1 down to 1e-3) and U = [D₁H; …; D_kH]/√k (H a random orthogonal 1024×1024, Dⱼ random signs: orthonormal
columns without a 131072-row QR), then measures whole processes — wall time (median of --repeats) and peak
RSS:

- lorascope spectrum BASE TUNED (defaults: ΔW streamed in row blocks through a float64 Gram matrix), and with
  --memory 768M;
- the plain loop: (tuned.float() − base.float()) and torch.linalg.svdvals;
- a pair of headers claiming 60000×60000 float32 tensors (sparse files, 13.4 GiB each): lorascope must refuse
  it from the header, naming the memory it would need, without reading.

Accuracy: lorascope's σ (float64, through the API) against a float64 LAPACK SVD of the stored ΔW (the exact
reference; float32 storage rounds the planted values by about 1e-7 of σ1), as a fraction of σ1.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import median_run, run, start_launcher, which  # noqa: E402

KEY = "model.embed_tokens.weight"


def planted_sigma(cols: int) -> np.ndarray:
    return np.geomspace(1.0, 1e-3, cols)


def write_pair(work: Path, rows: int, cols: int) -> tuple[Path, Path]:
    """base.safetensors and tuned.safetensors (float32), written block by block (never a float64
    rows×cols)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    k = rows // cols
    h, _ = np.linalg.qr(rng.standard_normal((cols, cols)))  # (cols, cols) orthogonal
    v, _ = np.linalg.qr(rng.standard_normal((cols, cols)))
    right = planted_sigma(cols)[:, None] * v.T  # diag(σ) Vᵀ: (cols, cols)
    base = np.empty((rows, cols), dtype=np.float32)
    tuned = np.empty((rows, cols), dtype=np.float32)
    for j in range(k):
        signs = rng.choice([-1.0, 1.0], size=cols)[:, None]
        block = (signs * h) @ right / np.sqrt(k)  # rows j·cols … (j+1)·cols of U diag(σ) Vᵀ
        w = rng.standard_normal((cols, cols)) / np.sqrt(cols)
        base[j * cols : (j + 1) * cols] = w
        tuned[j * cols : (j + 1) * cols] = w + block
    b, t = work / "base.safetensors", work / "tuned.safetensors"
    save_file({KEY: base}, str(b))
    del base
    save_file({KEY: tuned}, str(t))
    return b, t


def claim_huge(work: Path, n: int = 60000) -> tuple[Path, Path]:
    """Two safetensors files whose headers claim an n×n float32 tensor; the data is a hole (a sparse file)."""
    paths = []
    for name in ("huge-base", "huge-tuned"):
        header = json.dumps({KEY: {"dtype": "F32", "shape": [n, n], "data_offsets": [0, n * n * 4]}}).encode()
        path = work / f"{name}.safetensors"
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            fh.truncate(8 + len(header) + n * n * 4)
        paths.append(path)
    return paths[0], paths[1]


def plain_worker(base: str, tuned: str) -> None:
    """Child process: the plain loop — float32 ΔW and torch.linalg.svdvals."""
    import torch
    from safetensors.torch import load_file

    dw = load_file(tuned)[KEY].float() - load_file(base)[KEY].float()
    s = torch.linalg.svdvals(dw)
    print(f"σ1 {float(s[0]):.6f}")


def reference(base: Path, tuned: Path, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    from safetensors.numpy import load_file

    dw = load_file(str(tuned))[KEY].astype(np.float64)
    dw -= load_file(str(base))[KEY]
    s = np.linalg.svd(dw, compute_uv=False)
    np.save(cache, s)
    return s


def main() -> None:
    start_launcher()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=131072)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--plain-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_worker:
        plain_worker(*args.plain_worker)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="lorascope-tall-"))
    work.mkdir(parents=True, exist_ok=True)
    base, tuned = work / "base.safetensors", work / "tuned.safetensors"
    if not tuned.exists():
        print(f"writing the {args.rows}×{args.cols} float32 pair to {work} …", flush=True)
        write_pair(work, args.rows, args.cols)
    ref = reference(base, tuned, work / "reference-float64.npy")
    planted = planted_sigma(args.cols)

    import lorascope

    res = lorascope.analyze(base, tuned, device="cpu")
    got = res.spectrum(KEY.removesuffix(".weight"))
    floor = float(res.modules["sigma_floor"].iloc[0])
    method = res.modules["method"].iloc[0]
    load_before = os.getloadavg()

    cmd = which("lorascope") or "lorascope"
    rows = []
    for label, extra in (
        ("lorascope (default budget)", []),
        ("lorascope --memory 768M", ["--memory", "768M"]),
    ):
        med, runs = median_run(
            [
                cmd,
                "spectrum",
                str(base),
                str(tuned),
                "--out",
                str(fresh(work / "out")),
                "-q",
                "--no-report",
                "--device",
                "cpu",
                *extra,
            ],
            args.repeats,
        )
        rows.append((label, med.seconds, med.peak_rss_mb, [r.seconds for r in runs]))
    med, runs = median_run([sys.executable, __file__, "--plain-worker", str(base), str(tuned)], args.repeats)
    rows.append(
        ("plain loop (float32 ΔW, torch svdvals)", med.seconds, med.peak_rss_mb, [r.seconds for r in runs])
    )
    gpu = _gpu_name()
    if gpu:  # on a GPU the matrix is read whole (host RSS grows with it) and decomposed there
        med, runs = median_run(
            [
                cmd,
                "spectrum",
                str(base),
                str(tuned),
                "--out",
                str(fresh(work / "out-gpu")),
                "-q",
                "--no-report",
                "--device",
                "cuda",
            ],
            args.repeats,
        )
        rows.append(
            (f"lorascope --device cuda ({gpu})", med.seconds, med.peak_rss_mb, [r.seconds for r in runs])
        )
    else:
        print("no CUDA GPU visible to torch: the GPU row is omitted")

    hb, ht = claim_huge(work)
    huge = run(
        [
            cmd,
            "spectrum",
            str(hb),
            str(ht),
            "--out",
            str(fresh(work / "out-huge")),
            "-q",
            "--no-report",
            "--device",
            "cpu",
            "--memory",
            "8G",
        ]
    )
    load_after = os.getloadavg()

    print(
        f"\n{args.rows}×{args.cols} float32 pair ({2 * args.rows * args.cols * 4 / 2**20:.0f} MiB together); "
        f"whole process, median of {args.repeats}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after, on {os.cpu_count()} CPUs\n"
    )
    print(f"{'run':<42}{'wall s':>8}{'peak RSS MiB':>14}   runs (s)")
    for label, secs, rss, times in rows:
        print(f"{label:<42}{secs:>8.2f}{rss:>14.0f}   {' '.join(f'{t:.1f}' for t in times)}")
    refused = huge.returncode == 2 and "needs at least" in huge.output
    print(
        f"{'60000×60000 claimed in a header, --memory 8G':<42}"
        f"{huge.seconds:>8.2f}{huge.peak_rss_mb:>14.0f}   "
        f"exit {huge.returncode}: {'refused' if refused else 'NOT refused'}"
    )
    print(f"  {huge.output.strip().splitlines()[-1][:300] if huge.output.strip() else ''}")
    print(f"\nlorascope route: {method}; floor {floor:.2e} ({floor / ref[0]:.1e} of σ1)")
    print(
        "max |σ − σ64| / σ1 against float64 LAPACK of the stored ΔW: "
        f"{np.max(np.abs(got - ref)) / ref[0]:.1e}"
    )
    print(
        "max |σ − planted| / σ1 (includes float32 storage rounding): "
        f"{np.max(np.abs(got - planted)) / planted[0]:.1e}"
    )
    print(
        "max |σ64 − planted| / σ1 (the storage rounding alone): "
        f"{np.max(np.abs(ref - planted)) / planted[0]:.1e}"
    )


def fresh(folder: Path) -> Path:
    """An output folder emptied of an earlier run's results (a stale folder from another version is
    refused)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        return None


if __name__ == "__main__":
    main()
