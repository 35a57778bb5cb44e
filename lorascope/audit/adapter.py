"""Owns the adapter audit: a PEFT adapter's tensors against its own adapter_config.json and, given the base
model's shapes, against what that config would create on it.

Findings: actual versus configured parameter counts, tensors whose rank differs from ``r`` / ``rank_pattern``,
targets that reached nothing or more than one module type, ``lora_B`` all zeros (an update that is exactly
zero: never trained), NaN or Inf values, and the full tensors saved for ``modules_to_save``. Tensor values
are read once (``scan_adapter``); the checks are pure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..checkpoint import Adapter
from ..checkpoint.peft import open_peft
from ..errors import LorascopeError
from ..names import NameIndex
from .count import LoraCount, LoraSettings, count_lora
from .shapes import ModelShapes, ModuleShape, layer_of, type_of
from .targets import ALL_LINEAR, TargetSpec, match_targets, names_component

SEVERITIES = ("error", "warning", "note")
# modules PEFT adds to modules_to_save for a task type (PeftModelForSequenceClassification and friends)
TASK_SAVED = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}
FACTORS = ("lora_embedding_A", "lora_embedding_B", "lora_A", "lora_B")
COLUMNS = ["name", "layer", "module_type", "kind", "rows", "cols", "tensor_rank", "r", "actual", "configured",
           "zero_factor", "nonfinite"]  # fmt: skip


class TensorStats(NamedTuple):
    """What the adapter audit needs from a tensor's values."""

    all_zero: bool
    nan: int
    inf: int


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | note
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class AdapterAudit:
    """Everything the adapter audit found."""

    path: str
    config: dict[str, Any]
    modules: pd.DataFrame  # one row per LoRA module (``COLUMNS``)
    saved: pd.DataFrame  # one row per full tensor (modules_to_save, biases)
    targets: dict[str, dict[str, int]]  # config target -> {module type: modules reached}
    findings: tuple[Finding, ...]
    model_count: LoraCount | None = None  # the config applied to the base model, when its shapes were given

    actual = property(lambda self: int(self.modules["actual"].sum()))
    configured = property(lambda self: int(self.modules["configured"].sum()))
    saved_params = property(lambda self: int(self.saved["params"].sum()) if not self.saved.empty else 0)
    trainable = property(lambda self: self.actual + self.saved_params)
    ok = property(lambda self: not any(f.severity == "error" for f in self.findings))


def load_adapter(path: str | Path) -> Adapter:
    """A PEFT LoRA or DoRA adapter folder, opened lazily (headers only).

    Raises:
        LorascopeError: the adapter holds modules of another family (the audit counts LoRA factors).
    """
    adapter = open_peft(Path(path).expanduser())
    if any(f not in ("lora", "dora") for f in adapter.families):
        raise LorascopeError(
            f"{adapter.path} is a {', '.join(adapter.families)} adapter; the parameter audit counts LoRA and "
            "DoRA adapters only (lorascope spectrum reads the other families)."
        )
    return adapter


def scan_adapter(adapter: Adapter) -> dict[str, TensorStats]:
    """Values of every adapter tensor (LoRA factors, DoRA magnitudes, saved modules, vectors) by key."""
    refs = [r for m in adapter.modules for r in (m.left, m.right, m.magnitude) if r is not None]
    out = {}
    for ref in (*refs, *adapter.dense.values(), *adapter.vectors.values()):
        values = ref.load_numpy(np.float32, finite=False)  # counted here, not refused
        out[ref.key] = TensorStats(not values.any(), int(np.isnan(values).sum()), int(np.isinf(values).sum()))
    return out


