"""Watch a training run: every N steps, the exact spectrum of each adapter module of a PEFT model in training.

- ``snapshot(model)``: one row of per-matrix metrics and the singular values of each adapter module, from the
  tensors in memory, by the family's own form (``lorascope.delta.form_from``) and ``lorascope.linalg.svd`` —
  the factored route for LoRA (QR of B and Aᵀ, SVD of the r×r core), Khatri–Rao for LoHa, Kronecker for
  LoKr. No dense ΔW is formed. Pure: no files.
- ``record_spectra(model, step, out)``: the plain function for any PyTorch loop. Appends the rows (with their
  step) to ``out/training_spectra.csv`` and σ to ``out/training_spectra/step-<step>.safetensors``, and keeps
  ``out`` a results folder of the latest snapshot (modules.csv, singular_values.safetensors, summary.json),
  so ``lorascope report out`` shows the adapter as it is now and its metrics against step.
- ``SpectrumCallback(out, every_n_steps)``: the same as a transformers ``TrainerCallback``; the headline
  numbers go into the trainer's logs, and so to TensorBoard, W&B or trackio through its own reporters.

What is recorded per family: LoRA and rsLoRA, ΔW = s·B@A (Hu et al. 2021, Eq. 3); LoHa and LoKr, their exact
updates (``lorascope.delta.lycoris``). DoRA: the low-rank direction update s·B@A — the exact DoRA update
m ⊙ (W0 + sBA)/‖W0 + sBA‖ − W0 is dense and needs W0, so it is left to ``lorascope spectrum BASE ADAPTER``;
the rows say so (family 'dora', a warning in summary.json), as ``lorascope spectrum ADAPTER`` does for a saved
DoRA adapter without its base.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .delta import form_from
from .errors import LorascopeError
from .linalg import svd
from .metrics import module_metrics
from .names import module_type, split_name, strip_adapter_prefix
from .results import Results, modules_frame

TRAINING_CSV = "training_spectra.csv"
TRAINING_SIGMA_DIR = "training_spectra"
STEP_FILE = "step-{step:08d}.safetensors"
ROW_COLUMNS = [  # of training_spectra.csv: the step, then the modules.csv columns a snapshot has
    "step",
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
    "stable_rank",
    "entropy_rank",
    "rank_90",
    "rank_95",
    "rank_99",
    "numerical_rank",
    "gd_rank",
    "n_singular",
    "seconds",
]
HEADLINE_PREFIX = "lorascope/"
DORA_NOTE = (
    "DoRA module(s) recorded as their low-rank direction update s·B@A, without the magnitude vector: the "
    "exact DoRA update needs the base weight and is dense (lorascope spectrum BASE ADAPTER computes it)"
)


# ---- one module of a PEFT model -------------------------------------------------------------------------


@dataclass
class Module:
    """One adapter module of a model in memory: its family, parts (as lorascope names them; the model's own
    tensors, detached, in their dtype and on their device) and ΔW's shape."""

    name: str
    family: str
    parts: dict[str, Any]
    scale: float
    shape: tuple[int, int]
    rank: int | None


def _lora(layer: Any, adapter: str, name: str) -> Module:
    if adapter in layer.lora_A:
        a, b = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
        up, down = b.reshape(b.shape[0], -1), a.reshape(a.shape[0], -1)  # conv: (out, r), (r, in·kh·kw)
    else:  # Embedding: A (r, num), B (dim, r); ΔW (num, dim) = s·(B @ A)ᵀ = s·Aᵀ @ Bᵀ
        a, b = layer.lora_embedding_A[adapter].detach(), layer.lora_embedding_B[adapter].detach()
        up, down = a.T, b.T
    family = "dora" if layer.use_dora.get(adapter, False) else "lora"
    return Module(
        name,
        family,
        {"up": up, "down": down},
        float(layer.scaling[adapter]),
        (int(up.shape[0]), int(down.shape[1])),
        int(layer.r[adapter]),
    )


def _lycoris(names: tuple[str, ...], family: str) -> Callable[[Any, str, str], Module]:
    def read(layer: Any, adapter: str, name: str) -> Module:
        parts = {p: getattr(layer, p)[adapter].detach() for p in names if adapter in getattr(layer, p, {})}
        w = layer.get_base_layer().weight
        shape = (int(w.shape[0]), int(np.prod(w.shape[1:])))  # (out, in·kh·kw), as PEFT reshapes ΔW
        return Module(name, family, parts, float(layer.scaling[adapter]), shape, int(layer.r[adapter]))

    return read


def _readers() -> dict[type, Callable[[Any, str, str], Module]]:
    """PEFT layer class -> reader of its adapter tensors (the families lorascope.delta knows)."""
    from peft.tuners.loha import LoHaLayer
    from peft.tuners.lokr import LoKrLayer
    from peft.tuners.lora import LoraLayer

    return {
        LoraLayer: _lora,
        LoHaLayer: _lycoris(
            ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"), "loha"
        ),
        LoKrLayer: _lycoris(
            ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"), "lokr"
        ),
    }


