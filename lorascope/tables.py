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


def module_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a modules table in the schema: the columns (schema order, then other keys in the order first
    seen) and each row with every column, integers as int or None (empty: not determined), the float
    columns as float (NaN where missing or not a number), ``rank_beyond_k`` as bool. The one rule behind both
    ``modules_frame`` and the modules.csv a ``Results`` writes."""
    rows = list(rows)
    extra: dict[str, None] = {}
    for row in rows:
        extra.update((k, None) for k in row if k not in MODULE_COLUMNS)
    columns = MODULE_COLUMNS + list(extra)
    ints = {*INT_COLUMNS, *OPTIONAL_INT_COLUMNS}
    out = []
    for row in rows:
        norm = {}
        for col in columns:
            v = row.get(col)
            if col in ints:
                v = None if missing(v) else int(v)
            elif col == "rank_beyond_k":
                v = False if missing(v) else bool(v)
            elif col in FLOAT_COLUMNS:
                v = _to_float(v)
            elif missing(v):
                v = None
            norm[col] = v
        out.append(norm)
    return columns, out


def modules_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A modules table as a pandas DataFrame (``module_rows``' rule): nullable ``Int64`` integer columns,
    float64 and bool columns; keys outside the schema are kept after the schema's columns."""
    import pandas as pd

    columns, norm = module_rows(rows)
    ints = {*INT_COLUMNS, *OPTIONAL_INT_COLUMNS}
    return pd.DataFrame(
        {
            col: pd.array([r[col] for r in norm], dtype="Int64")
            if col in ints
            else np.array([r[col] for r in norm], dtype=np.float64)
            if col in FLOAT_COLUMNS
            else np.array([r[col] for r in norm], dtype=bool)
            if col == "rank_beyond_k"
            else [r[col] for r in norm]  # pandas infers: strings, or object where mixed
            for col in columns
        },
        columns=columns,
    )


def vector_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a vectors table: its columns, and each row with every column, ``layer`` an int or None."""
    out = []
    for row in rows:
        norm = {c: (None if missing(row.get(c)) else row.get(c)) for c in VECTOR_COLUMNS}
        norm["layer"] = None if norm["layer"] is None else int(norm["layer"])
        out.append(norm)
    return VECTOR_COLUMNS, out


def vectors_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(vector_rows(rows)[1], columns=VECTOR_COLUMNS)
    df["layer"] = df["layer"].astype("Int64")
    return df


def spectra_series(spectra: Any) -> pd.Series:
    """A name -> σ mapping as a pandas Series of float arrays (object dtype, indexed by module name)."""
    import pandas as pd

    items = list(spectra.items())
    values = np.empty(len(items), dtype=object)  # filled one by one: equal-length arrays must not become 2-D
    for i, (_, v) in enumerate(items):
        values[i] = v
    index = pd.Index([k for k, _ in items], dtype=object, name="name")
    return pd.Series(values, index=index, name="singular_values")


def write_csv(path: str | Path, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A table as CSV, cells as pandas' ``DataFrame.to_csv`` writes them: empty for a missing value (None,
    NaN, ``pd.NA``), ``True``/``False``, integers in full, floats by ``repr`` (the shortest text that reads
    back to the same float64), minimal quoting, ``\\n`` line ends."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(v) for v in row] for row in rows)


def _cell(v: Any) -> str:
    if missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _to_float(v: Any) -> float:
    if missing(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):  # as pandas.to_numeric(errors="coerce"): not a number -> NaN
        return math.nan


def missing(v: Any) -> bool:
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return True
    pd = sys.modules.get("pandas")  # pd.NA exists only where pandas is loaded
    return pd is not None and v is pd.NA


def is_frame(x: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, (pd.DataFrame, pd.Series))


def table_rows(
    table: Any, rule: Callable[[Any], tuple[list[str], list[dict[str, Any]]]]
) -> tuple[list[str], Iterable[Iterable[Any]]]:
    """Columns and rows of a table to write: a DataFrame as it stands, or row dicts under their table's
    ``rule`` (``module_rows``, ``vector_rows``)."""
    if is_frame(table):
        return list(table.columns), table.itertuples(index=False, name=None)
    columns, rows = rule(table)
    return columns, ([row[c] for c in columns] for row in rows)
