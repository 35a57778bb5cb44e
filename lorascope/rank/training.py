"""Training sweeps: each run's metrics against its rank r, beside full fine-tuning and freezing, and the knee.

A ``train-sweep`` folder (``train/runs.py``) lists its runs in ``index.csv``: method, rank, trainable
parameters, training time, peak memory and the final evaluation metrics. ``training_table`` orders them;
``knee`` finds where a metric stops paying for more rank — the Kneedle point (Satopää, Albrecht, Irwin &
Raghavan 2011, "Finding a 'Kneedle' in a Haystack", §3): with x = log2 r and the metric oriented so that
larger is better, both scaled to [0, 1], the knee is the r farthest above the chord from the first to the
last point. A curve that never rises above its chord (straight or convex) has no knee.
Pure: DataFrames in, DataFrames and dicts out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

FIRST_COLUMNS = [
    "run",
    "method",
    "rank",
    "targets",
    "trainable_parameters",
    "train_seconds",
    "peak_rss_bytes",
    "optimizer_state_bytes",
]


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def metric_columns(index: pd.DataFrame) -> list[str]:
    """The evaluation metrics of a sweep index: every *_loss and *_acc column."""
    return [
        c for c in index.columns if c.endswith(("_loss", "_acc")) and pd.api.types.is_numeric_dtype(index[c])
    ]


def training_table(index: pd.DataFrame) -> pd.DataFrame:
    """The runs, adapter methods by rank first, then the runs without a rank (full, freeze)."""
    front = [c for c in FIRST_COLUMNS if c in index.columns]
    table = index[front + [c for c in index.columns if c not in front]].copy()
    if "rank" in table.columns:
        table["rank"] = pd.to_numeric(table["rank"], errors="coerce").astype("Int64")
        table = table.sort_values(["rank", "method"], na_position="last", kind="stable")
    return table.reset_index(drop=True)


def knee(ranks: np.ndarray, values: np.ndarray, lower_better: bool) -> dict[str, Any]:
    """The Kneedle point of a metric against rank (module docstring).

    Returns:
        ``rank`` (None when there is no knee or fewer than three ranks), ``value`` there, and ``score``:
        the knee's height above the chord in the scaled units (0 for none).
    """
    order = np.argsort(ranks)
    r, v = np.asarray(ranks, float)[order], np.asarray(values, float)[order]
    keep = np.isfinite(v) & (r > 0)
    r, v = r[keep], v[keep]
    if r.size < 3 or np.ptp(np.log2(r)) == 0:
        return {"rank": None, "value": None, "score": 0.0}
    y = -v if lower_better else v
    x = np.log2(r)
    xn = (x - x[0]) / (x[-1] - x[0])
    span = y[-1] - y[0]
    if span <= 0:  # no improvement from the smallest to the largest rank
        return {"rank": None, "value": None, "score": 0.0}
    yn = (y - y[0]) / span
    above = yn - xn
    i = int(np.argmax(above))
    if above[i] <= 1e-12:
        return {"rank": None, "value": None, "score": 0.0}
    return {"rank": int(r[i]), "value": float(v[i]), "score": float(above[i])}


def knees(table: pd.DataFrame) -> pd.DataFrame:
    """One row per adapter method × target set × metric: its knee rank,
    and the full / freeze values beside it."""
    rows = []
    if "rank" not in table.columns:
        return pd.DataFrame(rows)
    ranked = table[table["rank"].notna()]
    others = table[table["rank"].isna()]
    groups = ranked.groupby(
        [c for c in ("method", "targets") if c in ranked.columns], dropna=False, sort=False
    )
    for key, runs in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metric_columns(table):
            k = knee(runs["rank"].to_numpy(float), runs[metric].to_numpy(float), lower_is_better(metric))
            row = {
                "method": key[0],
                "targets": key[1] if len(key) > 1 else None,
                "metric": metric,
                "knee_rank": k["rank"],
                "knee_value": k["value"],
                "knee_score": k["score"],
                "best_rank_value": _best(runs[metric], lower_is_better(metric)),
            }
            for _, other in others.iterrows():
                row[f"{other['method']}_value"] = other.get(metric, math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def _best(values: pd.Series, lower_better: bool) -> float:
    v = pd.to_numeric(values, errors="coerce")
    return float(v.min() if lower_better else v.max())
