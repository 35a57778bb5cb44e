"""Results on disk: the contract every later step reads (DESIGN.md 'Results schema').

A results folder holds ``modules.csv`` (one row per analyzed matrix), ``singular_values.safetensors``
(one float32 vector per module, key = name, descending), ``vectors.csv`` (update norms of 1-D
tensors) and ``summary.json`` (inputs, options, versions, totals, timing, warnings).
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import LorascopeError

MODULES_CSV = "modules.csv"
SPECTRA_FILE = "singular_values.safetensors"
SUMMARY_JSON = "summary.json"
VECTORS_CSV = "vectors.csv"
# the training record (lorascope.training_record): a row per step and module, and σ per step
TRAINING_CSV = "training_spectra.csv"
TRAINING_SIGMA_DIR = "training_spectra"
RESULTS_FILES = (MODULES_CSV, SPECTRA_FILE, SUMMARY_JSON)  # what makes a folder a results folder

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


def modules_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A modules table in schema order with nullable integer columns; extra keys are kept after the
    schema's."""
    df = pd.DataFrame(rows)
    for col in MODULE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in MODULE_COLUMNS]
    df = df[MODULE_COLUMNS + extra]
    for col in INT_COLUMNS:
        df[col] = pd.array([None if _missing(v) else int(v) for v in df[col]], dtype="Int64")
    df["rank_beyond_k"] = df["rank_beyond_k"].fillna(False).astype(bool)
    for col in (
        "scale",
        "fro_norm",
        "spectral_norm",
        "base_fro_norm",
        "relative_update",
        "stable_rank",
        "entropy_rank",
        "sigma_floor",
    ):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def vectors_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=VECTOR_COLUMNS)
    df["layer"] = df["layer"].astype("Int64")
    return df


def spectra_series(spectra: Any) -> pd.Series:
    """A name -> σ mapping as a pandas Series of float arrays (object dtype, indexed by module name)."""
    items = list(spectra.items())
    values = np.empty(len(items), dtype=object)  # filled one by one: equal-length arrays must not become 2-D
    for i, (_, v) in enumerate(items):
        values[i] = v
    index = pd.Index([k for k, _ in items], dtype=object, name="name")
    return pd.Series(values, index=index, name="singular_values")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


@dataclass
class Results:
    """One analysis: the modules table, each module's singular values, 1-D updates and the run summary.

    The data every step passes along; ``lorascope.Results`` (``lorascope.notebook``) is this with its views
    (what a notebook shows, the report's figures, the training record)."""

    modules: pd.DataFrame
    spectra: pd.Series  # module name -> σ, descending (a dict given here becomes this Series)
    summary: dict[str, Any]
    vectors: pd.DataFrame = field(default_factory=lambda: vectors_frame([]))
    path: Path | None = None

    def __post_init__(self) -> None:
        """``spectra`` as a pandas Series indexed by module name, each value that module's σ array (so
        ``spectra[name]``, ``.items()`` and ``name in spectra`` read as from a dict; notebooks get pandas)."""
        if not isinstance(self.spectra, pd.Series):
            self.spectra = spectra_series(self.spectra)

    def spectrum(self, name: str) -> np.ndarray:
        """Singular values of one module, descending (float64)."""
        try:
            return np.asarray(self.spectra[name], dtype=np.float64)
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
        self.modules.to_csv(folder / MODULES_CSV, index=False)
        self.vectors.to_csv(folder / VECTORS_CSV, index=False)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.spectra.items()}
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
        raw = pd.read_csv(path / MODULES_CSV, keep_default_na=True)
        spectra = {k: v.astype(np.float64) for k, v in load_file(str(path / SPECTRA_FILE)).items()}
        with open(path / SUMMARY_JSON, encoding="utf-8") as fh:
            summary = json.load(fh)
        vectors = (
            vectors_frame(pd.read_csv(path / VECTORS_CSV).to_dict("records"))
            if (path / VECTORS_CSV).is_file()
            else vectors_frame([])
        )
    except Exception as exc:  # noqa: BLE001 - csv, safetensors and json readers each raise their own types
        raise LorascopeError(
            f"could not read the results folder {path}: {' '.join(str(exc).split())[:300]}. "
            "Re-run the analysis that wrote it."
        ) from None
    missing_columns = [c for c in MODULE_COLUMNS if c not in raw.columns and c not in LATER_COLUMNS]
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
    unmatched = [str(n) for n in raw["name"] if str(n) not in spectra]
    if unmatched:
        raise LorascopeError(
            f"{path}: {len(unmatched)} module(s) of {MODULES_CSV} have no spectrum in {SPECTRA_FILE} "
            f"(e.g. {unmatched[0]}); the two files are from different runs or damaged."
        )
    try:
        modules = modules_frame(raw.to_dict("records"))
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
