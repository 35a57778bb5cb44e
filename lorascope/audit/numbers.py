"""Owns the audit's human-readable numbers: parse ``33M``, ``4.2B``, ``1,234,567``, ``0.45%``, ``0-15``; print
``33.6M``, ``4,194,304``, ``16.0 MiB``, ``0-2,5`` (counts and byte sizes through ``lorascope.units``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .. import units
from ..errors import LorascopeError

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_COUNT = re.compile(r"\s*(?P<num>[0-9][0-9_,]*(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)\s*(?P<suffix>[kmbgt]?)\s*",
                    re.IGNORECASE)  # fmt: skip
_THOUSANDS = re.compile(r"[0-9]{1,3}(,[0-9]{3})*(\.[0-9]*)?")  # commas only between groups of three
_PERCENT = re.compile(r"\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%?\s*")
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
    """A percentage from ``0.45``, ``0.45%`` (both mean 0.45 %).

    Raises:
        LorascopeError: the value is not a number above 0 and at most 100.
    """
    m = None if isinstance(value, (int, float)) else _PERCENT.fullmatch(str(value))
    if isinstance(value, bool) or (m is None and not isinstance(value, (int, float))):
        raise LorascopeError(f"{where} {value!r} is not a percentage; expected e.g. 0.45 or 0.45%.")
    number = float(value if m is None else m["num"])
    if not math.isfinite(number) or not 0 < number <= 100:
        raise LorascopeError(
            f"{where} {value!r} must lie above 0 and at most 100 (a percentage, 0.45 means 0.45 %)."
        )
    return number


def short(n: float) -> str:
    """``33554432`` -> ``33.6M``; ``6738415616`` -> ``6.74B``: ``units.human_count``."""
    return units.human_count(n)


def exact(n: int) -> str:
    """``4194304`` -> ``4,194,304``."""
    return f"{int(n):,}"


def both(n: int) -> str:
    """``4,194,304 (4.19M)``."""
    return f"{exact(n)} ({short(n)})" if abs(n) >= 1000 else exact(n)


human_bytes = units.human_bytes  # binary units (16,777,216 -> '16.0 MiB'), as every command prints them


def parse_layers(value: str | int | list | tuple | None, where: str = "--layers") -> tuple[int, ...] | None:
    """Layer indices from ``0-15``, ``0,2,4-7``, an int or a list; None stays None.

    Raises:
        LorascopeError: anything else, or a range that runs backwards.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise LorascopeError(f"{where} {value!r} is not a layer list; expected e.g. 0-15 or 0,2,4-7.")
    items = [value] if isinstance(value, int) else value if isinstance(value, (list, tuple)) else str(value)
    items = items.split(",") if isinstance(items, str) else items
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if (m := re.fullmatch(r"(\d+)\s*(?:[-–:]\s*(\d+))?", text)) is None:
            raise LorascopeError(
                f"{where} {value!r}: {text!r} is not a layer index or range; expected e.g. 0-15 or 0,2,4-7."
            )
        first, last = int(m[1]), int(m[2] or m[1])
        if last >= MAX_LAYERS:
            raise LorascopeError(
                f"{where} {value!r}: layer {last} is beyond any model (indices below {MAX_LAYERS:,})."
            )
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
