"""Comparison results on disk: the tables ``lorascope compare`` and ``lorascope intruders`` write, and
reading them back.

A results folder holds whichever of these the run produced (the report adds its compare section when
``compare_summary.json`` is there):

- ``compare_modules.csv``: one row per module both updates touch — ranks, norms, cosine, the φ summary,
  and with a base the amplification factor and intruder count of each update.
- ``subspace_similarity.csv``: φ(i, j) per module on the (i, j) grid, with the random expectation max(i, j)/m.
- ``amplification.csv``: Hu et al.'s Table 7 per module and update.
- ``intruders.csv``: one row per top-k singular vector of W_tuned: σ, max |cos| with the base, intruder at ε.
- ``intruder_modules.csv``: intruder count per module and update at the chosen ε.
- ``intruder_sweep.csv``: intruders summed over modules at each ε of the sweep.
- ``compare_summary.json``: inputs, labels, options, versions, totals, headline numbers, timing, warnings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LorascopeError
from ..results import write_json

SUMMARY_JSON = "compare_summary.json"
# attribute of CompareResults -> its file
TABLES = {
    "modules": "compare_modules.csv",
    "similarity": "subspace_similarity.csv",
    "amplification": "amplification.csv",
    "intruders": "intruders.csv",
    "intruder_modules": "intruder_modules.csv",
    "sweep": "intruder_sweep.csv",
}


@dataclass
class CompareResults:
    """The tables of one comparison (None where the run did not produce them) and its summary."""

    summary: dict[str, Any]
    modules: pd.DataFrame | None = None
    similarity: pd.DataFrame | None = None
    amplification: pd.DataFrame | None = None
    intruders: pd.DataFrame | None = None
    intruder_modules: pd.DataFrame | None = None
    sweep: pd.DataFrame | None = None
    path: Path | None = field(default=None, compare=False)

    def save(self, out: str | Path) -> Path:
        """Write every table present and the summary into ``out`` as one transaction (``lorascope.outputs``),
        beside whatever results lorascope wrote there before (a stale comparison table and the earlier report
        are dropped); return the folder."""
        from ..outputs import writing

        with writing(out, "compare", mode="update", drop=["report.html", "figures"]) as tx:
            self.write(tx.stage)
        self.path = tx.path
        return tx.path

    def write(self, out: str | Path) -> Path:
        """Write the tables and summary into ``out`` as they are (inside a transaction's stage)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for attr, name in TABLES.items():
            table = getattr(self, attr)
            if table is not None:
                table.to_csv(out / name, index=False)
            elif (out / name).exists():  # a stale table of an earlier run (a staged copy of ours)
                (out / name).unlink()
        write_json(out / SUMMARY_JSON, self.summary)
        self.path = out
        return out


def load_compare(path: str | Path) -> CompareResults:
    """Read a folder written by ``CompareResults.save``.

    Raises:
        LorascopeError: the folder has no compare_summary.json or a table is unreadable.
    """
    path = Path(path)
    if not (path / SUMMARY_JSON).is_file():
        raise LorascopeError(
            f"{path} holds no comparison results ({SUMMARY_JSON} not found); they are written by "
            "`lorascope compare` and `lorascope intruders`."
        )
    try:
        with open(path / SUMMARY_JSON) as fh:
            summary = json.load(fh)
        from ..report.registry import (
            folder_has,
        )  # a table a user put there under one of these names is not read

        tables = {attr: pd.read_csv(path / name) for attr, name in TABLES.items() if folder_has(path, name)}
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"could not read the comparison results in {path}: {exc}") from None
    return CompareResults(summary, **tables, path=path)