UNSUPPORTED_LORA = (
    "ParamWrapper",
    "MultiheadAttention",
)  # LoRA on raw parameters / fused attention: no 2-D ΔW here


def adapter_modules(model: Any, adapter: str | None = None) -> list[Module]:
    """Every adapter module of a PEFT model, named as ``lorascope spectrum`` names the saved adapter's.

    Args:
        model: a ``peft.PeftModel`` (or any module holding PEFT tuner layers).
        adapter: the adapter to read (default: the active one).

    Raises:
        LorascopeError: no PEFT adapter layer, several active adapters and none named, a tuner type lorascope
            has no form for, or parameters sharded across processes (DeepSpeed ZeRO-3, FSDP).
    """
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        raise LorascopeError("watching adapter spectra needs PEFT: pip install 'lorascope[hf]'.") from None
    readers = _readers()
    modules, unsupported = [], set()
    for path, layer in model.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        reader = next((r for cls, r in readers.items() if isinstance(layer, cls)), None)
        if reader is None or type(layer).__name__ in UNSUPPORTED_LORA:
            unsupported.add(type(layer).__module__.split(".")[-2] + "." + type(layer).__name__)
            continue
        name = _active(layer, adapter)
        if name is not None:
            modules.append(reader(layer, name, strip_adapter_prefix(path)))
    if unsupported:
        raise LorascopeError(
            "the model has PEFT layers of a kind lorascope has no update form for "
            f"({', '.join(sorted(unsupported))}); it records LoRA, rsLoRA, DoRA (direction), LoHa and LoKr "
            "adapters."
        )
    if not modules:
        raise LorascopeError(
            f"the model ({type(model).__name__}) has no PEFT adapter layer"
            + (f" with an adapter named {adapter!r}" if adapter else "")
            + "; wrap it with peft.get_peft_model first."
        )
    empty = [m.name for m in modules if any(p.numel() == 0 for p in m.parts.values())]
    if empty:
        raise LorascopeError(
            f"the adapter tensors of {empty[0]} (and {len(empty) - 1} more) are empty in this process: the "
            "parameters are sharded across processes (DeepSpeed ZeRO-3 or FSDP), and lorascope reads whole "
            "tensors. Record from a run without parameter sharding, or analyze the saved checkpoints with "
            "lorascope spectrum."
        )
    return modules


def _active(layer: Any, adapter: str | None) -> str | None:
    if adapter is not None:
        return adapter if adapter in _stored(layer) else None
    active = [a for a in layer.active_adapters if a in _stored(layer)]
    if len(active) > 1:
        raise LorascopeError(
            f"several adapters are active ({', '.join(active)}); name the one to record (adapter='…')."
        )
    return active[0] if active else None


def _stored(layer: Any) -> set[str]:
    names: set[str] = set()
    for attr in layer.adapter_layer_names:
        names.update(getattr(layer, attr, {}).keys())
    return names


# ---- the snapshot (pure) --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """One step's spectra: a modules table (the modules.csv schema) and σ per module, descending, float64."""

    step: int
    modules: pd.DataFrame
    spectra: dict[str, np.ndarray]
    families: dict[str, int] = field(default_factory=dict)  # family -> module count
    adapter_parameters: int = 0  # stored adapter tensors read (DoRA's magnitude vectors are not read)

    @property
    def warnings(self) -> list[dict[str, str]]:
        n = self.families.get("dora", 0)
        return [{"name": "*", "reason": f"{n} {DORA_NOTE}"}] if n else []


def snapshot(model: Any, step: int = 0, adapter: str | None = None) -> Snapshot:
    """The exact spectrum of every adapter module of ``model`` as it is now (no files, no dense ΔW).

    Args:
        model: a PEFT model (weights on any device; the SVDs run where the weights are, in float64).
        step: the training step, recorded with the rows.
        adapter: the adapter to read (default: the active one).

    Returns:
        A ``Snapshot``: per-matrix metrics (docs/METRICS.md) as ``lorascope spectrum`` computes them for the
        saved adapter, and σ per module.

    Raises:
        LorascopeError: see ``adapter_modules``.
    """
    import torch

    rows, spectra, families, params = [], {}, {}, 0
    with torch.no_grad(), _one_thread():
        for m in adapter_modules(model, adapter):
            start = time.perf_counter()
            family = (
                "lora" if m.family == "dora" else m.family
            )  # DoRA: the direction update s·B@A (module docstring)
            parts = {k: v.to(torch.float64) for k, v in m.parts.items()}  # one module in float64 at a time
            result = svd(form_from(family, parts, m.scale, name=m.name, shape=m.shape))
            del parts
            sigma = np.asarray(result.s, dtype=np.float64)
            layer, module = split_name(m.name)
            row = {
                "name": m.name,
                "layer": layer,
                "module": module,
                "rows": m.shape[0],
                "cols": m.shape[1],
                "source": "peft",
                "family": m.family,
                "method": result.method,
                "lora_rank": m.rank,
                "scale": m.scale,
            }
            row.update(module_metrics(sigma, m.shape, result.fro_norm, result.complete))
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            spectra[m.name] = sigma
            families[m.family] = families.get(m.family, 0) + 1
            params += sum(int(p.numel()) for p in m.parts.values())
    return Snapshot(step, modules_frame(rows), spectra, families, params)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One CPU thread for torch while the spectra are taken: QR of an (m, r) factor with r ≈ 16 is too small
    to split, and threads only add overhead (and contend with a data loader). Restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def headline(snap: Snapshot) -> dict[str, float]:
    """The numbers a training dashboard shows: medians over modules and the total update norm.

    Keys (prefixed 'lorascope/'): entropy_rank, rank_90 and stable_rank (medians over modules), update_norm
    (sqrt Σ ‖ΔW‖_F² over modules), spectral_norm_max, and entropy_rank/<module type> (median per type).
    """
    m = snap.modules
    if m.empty:
        return {}
    out = {
        "entropy_rank": float(m["entropy_rank"].median()),
        "rank_90": float(m["rank_90"].astype("float64").median()),
        "stable_rank": float(m["stable_rank"].median()),
        "update_norm": float(math.sqrt(float((m["fro_norm"] ** 2).sum()))),
        "spectral_norm_max": float(m["spectral_norm"].max()),
    }
    types = m["module"].map(module_type)
    for t, group in m.groupby(types, sort=True):
        out[f"entropy_rank/{t}"] = float(group["entropy_rank"].median())
    return {HEADLINE_PREFIX + k: v for k, v in out.items()}


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
    from .analysis import versions

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


