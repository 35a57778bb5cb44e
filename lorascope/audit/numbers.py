"""Owns the audit's own human-readable numbers: claimed counts and percentages (``33M``, ``0.45%``) and layer
lists (``0-15``) read, counts printed with their short form (``4,194,304 (4.19M)``). Counts and byte sizes
are parsed and shortened by ``lorascope.units``, as in every command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .. import units
from ..errors import LorascopeError

MAX_LAYERS = 100_000


def parse_count(value: str | int | float, where: str = "claim") -> int:
    """A parameter count from ``33M``, ``4.2B``, ``1,234,567``, ``7e9`` or a number (``units.parse_count``).

    Raises:
        LorascopeError: the value is not a positive, finite, whole number with an optional k/M/B/T suffix.
    """
    try:
        return units.parse_count(value, where)
    except ValueError as exc:
        raise LorascopeError(str(exc)) from None


def parse_percent(value: str | int | float, where: str = "percent claim") -> float:
    """A percentage from ``0.45`` or ``0.45%`` (both mean 0.45 %).

    Raises:
        LorascopeError: the value is not a number above 0 and at most 100.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%?\s*", str(value))
    if isinstance(value, bool) or (m is None and not isinstance(value, (int, float))):
        raise LorascopeError(f"{where} {value!r} is not a percentage; expected e.g. 0.45 or 0.45%.")
    number = float(value if isinstance(value, (int, float)) else m[1])
    if not math.isfinite(number) or not 0 < number <= 100:
        raise LorascopeError(
            f"{where} {value!r} must lie above 0 and at most 100 (a percentage, 0.45 means 0.45 %)."
        )
    return number


def both(n: int) -> str:
    """A count exactly and in short: ``4,194,304 (4.19M)``; below 1000 exactly."""
    return f"{int(n):,} ({units.human_count(n)})" if abs(n) >= 1000 else f"{int(n):,}"


def parse_layers(value: str | int | list | tuple | None, where: str = "--layers") -> tuple[int, ...] | None:
    """Layer indices from ``0-15``, ``0,2,4-7``, an int or a list; None stays None.

    Raises:
        LorascopeError: anything else, a range that runs backwards, or an index beyond any model.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise LorascopeError(f"{where} {value!r} is not a layer list; expected e.g. 0-15 or 0,2,4-7.")
    items = [value] if isinstance(value, int) else value if isinstance(value, (list, tuple)) else str(value)
    out: list[int] = []
    for text in (str(item).strip() for item in (items.split(",") if isinstance(items, str) else items)):
        if (m := re.fullmatch(r"(\d+)\s*(?:[-–:]\s*(\d+))?", text)) is None:
            expected = "expected e.g. 0-15 or 0,2,4-7"
            raise LorascopeError(f"{where} {value!r}: {text!r} is not a layer index or range; {expected}.")
        first, last = int(m[1]), int(m[2] or m[1])
        if last >= MAX_LAYERS:
            beyond = f"layer {last} is beyond any model (indices below {MAX_LAYERS:,})"
            raise LorascopeError(f"{where} {value!r}: {beyond}.")
        if last < first:
            raise LorascopeError(f"{where} {value!r}: the range {text} runs backwards; write {last}-{first}.")
        out.extend(range(first, last + 1))
    if not out:
        raise LorascopeError(f"{where} {value!r} names no layers.")
    return tuple(sorted(set(out)))


def format_ranges(layers: Iterable[int]) -> str:
    """Layer indices as compact ranges: (0, 1, 2, 5) -> '0-2,5'."""
    runs: list[list[int]] = []
    for i in sorted(layers):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
