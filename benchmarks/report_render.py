"""Time `lorascope report` on synthetic results of 14, 224 and about 600 modules, adapter and full-diff, and
what rendering adds to a process that only loads the results.

Each case renders in a fresh process (imports included, as a user runs it) from a results folder written
beforehand. Beside it, the baseline is the same fresh process without the rendering: it imports
``lorascope.report``, reads the results folder (modules table, spectra, summary) and exits. The table shows
the median wall and CPU time of ``--repeat`` runs of each, and what rendering adds (render − baseline,
medians); CPU time is steadier than wall time where other work shares the machine. The load average is
printed before and after. The issue's goal: rendering adds at most 1.5 s for a 224-module adapter on a
2-core machine.

Children run with their bytecode cached (``PYTHONPYCACHEPREFIX`` in a temporary folder, after one warm-up
run per case), as an installed copy runs after its first use; ``--no-pyc-cache`` leaves the environment's
setting alone (with ``PYTHONDONTWRITEBYTECODE=1`` every run then compiles lorascope's modules again).

    python benchmarks/report_render.py [--repeat 3] [--keep DIR] [--no-pyc-cache] [--case N ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from report.synthetic import llama_like  # the tests' builder of planted spectra

# (label, layers of 7 Llama module types, kind, hidden size: spectra of dense updates are up to this long)
CASES = [
    ("14 modules, adapter r=16", 2, "adapter", 4096),
    ("224 modules, adapter r=16 (Mistral-7B shapes)", 32, "adapter", 4096),
    ("224 modules, full-diff (σ up to 1024)", 32, "full-diff", 1024),
    ("602 modules, adapter r=16 (86 layers)", 86, "adapter", 8192),
    ("602 modules, full-diff (σ up to 8192, Llama-2-70B widths)", 86, "full-diff", 8192),
]
RENDER = "from lorascope.report import render_report; import sys; render_report(sys.argv[1])"
# the same process up to the rendering: the package imported, the results folder read
BASELINE = (
    "from lorascope.report import render_report; from lorascope.results import load_results; import sys; "
    "load_results(sys.argv[1])"
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_seconds(code: str, folder: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one fresh process running ``code`` on ``folder``."""
    start, cpu0 = time.perf_counter(), children_cpu()
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, env=env)
    return time.perf_counter() - start, children_cpu() - cpu0


def median_seconds(code: str, folder: Path, repeat: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeat`` fresh processes (each median on its own)."""
    runs = [run_seconds(code, folder, env) for _ in range(repeat)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def child_env(pyc_cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if pyc_cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pyc_cache)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the results folders and reports here")
    ap.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="leave the environment's bytecode setting alone (no cache folder, no warm-up run)",
    )
    ap.add_argument(
        "--case", type=int, action="append", default=None, help="run only this case (0-based row; repeatable)"
    )
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="lorascope-report-bench-"))
    pyc = None if args.no_pyc_cache else Path(tempfile.mkdtemp(prefix="lorascope-report-bench-pyc-"))
    env = child_env(pyc)
    load_before = os.getloadavg()
    print(
        "| case | modules | wall s (median) | CPU s | baseline wall s | baseline CPU s | added wall s "
        "| added CPU s | report.html MiB | figures KiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, (label, layers, kind, hidden) in enumerate(CASES):
        if args.case is not None and i not in args.case:
            continue
        folder = base / f"case{i}"
        results = llama_like(layers, kind=kind, hidden=hidden, r=16)
        results.save(folder)
        if pyc is not None:  # compile every module once, so no timed run pays for it
            run_seconds(RENDER, folder, env)
        wall, cpu = median_seconds(RENDER, folder, args.repeat, env)
        base_wall, base_cpu = median_seconds(BASELINE, folder, args.repeat, env)
        html_mib = (folder / "report.html").stat().st_size / 2**20
        fig_kib = sum(p.stat().st_size for p in (folder / "figures").glob("*.png")) / 1024
        print(
            f"| {label} | {len(results.modules)} | {wall:.2f} | {cpu:.2f} | {base_wall:.2f} | {base_cpu:.2f} "
            f"| {wall - base_wall:.2f} | {cpu - base_cpu:.2f} | {html_mib:.2f} | {fig_kib:.0f} |",
            flush=True,
        )
    load_after = os.getloadavg()
    print(
        f"\nfresh processes, median of {args.repeat}; bytecode "
        f"{'as the environment sets it' if pyc is None else 'cached'}; load average {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs (wall times stretch when the load "
        "exceeds the CPUs; CPU times do not)"
    )
    if args.keep:
        print(f"reports kept under {base}")


if __name__ == "__main__":
    main()