def settings_of(config: dict[str, Any]) -> LoraSettings:
    """The LoraSettings an adapter_config.json describes: target_modules as PEFT reads it (a list of names, or
    a string: a full-match regex or all-linear); modules_to_save with what its task type adds."""
    value, layers = config.get("target_modules"), config.get("layers_to_transform")
    if isinstance(value, str):
        targets = TargetSpec(preset=ALL_LINEAR) if value.lower() == ALL_LINEAR else TargetSpec(regex=value)
    else:
        targets = TargetSpec(names=tuple(str(v) for v in value or ()))
    layers = [layers] if isinstance(layers, int) else layers
    saved = [*(config.get("modules_to_save") or ()), *TASK_SAVED.get(str(config.get("task_type")), ())]
    return LoraSettings(
        rank=int(config.get("r", 8)), alpha=float(config.get("lora_alpha", 8)), targets=targets,
        layers=tuple(layers) if layers else None, rank_pattern=dict(config.get("rank_pattern") or {}),
        dora=bool(config.get("use_dora")), bias=str(config.get("bias") or "none"),
        modules_to_save=tuple(dict.fromkeys(saved)), allow_unmatched=True,
        ensure_weight_tying=bool(config.get("ensure_weight_tying")),
        layers_pattern=config.get("layers_pattern"),
    )  # fmt: skip


def audit_adapter(adapter: Adapter, stats: dict[str, TensorStats], model: ModelShapes | None = None):
    """Check an adapter against its own config and, when ``model`` is given, against the base model.

    Args:
        adapter: an opened PEFT adapter.
        stats: values of its tensors by key (``scan_adapter``).
        model: the base model's shapes, optional.
    """
    settings = settings_of(adapter.config)
    rows = []
    for m in adapter.modules:
        (out, inn), held = m.shape, [r for r in (m.left, m.right, m.magnitude) if r is not None]
        zero = [next((p for p in FACTORS if p in r.key), r.key) for r in held[:2] if stats[r.key].all_zero]
        bad = sum(stats[r.key].nan + stats[r.key].inf for r in held)
        magnitude = (inn if m.kind == "embedding" else out) if settings.dora else 0
        actual, configured = sum(math.prod(r.shape) for r in held), m.rank * (out + inn) + magnitude
        rows.append((m.name, layer_of(m.name), type_of(m.name), m.kind, out, inn, m.tensor_rank, m.rank,
                     actual, configured, ",".join(zero), bad))  # fmt: skip
    saved = []
    for name, ref in {**adapter.dense, **adapter.vectors}.items():
        info, module = ref.store.info(ref.key), name.removesuffix(".weight").removesuffix(".bias")
        saved.append((name, tuple(info.shape), info.dtype, info.numel, info.nbytes, module))
    # the adapter's own modules as a model, to match its config's targets against
    own = [ModuleShape(m.name, "embedding" if m.kind == "embedding" else "linear", m.shape, 0)
           for m in adapter.modules]  # fmt: skip
    own = ModelShapes("adapter", "unknown", tuple(own))
    match = match_targets(own, settings.targets, settings.layers, (), settings.layers_pattern)
    audit = AdapterAudit(
        str(adapter.path), adapter.config, pd.DataFrame(rows, columns=COLUMNS),
        pd.DataFrame(saved, columns=["name", "shape", "dtype", "params", "bytes", "module"]),
        {t: dict(Counter(map(type_of, names))) for t, names in match.by_target.items()}, (),
    )  # fmt: skip
    notes = [Finding("note", f"{w['name']}: {w['reason']}") for w in adapter.warnings
             if not w["reason"].startswith("tensors have rank")]  # reported as an error below  # fmt: skip
    audit = replace(audit, findings=(*notes, *_findings(audit, stats, settings.modules_to_save)))
    return audit if model is None else _against_model(audit, adapter, model, settings)


