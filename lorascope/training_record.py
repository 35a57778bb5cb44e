"""The training record on disk: spectra of a model in training, appended step by step to a results folder.

``record_spectra(model, step, out)`` is the plain function for any PyTorch loop. It appends the rows of a
``lorascope.snapshot`` (with their step) to ``out/training_spectra.csv`` and σ to
``out/training_spectra/step-<step>.safetensors``, and keeps ``out`` a results folder of the latest snapshot
(modules.csv, singular_values.safetensors, summary.json), so ``lorascope report out`` shows the adapter as it
is now and its metrics against step. ``read_training`` and ``training_spectrum`` read the record back.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import LorascopeError
from .results import TRAINING_CSV, TRAINING_SIGMA_DIR, Results
from .tables import MODULE_COLUMNS
from .snapshot import Snapshot, headline, snapshot

STEP_FILE = "step-{step:08d}.safetensors"
# of training_spectra.csv: the step, then the modules.csv columns a snapshot of factors in memory has (no
# base, every value computed), then the seconds it took
ROW_COLUMNS = [
    "step",
    *(
        c
        for c in MODULE_COLUMNS
        if c not in ("base_fro_norm", "relative_update", "rank_beyond_k", "sigma_floor")
    ),
    "seconds",
]


# ---- the record on disk ---------------------------------------------------------------------------------


def recorded_steps(out: str | Path) -> list[int]:
    """The steps whose σ are recorded in ``out`` (from the file names; nothing is read)."""
    folder = Path(out) / TRAINING_SIGMA_DIR
    if not folder.is_dir():
        return []
    return sorted(
        int(m[1]) for p in folder.iterdir() if (m := re.fullmatch(r"step-(\d+)\.safetensors", p.name))
    )


def clear_record(out: str | Path, after: int = -1) -> None:
    """Drop the recorded steps greater than ``after`` (all by default): a resumed run continues the record, a
    new run starts it anew. One transaction (``lorascope.outputs``): files lorascope did not write stay."""
    out = Path(out)
    later = [s for s in recorded_steps(out) if s > after]
    if not later and not (after < 0 and (out / TRAINING_CSV).is_file()):
        return
    from .outputs import writing

    kept = read_training(out)
    with writing(out, "record", mode="update", link=True) as tx:
        _write_record(tx, out, kept[kept["step"] <= after] if kept is not None else None, later)


def _write_record(tx: Any, out: Path, rows: pd.DataFrame | None, dropped_steps: list[int]) -> None:
    """Stage the record's table (``rows``; none when empty) and drop the σ files of ``dropped_steps``."""
    for s in dropped_steps:
        tx.drop(f"{TRAINING_SIGMA_DIR}/{STEP_FILE.format(step=s)}")
    tx.fresh(TRAINING_CSV)
    if rows is not None and not rows.empty:
        rows.to_csv(tx.file(TRAINING_CSV), index=False)
    else:
        tx.drop(TRAINING_CSV)


def record_spectra(
    model: Any, step: int, out: str | Path, adapter: str | None = None, context: dict[str, Any] | None = None
) -> dict[str, float]:
    """Record the spectra of ``model`` at ``step`` in the results folder ``out``, from any PyTorch loop.

    Appends to ``training_spectra.csv`` and writes ``training_spectra/step-<step>.safetensors``; a step
    recorded before is replaced together with every later one (a resumed run continues its record). ``out``
    also holds the latest snapshot as a results folder, so ``lorascope report out`` and ``load_results(out)``
    read it. Each record is one transaction (``lorascope.outputs.writing``): an interrupted one leaves the
    record as it was, and files lorascope did not write are never touched.

    Args:
        model: a PEFT model being trained.
        step: the optimizer step.
        out: the results folder (created).
        adapter: the adapter to read (default: the active one).
        context: extra facts for summary.json's 'training' entry (epoch, run name …).

    Returns:
        The headline numbers (``headline``), to log wherever the loop logs.

    Raises:
        LorascopeError: see ``adapter_modules``; ``out`` is a file, or holds files lorascope did not write.
    """
    from safetensors.numpy import save_file

    from .outputs import writing
    from .results import MODULES_CSV, SPECTRA_FILE, SUMMARY_JSON, VECTORS_CSV

    out = Path(out)
    started = time.perf_counter()
    snap = snapshot(model, step, adapter)
    earlier = read_training(out)
    earlier = earlier[earlier["step"] < step] if earlier is not None else None
    rows = snap.modules.assign(step=step)[ROW_COLUMNS]
    table = rows if earlier is None or earlier.empty else pd.concat([earlier, rows], ignore_index=True)
    results = Results(snap.modules, snap.spectra, _summary(model, snap, out, context, started))
    with writing(out, "record", mode="update", link=True) as tx:
        _write_record(tx, out, table, [s for s in recorded_steps(out) if s >= step])
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in snap.spectra.items()},
            str(tx.file(f"{TRAINING_SIGMA_DIR}/{STEP_FILE.format(step=step)}")),
            metadata={"step": str(step)},
        )
        for name in (MODULES_CSV, VECTORS_CSV, SPECTRA_FILE, SUMMARY_JSON):
            tx.fresh(name)  # staged as hard links: rewrite new files, never the linked ones in place
        results.write(tx.stage)
    return headline(snap)


