"""Peak memory of one stretch of work: resident set size on Linux, allocated bytes on CUDA.

On Linux, writing 5 to /proc/self/clear_refs resets the process's resident high-water mark (VmHWM), so a
run inside a sweep reports its own peak rather than the largest of all runs before it. Elsewhere the
process-wide maximum (``ru_maxrss``) is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; returns whether the RSS peak could be reset (else it is process-wide)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak(device: torch.device, was_reset: bool) -> dict[str, int | str]:
    """Peak resident bytes since ``reset_peak`` (and peak CUDA bytes allocated on a GPU)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        out: dict[str, int | str] = {
            "peak_rss_bytes": hwm * 1024,
            "peak_rss_scope": "run" if was_reset else "process",
        }
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        out = {
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "peak_rss_scope": "process",
        }
    if device.type == "cuda":
        out["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
