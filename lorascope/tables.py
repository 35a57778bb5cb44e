"""The results tables' rules: modules.csv's and vectors.csv's columns, how each value is normalized (one rule
for the pandas DataFrames a notebook reads and the CSV written from plain rows), and the CSV writer. pandas
is imported only to make a DataFrame, so analyses write their tables without it.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# Column order of modules.csv. Integer columns are nullable: an empty cell means "not determined"
# (a rank beyond a randomized top-k, or no base given), never zero.
MODULE_COLUMNS = [
    "name",
    "layer",
    "module",
    "rows",
    "cols",
    "source",
    "family",
    "method",
    "lora_rank",
    "scale",
    "fro_norm",
    "spectral_norm",
    "base_fro_norm",
    "relative_update",
    "stable_rank",
    "entropy_rank",
    "rank_90",
    "rank_95",
    "rank_99",
    "numerical_rank",
    "gd_rank",
    "n_singular",
    "rank_beyond_k",
    "sigma_floor",
]
# added after the first release: results written before lack them (read as empty). Per-module times moved
# from a 'seconds' column to summary.json (timing.per_module_seconds), so tables repeat exactly.
LATER_COLUMNS = ("family", "sigma_floor")
INT_COLUMNS = [
    "layer",
    "rows",
    "cols",
    "lora_rank",
    "rank_90",
    "rank_95",
    "rank_99",
    "numerical_rank",
    "gd_rank",
    "n_singular",
]
VECTOR_COLUMNS = ["name", "layer", "module", "size", "fro_norm", "base_fro_norm", "relative_update"]


# nullable integer columns outside the schema's order, written only where some module has them
OPTIONAL_INT_COLUMNS = ("added_rows",)
FLOAT_COLUMNS = (
    "scale",
    "fro_norm",
    "spectral_norm",
    "base_fro_norm",
    "relative_update",
    "stable_rank",
    "entropy_rank",
    "sigma_floor",
)


VECTOR_KINDS = {
    "name": "text",
    "layer": "int",
    "module": "text",
    "size": "int",
    "fro_norm": "float",
    "base_fro_norm": "float",
    "relative_update": "float",
}
# columns whose cells are names, never numbers: a module named "0.10" or "NA" reads back as that text
TEXT_COLUMNS = ("name", "module", "source", "family", "method")


def module_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a modules table in the schema: the columns (schema order, then other keys in the order first
    seen) and each row with every column, integers as int or None (empty: not determined), the float
    columns as float (NaN where missing or not a number), ``rank_beyond_k`` as bool. A column outside the
    schema gets one kind for all its rows (``column_kind``), so each of its values is written the same
    whatever the other rows hold. The one rule behind both ``modules_frame`` and the modules.csv a
    ``Results`` writes.

    Raises:
        ValueError: an integer column holds a value that is not a whole number, or ``rank_beyond_k`` one that
            is not a truth value; the message names the column, the module and the value.
    """
    columns, kinds = _module_kinds(rows := list(rows))
    return columns, [_normalize(row, columns, kinds) for row in rows]


def _module_kinds(rows: list[Mapping[str, Any]]) -> tuple[list[str], dict[str, str]]:
    extra: dict[str, None] = {}
    for row in rows:
        extra.update((k, None) for k in row if k not in MODULE_COLUMNS)
    kinds = {c: module_kind(c) for c in MODULE_COLUMNS}
    kinds.update((c, column_kind(c, [row.get(c) for row in rows])) for c in extra)
    return MODULE_COLUMNS + list(extra), kinds


def module_kind(column: str) -> str:
    """The kind of a schema column of modules.csv: 'int' (nullable), 'float', 'bool' or 'text'."""
    if column in INT_COLUMNS or column in OPTIONAL_INT_COLUMNS:
        return "int"
    if column in FLOAT_COLUMNS:
        return "float"
    return "bool" if column == "rank_beyond_k" else "text"