# ---- the transformers callback --------------------------------------------------------------------------

try:
    from transformers import TrainerCallback
except ImportError:  # record_spectra works without transformers; the callback needs it

    class TrainerCallback:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise LorascopeError(
                "SpectrumCallback is a transformers TrainerCallback: pip install 'lorascope[hf]'."
            )


class SpectrumCallback(TrainerCallback):
    """A transformers ``TrainerCallback`` recording adapter spectra every ``every_n_steps`` optimizer steps.

    Records at the start of training, every N steps and at the end (``record_spectra``), on the main process
    only. A new run (global step 0) starts the record in ``out`` anew; a resumed run continues it. The
    headline numbers (``headline``) are added to the trainer's next logs, so every reporter that runs after
    this callback (TensorBoard, W&B, trackio, …) receives them, and to ``state.log_history``.
    ``attach(trainer)`` puts the callback before the trainer's reporters; a callback given as
    ``Trainer(callbacks=[…])`` runs after them and says so once.

        trainer = Trainer(model=peft_model, args=args, train_dataset=ds)
        SpectrumCallback(out="reports/run-spectra", every_n_steps=50).attach(trainer)
        trainer.train()

    Args:
        out: the results folder (``lorascope report OUT`` renders it).
        every_n_steps: record every this many optimizer steps.
        adapter: the adapter to record (default: the active one).
        log: add the headline numbers to the trainer's logs.
    """

    def __init__(
        self, out: str | Path, every_n_steps: int = 50, adapter: str | None = None, log: bool = True
    ):
        super().__init__()
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.out = Path(out)
        self.every_n_steps = every_n_steps
        self.adapter = adapter
        self.log = log
        self.pending: dict[str, float] = {}
        self.last_step: int | None = None
        self.attached = False
        self.seconds: list[float] = []  # wall time of each record, for the cost of watching

    def attach(self, trainer: Any) -> SpectrumCallback:
        """Add this callback to ``trainer`` ahead of its reporters, so they receive the headline numbers."""
        trainer.callback_handler.callbacks.insert(0, self)
        self.attached = True
        return self

    def _record(self, state: Any, model: Any) -> None:
        if not state.is_world_process_zero or model is None or state.global_step == self.last_step:
            return
        start = time.perf_counter()
        numbers = record_spectra(
            model,
            state.global_step,
            self.out,
            self.adapter,
            context={"epoch": state.epoch, "every_n_steps": self.every_n_steps},
        )
        self.seconds.append(time.perf_counter() - start)
        self.last_step = state.global_step
        self.pending = {**numbers, HEADLINE_PREFIX + "record_seconds": self.seconds[-1]}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        clear_record(self.out, after=state.global_step if state.global_step else -1)
        if self.log and not self.attached and _reporters(args):
            import warnings

            warnings.warn(
                f"SpectrumCallback runs after the trainer's reporters ({', '.join(_reporters(args))}), so "
                f"they do not receive its numbers (they are in {self.out / TRAINING_CSV} and "
                "trainer_state.json). Add it with SpectrumCallback(...).attach(trainer) to send them to the "
                "reporters too.",
                stacklevel=2,
            )
        self._record(state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.every_n_steps == 0:
            self._record(state, model)
            if self.log and self.pending:
                control.should_log = True  # the numbers go out with this step's logs
        return control

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not self.log or not self.pending or logs is None:
            return
        logs.update(self.pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self.pending)
        self.pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._record(state, model)  # the final adapter, when the last step was not a multiple of N


def _reporters(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return [r for r in report_to if r not in ("none", None)]
