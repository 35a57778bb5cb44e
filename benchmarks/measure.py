"""Whole-process measurements for the benchmarks: wall time and peak RSS of a child, optionally under a
memory cap."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str


class MemoryCap:
    """A cgroup-v1 memory limit for child processes, where this machine lets us make one (root, v1 memory
    controller).

    The kernel reclaims page cache inside the limit and kills the child if its own memory exceeds it, so a
    run that finishes under the cap really fitted in it. ``enforced`` is False where no cgroup can be made.
    """

    def __init__(self, limit_bytes: int | None):
        self.limit = limit_bytes
        self.path: Path | None = None
        if limit_bytes and CGROUP_V1.is_dir() and os.access(CGROUP_V1, os.W_OK):
            path = CGROUP_V1 / f"lorascope-bench-{os.getpid()}"
            try:
                path.mkdir(exist_ok=True)
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                self.path = path
            except OSError:
                self.path = None

    @property
    def enforced(self) -> bool:
        return self.path is not None

    def failcnt(self) -> int:
        return int((self.path / "memory.failcnt").read_text()) if self.path else 0

    def close(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError:
                pass


# A small process that starts the measured commands. A child's peak RSS (ru_maxrss) starts from the
# size of the process it was forked from, so commands are forked from this launcher (a few MiB), never
# from the benchmark itself, which may hold gigabytes of reference data.
# Mistral-7B's linear layers, module -> (out, in): hidden 4096, 8 KV heads of 128 (k/v 1024 wide), MLP 14336
MISTRAL_7B_SHAPES = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}

_LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    cg = req.get("cgroup")
    def enter():
        if cg:
            with open(os.path.join(cg, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
    start = time.perf_counter()
    p = subprocess.Popen(
        req["cmd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=enter
    )
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": time.perf_counter() - start, "maxrss_kb": usage.ru_maxrss,
                      "rc": p.returncode, "out": out[-20000:]}), flush=True)
"""
_launcher: subprocess.Popen | None = None


def start_launcher() -> None:
    """Start the launcher now, while this process is still small (call first thing in main)."""
    global _launcher
    if _launcher is None:
        import sys

        _launcher = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )


def run(cmd: list[str], cap: MemoryCap | None = None) -> Run:
    """Run ``cmd`` once; peak RSS is that child's own maximum resident set (from wait4)."""
    import json

    start_launcher()
    assert _launcher is not None and _launcher.stdin and _launcher.stdout
    cgroup = str(cap.path) if cap is not None and cap.enforced else None
    _launcher.stdin.write(json.dumps({"cmd": cmd, "cgroup": cgroup}) + "\n")
    _launcher.stdin.flush()
    res = json.loads(_launcher.stdout.readline())
    return Run(res["seconds"], res["maxrss_kb"] / 1024, res["rc"], res["out"])


def median_run(cmd: list[str], repeats: int, cap: MemoryCap | None = None) -> tuple[Run, list[Run]]:
    runs = [run(cmd, cap) for _ in range(repeats)]
    for r in runs:
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.output[-2000:]}")
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2], runs


def which(name: str, extra: str | None = None) -> str | None:
    return extra if extra and Path(extra).exists() else shutil.which(name)