def column_kind(column: str, values: list[Any]) -> str:
    """The kind of a column outside the schema, from the values its rows hold (missing ones aside): 'int'
    where all are whole-number types that fit int64 (a missing one stays empty: never 1.0 beside it),
    'float' where all are real numbers and some are floats, 'bool' where all are truth values and none is
    missing, else 'object' (each value as given, written as ``str`` writes it). The columns of
    ``OPTIONAL_INT_COLUMNS`` are always 'int'."""
    if column in OPTIONAL_INT_COLUMNS:
        return "int"
    present = [v for v in values if not missing(v)]
    if not present:
        return "object"
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return "bool" if len(present) == len(values) else "object"
    if all(_is_int(v) and -(2**63) <= int(v) < 2**63 for v in present):
        return "int"
    if all(_is_int(v) or isinstance(v, (float, np.floating)) for v in present):
        return "float"
    return "object"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _normalize(row: Mapping[str, Any], columns: list[str], kinds: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for col in columns:
        v, kind = row.get(col), kinds[col]
        if kind == "int":
            v = _to_int(v, col, row)
        elif kind == "float":
            v = _to_float(v)
        elif kind == "bool":
            v = _to_bool(v, col, row)
        elif missing(v):
            v = None
        elif kind == "text" and not isinstance(v, str):  # a name is text, whatever type it came as
            v = _cell(v)
        out[col] = v
    return out


def modules_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A modules table as a pandas DataFrame (``module_rows``' rule): nullable ``Int64`` integer columns,
    float64 and bool columns; keys outside the schema are kept after the schema's columns, each of the kind
    ``column_kind`` gives it."""
    columns, kinds = _module_kinds(rows := list(rows))
    return _frame(columns, [_normalize(row, columns, kinds) for row in rows], kinds)


def vector_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a vectors table: its columns, and each row with every column, ``layer`` and ``size`` an int or
    None, the norms float (NaN where missing). The one rule behind ``vectors_frame`` and vectors.csv."""
    return VECTOR_COLUMNS, [_normalize(row, VECTOR_COLUMNS, VECTOR_KINDS) for row in rows]


def vectors_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A vectors table as a pandas DataFrame (``vector_rows``' rule)."""
    return _frame(VECTOR_COLUMNS, vector_rows(rows)[1], VECTOR_KINDS)


def _frame(columns: list[str], rows: list[dict[str, Any]], kinds: Mapping[str, str]) -> pd.DataFrame:
    import pandas as pd

    def column(col: str) -> Any:
        values, kind = [r[col] for r in rows], kinds[col]
        if kind == "int":
            return pd.array(values, dtype="Int64")
        if kind == "float":
            return np.array(values, dtype=np.float64)
        if kind == "bool":
            return np.array(values, dtype=bool)
        if kind == "object":  # as given: pandas must not infer a dtype of its own (a date, a float32)
            return pd.Series(_object_array(values), dtype=object)
        return values  # text: pandas infers strings, or object where mixed

    return pd.DataFrame({col: column(col) for col in columns}, columns=columns)


def spectra_series(spectra: Any) -> pd.Series:
    """A name -> σ mapping as a pandas Series of float arrays (object dtype, indexed by module name)."""
    import pandas as pd

    items = list(spectra.items())
    index = pd.Index([k for k, _ in items], dtype=object, name="name")
    return pd.Series(_object_array([v for _, v in items]), index=index, name="singular_values")


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array holding each value as one element: filled one by one, so that equal-length arrays
    or lists do not become a 2-D array."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def write_table(path: str | Path, table: Any, rule: Callable[[Any], tuple[list[str], list[dict]]]) -> None:
    """A table as CSV: a DataFrame by pandas' own ``DataFrame.to_csv`` (pandas is loaded where one exists,
    and no copy of its cell formatting can follow every dtype); row dicts under their table's ``rule``
    (``module_rows``, ``vector_rows``) by ``write_csv``, which writes the same bytes as ``to_csv`` of the
    frame the same rule makes (``modules_frame``, ``vectors_frame``)."""
    if is_frame(table):
        table.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
        return
    columns, rows = rule(table)
    write_csv(path, columns, ([row[c] for c in columns] for row in rows))


def write_csv(path: str | Path, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A table as CSV, cells as pandas' ``DataFrame.to_csv`` writes them: empty for a missing value (None,
    NaN, ``pd.NA``, ``NaT``), ``True``/``False``, integers in full, a float64 by ``repr`` (the shortest text
    that reads back to the same float64), any other value (a float32 in an object column, say) by ``str``,
    minimal quoting, ``\\n`` line ends."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(v) for v in row] for row in rows)


def _cell(v: Any) -> str:
    if missing(v):
        return ""
    if isinstance(v, float):  # a float64 (np.float64 too): the shortest text that reads back to it
        return repr(float(v))
    return str(v)


def parse_cells(values: list[str]) -> list[Any]:
    """The values of one CSV column written by ``write_table``, from its cells' text ('' is missing): ints
    where every cell is an int as ``str`` writes it, floats where every cell is a float as ``repr`` writes
    it, True/False where every cell is one, else the text. Only text a cell reads back
    to exactly counts, so reading a table and writing it again gives the same bytes."""
    present = [v for v in values if v != ""]
    for parse in (_int_text, _float_text, _bool_text):
        parsed = [parse(v) for v in present]
        if all(p is not None for p in parsed):
            it = iter(parsed)
            return [None if v == "" else next(it) for v in values]
    return [None if v == "" else v for v in values]


def _int_text(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if str(v) == text else None


def _float_text(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if repr(v) == text and not math.isnan(v) else None


def _bool_text(text: str) -> bool | None:
    return {"True": True, "False": False}.get(text)


def _to_int(v: Any, column: str, row: Mapping[str, Any]) -> int | None:
    if missing(v):
        return None
    if _is_int(v) or isinstance(v, (bool, np.bool_)):
        return int(v)
    try:
        f = float(v)
        if f.is_integer():
            return int(f)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ValueError(
        f"column {column!r} of module {row.get('name')!r} holds {v!r}, not a whole number; this column "
        "holds integers (empty where not determined)"
    )


def _to_bool(v: Any, column: str, row: Mapping[str, Any]) -> bool:
    if missing(v):
        return False
    if isinstance(v, (bool, np.bool_)) or (_is_int(v) and v in (0, 1)):
        return bool(v)
    if isinstance(v, str) and v in ("True", "False"):
        return v == "True"
    raise ValueError(f"column {column!r} of module {row.get('name')!r} holds {v!r}, not True or False")


def _to_float(v: Any) -> float:
    if missing(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):  # as pandas.to_numeric(errors="coerce"): not a number -> NaN
        return math.nan


def missing(v: Any) -> bool:
    """Whether a cell value is missing: None, a float NaN, numpy's NaT, and pandas' NA and NaT."""
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return True
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    pd = sys.modules.get("pandas")  # pd.NA and pd.NaT exist only where pandas is loaded
    return pd is not None and (v is pd.NA or v is pd.NaT)


def is_frame(x: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, (pd.DataFrame, pd.Series))