def _findings(a: AdapterAudit, stats: dict[str, TensorStats], listed: tuple[str, ...]) -> list[Finding]:
    """Ranks other than the config's, all-zero factors, NaN or Inf, full tensors, targets reaching nothing
    or several module types."""
    out, table, saved = [], a.modules, a.saved
    if not (off := table[table["tensor_rank"] != table["r"]]).empty:
        shown = ", ".join(f"{r.name} (rank {r.tensor_rank}, config r={r.r})" for r in off[:5].itertuples())
        shown += f" and {len(off) - 5} more" if len(off) > 5 else ""
        what = f"{len(off)} module(s) hold tensors whose rank differs from r / rank_pattern in adapter_config"
        out.append(("error", f"{what}.json: {shown}. PEFT would refuse to load them (size mismatch)."))
    if not (zero := table[table["zero_factor"] != ""]).empty:
        every = len(zero) == len(table)
        scope = f"{len(zero)} of {len(table)} modules (e.g. {zero['name'].iloc[0]})"
        end = " — this adapter never trained (or was saved before training)." if every else "."
        what = f"{zero['zero_factor'].iloc[0]} is all zeros in {'every module' if every else scope}"
        out.append(("error" if every else "warning", f"{what}: ΔW = s·B·A is exactly zero there, as PEFT "
                    f"initializes it{end}"))  # fmt: skip
    if bad := {k: s for k, s in stats.items() if s.nan or s.inf}:
        shown = ", ".join(f"{k} ({s.nan} NaN, {s.inf} Inf)" for k, s in list(bad.items())[:4])
        out.append(("error", f"{len(bad)} tensor(s) hold NaN or Inf values: {shown}."))
    if not saved.empty:
        shown = ", ".join(f"{r.name} {'×'.join(map(str, r.shape))}" for r in saved.head(6).itertuples())
        total = f"{int(saved['params'].sum()):,} parameters, {int(saved['bytes'].sum()):,} bytes"
        out.append(("note", f"{len(saved)} full tensor(s) saved beside the LoRA factors ({total}): {shown}"))
    for module in dict.fromkeys(saved["module"]):
        by_suffix = [t for t in listed if module.endswith(t)]
        if any(names_component(t, module) for t in listed):
            continue
        if by_suffix:
            n = int(saved.loc[saved["module"] == module, "params"].sum())
            why = f"PEFT matches modules_to_save by plain string suffix, so {by_suffix[0]!r} also reaches"
            out.append(("warning", f"{module} was saved and trained in full although modules_to_save "
                        f"{list(listed)} does not name it: {why} {module} ({n:,} parameters)."))  # fmt: skip
        else:
            out.append(("note", f"{module} is saved in full but modules_to_save ({list(listed) or 'none'}) "
                        "does not name it (a trained bias, or a tensor saved by hand)."))  # fmt: skip
    if dead := [t for t, types in a.targets.items() if not types]:
        why = "PEFT ignores a target that matches nothing as long as another one matches"
        out.append(("warning", f"target(s) {', '.join(map(repr, dead))} in adapter_config.json reached no "
                    f"module in this adapter: {why}."))  # fmt: skip
    for t, types in a.targets.items():
        listed_types = ", ".join(f"{k} (×{n})" for k, n in types.items())
        out += (
            [("note", f"target {t!r} reaches {len(types)} module types: {listed_types}.")]
            if len(types) > 1
            else []
        )
    return [Finding(*f) for f in out]


def _against_model(audit: AdapterAudit, adapter: Adapter, model: ModelShapes, settings: LoraSettings):
    """Expected modules and counts from the config on the base model, compared with what the adapter holds."""
    count, held, shapes = count_lora(model, settings), {m.name: m for m in adapter.modules}, model.by_name()
    index, missing, mismatched, found = NameIndex(held), [], [], set()
    tied = count.tying.tied_lora if count.tying.embedding in count.match.modules else ()  # PEFT saves them
    for name in (*count.match.modules, *tied):
        if (hit := index.find(name)) is None:
            missing.append(name)
        elif tuple(held[hit].shape) != tuple(want := shapes[name].shape):
            mismatched.append(f"{hit} {held[hit].shape} vs the model's {want}")
        found.add(hit)
    extra, out = [n for n in held if n not in found], [*audit.findings]
    if mismatched:
        why = f"this adapter was trained on another model: {'; '.join(mismatched[:3])}"
        out.append(
            Finding(
                "error", f"{len(mismatched)} module(s) differ in shape from the given base model — {why}."
            )
        )
    if missing:
        held_not = f"{len(missing)} module(s) of the base model that the adapter does not hold"
        out.append(Finding("warning", f"the config reaches {held_not}, e.g. {', '.join(missing[:3])}."))
    if extra:
        created = f"{len(extra)} module(s) its config would not create on this model"
        out.append(Finding("warning", f"the adapter holds {created}, e.g. {', '.join(extra[:3])}."))
    return replace(audit, findings=tuple(out), model_count=count)
