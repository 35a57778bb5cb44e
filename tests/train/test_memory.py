"""lorascope/train/memory.py: the peak resident memory of a run, from the kernel's own counters."""

import resource
import sys

import torch

from lorascope.train.memory import peak, reset_peak


def test_peak_covers_memory_touched_since_the_reset():
    cpu = torch.device("cpu")
    was_reset = reset_peak(cpu)
    block = torch.ones(32 << 20, dtype=torch.uint8)  # 32 MiB touched
    block += 1
    got = peak(cpu, was_reset)
    assert got["peak_rss_scope"] in ("run", "process") and got["peak_rss_bytes"] >= 32 << 20
    if sys.platform.startswith("linux"):
        # the process-wide high-water mark never reads lower than the per-run one
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 >= got["peak_rss_bytes"] - (8 << 20)
    del block
