"""Time `lorascope report` on synthetic results of 14, 224 and about 600 modules, adapter and full-diff.

Each case renders in a fresh process (imports included, as a user runs it) from a results folder
written beforehand, and the table shows the median wall time of ``--repeat`` runs, the page size and
the size of the PNGs, with the CPU time beside the wall time (steadier where other work shares the machine).
The issue's target: 224 modules in under 15 s on a 2-core machine.

    python benchmarks/report_render.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def render_seconds(folder: Path, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of rendering in a fresh process (CPU time is steadier on a busy
    machine)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, cpu0 = time.perf_counter(), children_cpu()
        subprocess.run([sys.executable, "-c", RENDER, str(folder)], check=True)
        wall.append(time.perf_counter() - start)
        cpu.append(children_cpu() - cpu0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the results folders and reports here")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="lorascope-report-bench-"))
    print("| case | modules | wall s (median) | CPU s | report.html MiB | figures KiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, (label, layers, kind, hidden) in enumerate(CASES):
        folder = base / f"case{i}"
        results = llama_like(layers, kind=kind, hidden=hidden, r=16)
        results.save(folder)
        seconds, cpu = render_seconds(folder, args.repeat)
        html_mib = (folder / "report.html").stat().st_size / 2**20
        fig_kib = sum(p.stat().st_size for p in (folder / "figures").glob("*.png")) / 1024
        print(
            f"| {label} | {len(results.modules)} | {seconds:.2f} | {cpu:.2f} | {html_mib:.2f} "
            f"| {fig_kib:.0f} |",
            flush=True,
        )
    if args.keep:
        print(f"\nreports kept under {base}")


if __name__ == "__main__":
    main()
