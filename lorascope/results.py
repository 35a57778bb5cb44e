"""Results on disk: the contract every later step reads (DESIGN.md 'Results schema').

A results folder holds ``modules.csv`` (one row per analyzed matrix), ``singular_values.safetensors``
(one float32 vector per module, key = name, descending), ``vectors.csv`` (update norms of 1-D
tensors) and ``summary.json`` (inputs, options, versions, totals, timing, warnings).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import LorascopeError
from .tables import (
    LATER_COLUMNS,
    MODULE_COLUMNS,
    TEXT_COLUMNS,
    is_frame,
    modules_frame,
    module_rows,
    parse_cells,
    vector_rows,
    spectra_series,
    vectors_frame,
    write_table,
)

if TYPE_CHECKING:
    import pandas as pd

MODULES_CSV = "modules.csv"
SPECTRA_FILE = "singular_values.safetensors"
SUMMARY_JSON = "summary.json"
VECTORS_CSV = "vectors.csv"
# the training record (lorascope.training_record): a row per step and module, and σ per step
TRAINING_CSV = "training_spectra.csv"
TRAINING_SIGMA_DIR = "training_spectra"
RESULTS_FILES = (MODULES_CSV, SPECTRA_FILE, SUMMARY_JSON)  # what makes a folder a results folder


class Results:
    """One analysis: the modules table, each module's singular values, 1-D updates and the run summary.

    The data every step passes along; ``lorascope.Results`` (``lorascope.notebook``) is this with its views
    (what a notebook shows, the report's figures, the training record).

    Args:
        modules: one row per analyzed matrix (modules.csv's schema), a DataFrame or a list of row dicts.
        spectra: module name -> σ (descending), a mapping or a pandas Series.
        summary: summary.json's object.
        vectors: 1-D updates (vectors.csv), a DataFrame or a list of row dicts.
        path: the folder the results were read from or saved to.

    ``modules``, ``spectra`` and ``vectors`` read as pandas objects; rows given as dicts become a DataFrame
    only when first read, so writing results (``save``, ``write``) needs no pandas.
    """

    def __init__(
        self,
        modules: pd.DataFrame | list[dict[str, Any]],
        spectra: Mapping[str, Any],
        summary: dict[str, Any],
        vectors: pd.DataFrame | list[dict[str, Any]] | None = None,
        path: Path | None = None,
    ) -> None:
        self._modules = modules
        self._spectra = spectra
        self.summary = summary
        self._vectors = [] if vectors is None else vectors
        self.path = path

    @property
    def modules(self) -> pd.DataFrame:
        """One row per analyzed matrix, in modules.csv's schema (``modules_frame``)."""
        if not is_frame(self._modules):
            self._modules = modules_frame(self._modules)
        return self._modules

    @modules.setter
    def modules(self, value: pd.DataFrame) -> None:
        self._modules = value

    @property
    def spectra(self) -> pd.Series:
        """Module name -> σ as a pandas Series of float arrays (so ``spectra[name]``, ``.items()`` and ``name
        in spectra`` read as from a dict; notebooks get pandas)."""
        if not is_frame(self._spectra):
            self._spectra = spectra_series(self._spectra)
        return self._spectra

    @spectra.setter
    def spectra(self, value: Mapping[str, Any]) -> None:
        self._spectra = value

    @property
    def vectors(self) -> pd.DataFrame:
        """The 1-D updates (biases, norms), in vectors.csv's columns."""
        if not is_frame(self._vectors):
            self._vectors = vectors_frame(self._vectors)
        return self._vectors

    @vectors.setter
    def vectors(self, value: pd.DataFrame) -> None:
        self._vectors = value

    def parts(self) -> tuple[Any, Any, dict[str, Any], Any, Path | None]:
        """(modules, spectra, summary, vectors, path) as held, rows not yet made DataFrames: what a subclass
        is built from without copying or converting."""
        return self._modules, self._spectra, self.summary, self._vectors, self.path

    def __repr__(self) -> str:
        kind, n = self.summary.get("kind"), len(self._modules)
        return f"{type(self).__name__}(kind={kind!r}, modules={n}, path={self.path})"

    def spectrum(self, name: str) -> np.ndarray:
        """Singular values of one module, descending (float64)."""
        try:
            return np.asarray(self._spectra[name], dtype=np.float64)
        except KeyError:
            raise KeyError(f"no module named {name!r} in these results") from None

    def save(self, out: str | Path) -> Path:
        """Write the results folder as one transaction (``lorascope.outputs.writing``) and return its path.

        Over results of other inputs or options, the tables computed from those (sweep, selection, comparison)
        are dropped, so no report joins them to spectra they were not computed from; a report of the earlier
        results is dropped too (``lorascope.render_report`` writes the new one). Files lorascope did not write
        are kept, and never overwritten.

        Raises:
            LorascopeError: ``out`` is a file, another run is writing it, or it holds a file of one of these
                names that lorascope did not write. The folder is then left as it was.
        """
        from .outputs import writing

        with writing(out, "save", **self.save_options(out)) as tx:
            self.write(tx.stage)
        self.path = tx.path
        return tx.path

    def save_options(self, out: str | Path) -> dict[str, Any]:
        """Options of the output transaction that saves these results into ``out``: which earlier tables
        stay."""
        same = _same_analysis(Path(out) / SUMMARY_JSON, self.summary)
        inputs = [str(i.get("path")) for i in self.summary.get("inputs", []) if isinstance(i, dict)]
        return {"keep": DERIVED_FILES if same else (), "inputs": inputs}

    def write(self, folder: str | Path) -> Path:
        """Write the four results files into ``folder`` as they are (inside a transaction's stage; see
        ``save``)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_table(folder / MODULES_CSV, self._modules, module_rows)
        write_table(folder / VECTORS_CSV, self._vectors, vector_rows)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self._spectra.items()}
        save_file(arrays, str(folder / SPECTRA_FILE), metadata={"content": "singular values, descending"})
        write_json(folder / SUMMARY_JSON, self.summary)
        self.path = folder
        return folder


# tables later commands add to a results folder (lorascope.rank.folders, lorascope.compare.results)
DERIVED_FILES = (
    "sweep.csv",
    "sweep_uniform.csv",
    "sweep_frontier.csv",
    "functional.csv",
    "sweep.json",
    "training.csv",
    "training_knees.csv",
    "selection.csv",
    "selection.json",
    "export.csv",
    "compare_summary.json",
    "compare_modules.csv",
    "subspace_similarity.csv",
    "amplification.csv",
    "intruders.csv",
    "intruder_modules.csv",
    "intruder_sweep.csv",
)


def _same_analysis(summary_file: Path, summary: dict[str, Any]) -> bool:
    """Whether the results already in a folder came from the same inputs and options (or there are none)."""
    if not summary_file.is_file():
        return True
    try:
        old = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("inputs", "options")
    return isinstance(old, dict) and all(
        json.loads(json.dumps(summary.get(k), default=_json_default)) == old.get(k) for k in keys
    )


def is_results_folder(path: str | Path) -> bool:
    """Whether ``path`` holds every file ``Results.save`` writes (a lone summary.json is not enough)."""
    p = Path(path)
    return p.is_dir() and all((p / f).is_file() for f in RESULTS_FILES)


def versions() -> dict[str, str]:
    """The versions a result was computed with (summary.json's ``versions``): Python, lorascope, and the
    numerical libraries that are installed."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "lorascope": __version__}
    for pkg in ("torch", "numpy", "scipy", "pandas", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented strict JSON (what ``limits.loads_json`` reads back): numpy scalars, paths, tuples
    and sets as plain values, a NaN or infinite float as null."""
    Path(path).write_text(json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with each non-finite float as None (a numpy float64 is a float: json never calls default)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if hasattr(obj, "item"):  # a 0-d tensor or array
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The rows of a CSV table ``Results.write`` wrote, each value as it was written: every cell read as
    text (so a module named "0.10", "NA" or "None" stays that name), names kept as text and every other
    column parsed as one kind (``tables.parse_cells``); only a line feed ends a row, so a carriage return
    inside a name (which the csv module leaves unquoted before Python 3.13, as pandas does) stays in it.
    Returns the header's columns and the rows."""
    import pandas as pd

    raw = pd.read_csv(path, dtype=str, keep_default_na=False, lineterminator="\n")
    columns = {str(c): [str(v) for v in raw[c]] for c in raw.columns}
    parsed = {
        c: cells if c == "name" else [v or None for v in cells] if c in TEXT_COLUMNS else parse_cells(cells)
        for c, cells in columns.items()
    }  # a name is never missing: an empty cell is the name ""
    return list(parsed), [{c: parsed[c][i] for c in parsed} for i in range(len(raw))]


def load_results(path: str | Path) -> Results:
    """Read a results folder written by ``Results.save``.

    Raises:
        LorascopeError: the folder or one of its files is missing or unreadable.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    missing = [f for f in RESULTS_FILES if not (path / f).is_file()]
    if missing:
        raise LorascopeError(
            f"{path} is not a lorascope results folder: {', '.join(missing)} not found there. "
            "Results folders are written by `lorascope spectrum` (or Results.save)."
        )
    try:
        columns, raw = read_table(path / MODULES_CSV)
        spectra = {k: v.astype(np.float64) for k, v in load_file(str(path / SPECTRA_FILE)).items()}
        with open(path / SUMMARY_JSON, encoding="utf-8") as fh:
            summary = json.load(fh)
        vectors = (
            vectors_frame(read_table(path / VECTORS_CSV)[1])
            if (path / VECTORS_CSV).is_file()
            else vectors_frame([])
        )
    except Exception as exc:  # noqa: BLE001 - csv, safetensors and json readers each raise their own types
        raise LorascopeError(
            f"could not read the results folder {path}: {' '.join(str(exc).split())[:300]}. "
            "Re-run the analysis that wrote it."
        ) from None
    missing_columns = [c for c in MODULE_COLUMNS if c not in columns and c not in LATER_COLUMNS]
    if missing_columns:
        raise LorascopeError(
            f"{path / MODULES_CSV} is not a lorascope modules table: it lacks the column(s) "
            f"{', '.join(missing_columns[:6])}. Re-run the analysis that wrote it."
        )
    if not isinstance(summary, dict):
        raise LorascopeError(
            f"{path / SUMMARY_JSON} holds a {type(summary).__name__}, not the summary object "
            "lorascope writes. Re-run the analysis that wrote it."
        )
    unmatched = [str(row["name"]) for row in raw if str(row["name"]) not in spectra]
    if unmatched:
        raise LorascopeError(
            f"{path}: {len(unmatched)} module(s) of {MODULES_CSV} have no spectrum in {SPECTRA_FILE} "
            f"(e.g. {unmatched[0]}); the two files are from different runs or damaged."
        )
    try:
        modules = modules_frame(raw)
        if not raw:  # no rows to carry the columns outside the schema: the header does
            modules = modules.reindex(columns=[*modules.columns, *(c for c in columns if c not in modules)])
    except (TypeError, ValueError) as exc:
        raise LorascopeError(f"{path / MODULES_CSV} holds values of the wrong type ({exc}).") from None
    from .outputs import verify

    changed = verify(path, RESULTS_FILES)
    if changed:
        raise LorascopeError(
            f"{path}: {', '.join(changed)} differ from what lorascope wrote there (their "
            "sha256 is not the one in its manifest): the files were changed, or mixed from "
            "different runs. Re-run the analysis that wrote them."
        )
    return Results(modules, spectra, summary, vectors, path)
