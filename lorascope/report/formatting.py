"""How numbers read on the page: table cells, byte sizes, parameter counts, durations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..units import human_bytes, human_count  # noqa: F401 - the page prints numbers as lorascope.units does


def is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def cell(v: Any) -> str:
    """A table cell: empty for missing, integers in full, floats to 4 significant digits.

    Plain digits only (no thousands separators), so the page's sort reads them as numbers.
    """
    if is_missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def counted(n: Any, noun: str, plural: str | None = None) -> str:
    """'1 intruder dimension', '3 intruder dimensions': a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def seconds(s: Any) -> str:
    if is_missing(s):
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def plain(v: Any) -> str:
    """Any option or version value as short text."""
    if is_missing(v):
        return "–"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(plain, v)) or "–"
    if isinstance(v, dict):
        return ", ".join(f"{k}={plain(x)}" for k, x in v.items()) or "–"
    return str(v)
