"""compare_summary.json: the run's inputs, labels, options, versions and timing, and its headline numbers —
mean cosine and φ over modules, per update the median amplification and the intruders at the chosen ε.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd

from .. import __version__
from ..results import versions
from .results import CompareResults


def headline(results: CompareResults, labels: list[str]) -> dict[str, Any]:
    """A few numbers per run: mean cosine and φ summary over modules; per update the median amplification
    and the intruders summed over modules at the chosen ε."""
    out: dict[str, Any] = {}
    mods = results.modules
    if mods is not None:
        for col in ("cosine", "phi_1_1", "phi_min", "phi_all", "random_all", "shared_dims", "random_dims"):
            out[f"mean_{col}"] = _nan_none(mods[col].mean())
    per: dict[str, dict[str, Any]] = {label: {} for label in labels}
    if results.amplification is not None:
        for label, group in results.amplification.groupby("update"):
            per[label]["median_amplification"] = _nan_none(group["amplification"].median())
            per[label]["median_rank"] = _nan_none(group["rank"].median())
    if results.intruder_modules is not None:
        for label, group in results.intruder_modules.groupby("update"):
            per[label].update(
                intruders=int(group["intruders"].sum()),
                epsilon=float(group["epsilon"].iloc[0]),
                modules_with_intruders=int((group["intruders"] > 0).sum()),
                modules=len(group),
            )
    out["updates"] = per
    return out


def _nan_none(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def run_summary(
    kind: str,
    inputs: list[dict[str, Any]],
    labels: list[str],
    options: dict[str, Any],
    results: CompareResults,
    warnings: list[dict[str, str]],
    seconds: float,
) -> dict[str, Any]:
    n_modules = (
        len(results.modules)
        if results.modules is not None
        else (results.intruders["name"].nunique() if results.intruders is not None else 0)
    )
    return {
        "lorascope_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "inputs": inputs,
        "labels": labels,
        "options": options,
        "versions": versions(),
        "totals": {"modules": int(n_modules), "skipped": len(warnings)},
        "headline": headline(results, labels),
        "timing": {"total_seconds": round(seconds, 3)},
        "warnings": warnings,
    }
