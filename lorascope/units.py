"""Numbers people read and write: parameter counts (33M, 4.2B) and sizes in bytes, one way everywhere.

Counts use decimal suffixes, as parameter counts are quoted: k = 10³, M = 10⁶, B (or G) = 10⁹, T = 10¹².
Sizes in bytes are printed binary, always: KiB = 2¹⁰, MiB = 2²⁰, GiB = 2³⁰, TiB = 2⁴⁰, with the binary names
(``human_bytes``). They are read as IEC writes them: K, M, G, T alone and KiB, MiB, GiB, TiB are powers of
1024 ('768M', '2.5G', '8GiB'); KB, MB, GB, TB are powers of 1000 ('1GB' = 10⁹ bytes), so a size lorascope
prints reads back as the same number. Pure functions; nothing here reads files.
"""

from __future__ import annotations

import math
import re
from typing import Any

MISSING = "–"  # what a missing number prints as

COUNT_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_COUNT = re.compile(
    r"^\s*(?P<num>[0-9][0-9_,]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*(?P<suffix>[kKmMbBgGtT]?)\s*$"
)
_THOUSANDS = re.compile(r"[0-9]{1,3}(,[0-9]{3})*(\.[0-9]*)?")
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_SIZE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")
_POWER = {"k": 1, "m": 2, "g": 3, "t": 4}
SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{p: 1024**e for p, e in _POWER.items()},
    **{p + "ib": 1024**e for p, e in _POWER.items()},
    **{p + "b": 1000**e for p, e in _POWER.items()},
}


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return v is not None and str(v) in ("<NA>", "NaT")


def parse_count(value: str | int | float, where: str = "count") -> int:
    """A parameter count from ``33M``, ``4.2B``, ``500k``, ``1,234,567``, ``20_000_000``, ``7e9`` or a number.

    Raises:
        ValueError: naming ``where``, when the value is not a positive, finite, whole number of parameters
            with an optional k/M/B/G/T suffix (commas only as thousands separators). 'Whole' allows the
            rounding of decimal suffixes ('1.1B' is 1100000000.0000002 in binary floating point), nothing
            more.
    """
    if isinstance(value, bool):
        raise ValueError(f"{where} {value!r} is not a parameter count; expected e.g. 33M, 4.2B or 1,234,567.")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        m = _COUNT.match(str(value))
        if m is None or ("," in m["num"] and not _THOUSANDS.fullmatch(m["num"])):
            raise ValueError(
                f"{where} {value!r} is not a parameter count; expected e.g. 33M, 4.2B, 500k, "
                "1,234,567 or 7e9."
            )
        number = float(m["num"].replace(",", "").replace("_", "")) * COUNT_SUFFIXES[m["suffix"].upper()]
    if not math.isfinite(number) or round(number) <= 0:
        raise ValueError(
            f"{where} {value!r} is not a parameter count; expected a positive, finite number such "
            "as 33M, 4.2B or 1,234,567."
        )
    if abs(number - round(number)) > 1e-9 * abs(number):
        raise ValueError(f"{where} {value!r} is not a whole number of parameters.")
    return round(number)


def human_count(n: Any) -> str:
    """``12345678`` -> ``12.3M``, ``40000`` -> ``40k``, ``6738415616`` -> ``6.74B``: three significant digits
    with a decimal suffix; whole numbers below 1000 as they are; None or NaN -> '–'."""
    if _missing(n):
        return MISSING
    n = float(n)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def parse_bytes(value: str | int | float, where: str = "size") -> int:
    """Bytes from ``768M``, ``2.5G``, ``8GiB``, ``8GB``, ``1e9`` or a number (binary units: module docstring).

    Raises:
        ValueError: naming ``where``, when the value is not a positive size.
    """
    if isinstance(value, bool):
        raise ValueError(f"{where}={value!r} is not a size in bytes; write e.g. 768M, 8G or 1000000.")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        m = _SIZE.match(str(value))
        if m is None or m["unit"].lower() not in SIZE_UNITS:
            raise ValueError(
                f"{where}={value!r} is not a size in bytes; write e.g. 768M, 2.5G, 8GiB or 1000000."
            )
        number = float(m["num"]) * SIZE_UNITS[m["unit"].lower()]
    if not math.isfinite(number) or number < 1:
        raise ValueError(
            f"{where}={value!r} is not a size in bytes; write a positive size such as 768M or 8G."
        )
    return int(number)


def human_bytes(n: Any, unit: str | None = None) -> str:
    """``16777216`` -> ``16.0 MiB``; bytes below 1 KiB as a whole number (``512 B``); None or NaN -> '–'.

    With ``unit`` (one of ``BYTE_UNITS``), in that unit, rounded up to a whole number with thousands
    separators (``27,513 MiB``): what a message suggests for an option that takes sizes (``--memory 27513M``).
    """
    if _missing(n):
        return MISSING
    n = float(n)
    if unit is not None:
        scale = 1024 ** BYTE_UNITS.index(unit)
        return f"{math.ceil(n / scale):,} {unit}"
    for unit in BYTE_UNITS:
        if abs(n) < 1024 or unit == BYTE_UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit always returns")