def _summary(
    model: Any, snap: Snapshot, out: Path, context: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    from .results import versions

    config = _peft_config(model)
    m = snap.modules
    return {
        "lorascope_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "adapter",
        "inputs": [
            {
                "role": "adapter",
                "path": f"{type(model).__name__} in training",
                "format": "peft (in memory)",
                "modules": len(m),
                **({"config": config} if config else {}),
            }
        ],
        "options": {"source": "lorascope.callbacks"},
        "versions": versions(),
        "totals": {
            "modules": len(m),
            "vectors": 0,
            "skipped": 0,
            "delta_parameters": int((m["rows"] * m["cols"]).sum()),
            "adapter_parameters": snap.adapter_parameters,
        },
        "timing": {
            "total_seconds": round(time.perf_counter() - started, 3),
            "module_seconds": round(float(m["seconds"].sum()), 3),
        },
        "warnings": snap.warnings,
        "training": {"step": snap.step, "steps_recorded": len(recorded_steps(out)), **(context or {})},
    }


def _peft_config(model: Any) -> dict[str, Any]:
    cfg = getattr(model, "peft_config", None)
    if not isinstance(cfg, dict) or not cfg:
        return {}
    c = next(iter(cfg.values()))
    keys = (
        "peft_type",
        "r",
        "lora_alpha",
        "use_rslora",
        "use_dora",
        "target_modules",
        "base_model_name_or_path",
    )
    out = {}
    for k in keys:
        v = getattr(c, k, None)
        if v is not None:
            out[k] = sorted(v) if isinstance(v, (set, frozenset)) else str(v) if k == "peft_type" else v
    return out


def read_training(path: str | Path) -> pd.DataFrame | None:
    """``training_spectra.csv`` of a results folder (one row per step and module), or None where it has none.

    Raises:
        LorascopeError: the file is there but unreadable or lacks the columns lorascope writes.
    """
    csv = Path(path) / TRAINING_CSV
    if not csv.is_file():
        return None
    try:
        table = pd.read_csv(csv)
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"could not read {csv}: {' '.join(str(exc).split())[:200]}.") from None
    missing = [
        c
        for c in ("step", "name", "layer", "module", "entropy_rank", "rank_90", "fro_norm")
        if c not in table.columns
    ]
    if missing:
        raise LorascopeError(
            f"{csv} lacks the column(s) {', '.join(missing)}; it was not written by lorascope."
        )
    return table


def training_spectrum(path: str | Path, step: int) -> dict[str, np.ndarray]:
    """σ of every module recorded at ``step`` (float64, descending).

    Raises:
        LorascopeError: no spectra were recorded at that step.
    """
    from safetensors.numpy import load_file

    f = Path(path) / TRAINING_SIGMA_DIR / STEP_FILE.format(step=step)
    if not f.is_file():
        raise LorascopeError(
            f"no spectra recorded at step {step} in {path}; recorded steps: "
            f"{', '.join(map(str, recorded_steps(path)[:20])) or 'none'}."
        )
    return {k: v.astype(np.float64) for k, v in load_file(str(f)).items()}
