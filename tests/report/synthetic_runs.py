"""Synthetic trainer runs with known outcomes, in memory or as run folders, for the answer's figures and
pages.

Run i of a target set at rank r reaches edit accuracy 1 − 2^(−r/k_t) (k_t grows with the set's index, so wider
sets learn faster), forgets more as r grows, and its entropy rank approaches r during training; full
fine-tuning and freezing are the references. Nothing here trains: the numbers are planted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lorascope.report.trained import TrainedRun

SETS = ["edit", "paraphrase", "retain_same", "retain_other"]
TARGETS = ["v_proj", "attn", "all-linear", "mlp", "q_proj+v_proj", "o_proj", "up_proj", "down_proj"]


def plan(n: int) -> list[tuple[str, int | None, str | None]]:
    """(method, rank, targets) of n runs: target sets × ranks, then full and freeze where n leaves room."""
    if n == 1:
        return [("lora", 8, "attn")]
    if n == 3:
        return [("lora", 4, "attn"), ("full", None, None), ("freeze", None, None)]
    refs = [("full", None, None), ("freeze", None, None)]
    ranks = [1, 2, 4, 8, 16, 32, 64]
    n_sets = 3 if n <= 20 else 6
    per = math.ceil((n - len(refs)) / n_sets)
    runs = [("lora", r, t) for t in TARGETS[:n_sets] for r in ranks[:per]][: n - len(refs)]
    return runs + refs


def metrics_of(method: str, rank: int | None, targets: str | None, j: int, steps: int = 100) -> dict:
    speed = 1.5 + j
    if rank is None:
        edit, forget = (1.0, 0.3) if method == "full" else (0.85, 0.25)
        trainable = 744_576 if method == "full" else 200_064
    else:
        edit, forget = 1 - 2 ** (-rank / speed), min(0.9, 0.05 * math.log2(2 * rank) * (1 + 0.2 * j))
        trainable = rank * 768 * (1 + 2 * j)
    final = {
        "step": steps,
        "edit_acc": edit,
        "edit_loss": 7 * (1 - edit) + 0.1,
        "paraphrase_acc": 0.9 * edit,
        "paraphrase_loss": 7 * (1 - 0.9 * edit) + 0.2,
        "retain_same_acc": 1 - forget,
        "retain_same_loss": forget,
        "retain_other_acc": 1 - forget / 2,
        "retain_other_loss": forget / 2,
        "eval_loss": 0.5 + forget,
    }
    base = {
        "step": 0,
        "edit_acc": 0.0,
        "edit_loss": 7.0,
        "paraphrase_acc": 0.0,
        "paraphrase_loss": 7.1,
        "retain_same_acc": 1.0,
        "retain_same_loss": 0.02,
        "retain_other_acc": 1.0,
        "retain_other_loss": 0.05,
        "eval_loss": 0.6,
    }
    reference = "full" if method == "full" else "freeze-b1"
    name = f"{method}-r{rank}-{targets.replace('+', '-')}" if rank else reference
    lora = {"r": rank, "alpha": 2.0 * rank, "scale": 2.0, "targets": targets} if rank else None
    return {
        "run": name,
        "method": method,
        "options": {"rank": rank or 8, "targets": targets or "attn", "train_blocks": 1},
        "lora": lora,
        "task": {"spec": "edit:20", "name": "edit:20", "n_train": 40, "n_eval": {s: 40 for s in SETS}},
        "optim": {"lr": 1e-3},
        "loop": {"steps": steps, "batch_size": 16, "rank_every": 5, "seed": 0},
        "trainable_parameters": trainable,
        "total_parameters": 745_344,
        "train_seconds": 3.0,
        "memory": {"peak_rss_bytes": 4e8},
        "optimizer_state_bytes": 8 * trainable,
        "device": "cpu",
        "base_eval": base,
        "final": final,
        "notes": [],
    }


def histories(metrics: dict, steps: int = 100, every: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """history.csv and rank_history.csv of a run: metrics moving from the base to the final values, and each
    trained matrix's entropy rank approaching its rank (48 for a dense update)."""
    final, base = metrics["final"], metrics["base_eval"]
    rows = []
    for step in range(0, steps + 1, 25):
        t = step / steps
        rows.append(
            {
                "step": step,
                "lr": 1e-3,
                "train_loss": np.nan if step == 0 else 1.0,
                **{k: base[k] + t * (final[k] - base[k]) for k in final if k != "step"},
            }
        )
    target = (metrics["lora"] or {}).get("r") or 48
    ranks = []
    for step in range(0, steps + 1, every):
        for layer in range(4):
            e = target * (1 - math.exp(-step / 20)) * (0.9 + 0.05 * layer)
            ranks.append(
                {
                    "step": step,
                    "name": f"model.layers.{layer}.self_attn.v_proj",
                    "source": "lora",
                    "rows": 64,
                    "cols": 128,
                    "lora_rank": target,
                    "entropy_rank": e,
                    "rank_90": math.ceil(0.8 * e),
                    "fro_norm": step / steps,
                    "spectral_norm": step / steps,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(ranks)


def trained_runs(n: int) -> list[TrainedRun]:
    """n runs in memory (no folders)."""
    runs = []
    targets = list(dict.fromkeys(t for _, _, t in plan(n) if t))
    for method, rank, t in plan(n):
        m = metrics_of(method, rank, t, targets.index(t) if t else 0)
        history, rank_history = histories(m)
        runs.append(TrainedRun(m["run"], Path("/nonexistent") / m["run"], m, history, rank_history))
    return runs


def sweep_folder(folder: Path, n: int) -> Path:
    """A training sweep folder as ``lorascope train-sweep`` lays it out: index.csv and one run folder each
    (metrics.json, history.csv, rank_history.csv, an empty tuned/)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in trained_runs(n):
        d = folder / run.label
        (d / "tuned").mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(run.metrics))
        run.history.to_csv(d / "history.csv", index=False)
        run.rank_history.to_csv(d / "rank_history.csv", index=False)
        rows.append(
            {
                "run": run.label,
                "method": run.method,
                "rank": run.rank,
                "targets": run.targets,
                "folder": run.label,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    return folder
