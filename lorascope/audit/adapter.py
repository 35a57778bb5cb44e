"""Owns the adapter audit: a PEFT adapter's tensors against its own adapter_config.json (and, given the base
model's shapes, against what that config would create on it), and the reading of its tensor values.

Findings: actual versus configured parameter counts, tensors whose rank differs from ``r`` / ``rank_pattern``,
targets that reached nothing and targets that reached more than one module type, ``lora_B`` all zeros (an
update that is exactly zero: never trained), NaN or Inf values, and the full tensors saved for
``modules_to_save``. Tensor values are read once, as ``TensorStats`` (``scan_adapter``); the checks are pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkpoint import Adapter
from ..checkpoint.base import TensorRef
from ..checkpoint.peft import open_peft
from ..errors import LorascopeError
from ..names import NameIndex
from .count import LoraCount, LoraSettings, count_lora, peft_match, peft_tying
from .shapes import ModelShapes, ModuleShape, layer_of, type_of
from .targets import ALL_LINEAR, TargetSpec, in_modules_to_save, match_targets

SEVERITIES = ("error", "warning", "note")
# modules PEFT adds to modules_to_save for a task type (PeftModelForSequenceClassification and friends)
TASK_SAVED = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"), "QUESTION_ANS": ("qa_outputs",)}


@dataclass(frozen=True)
class TensorStats:
    """What the adapter audit needs from a tensor's values."""

    numel: int
    all_zero: bool
    nan: int
    inf: int


def load_adapter(path: str | Path) -> Adapter:
    """A PEFT LoRA or DoRA adapter folder, opened lazily (headers only).

    Raises:
        LorascopeError: the adapter holds modules of another family (the audit counts LoRA factors).
    """
    adapter = open_peft(Path(path).expanduser())
    if any(f not in ("lora", "dora") for f in adapter.families):
        raise LorascopeError(
            f"{adapter.path} is a {', '.join(adapter.families)} adapter; the parameter audit counts LoRA and DoRA "
            "adapters only (lorascope spectrum reads the other families)."
        )
    return adapter


def scan_adapter(adapter: Adapter) -> dict[str, TensorStats]:
    """Values of every adapter tensor (LoRA factors, DoRA magnitudes, saved modules, vectors), by stored key."""
    refs: dict[str, TensorRef] = {}
    for ref in [r for m in adapter.modules for r in (m.left, m.right, m.magnitude)] + [
        *adapter.dense.values(),
        *adapter.vectors.values(),
    ]:
        if ref is not None:
            refs[ref.key] = ref
    out = {}
    for key, ref in refs.items():
        values = ref.load_numpy(np.float32, finite=False)  # counted here, not refused
        out[key] = TensorStats(values.size, not values.any(), int(np.isnan(values).sum()), int(np.isinf(values).sum()))
    return out


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
    modules: pd.DataFrame  # one row per LoRA module
    saved: pd.DataFrame  # one row per full tensor (modules_to_save, biases)
    targets: dict[str, dict[str, int]]  # config target -> {module type: modules reached}
    findings: tuple[Finding, ...]
    model_count: LoraCount | None = None  # the config applied to the base model, when its shapes were given
    model_total: int | None = None

    @property
    def actual(self) -> int:
        return int(self.modules["actual"].sum())

    @property
    def configured(self) -> int:
        return int(self.modules["configured"].sum())

    @property
    def saved_params(self) -> int:
        return int(self.saved["params"].sum()) if not self.saved.empty else 0

    @property
    def trainable(self) -> int:
        return self.actual + self.saved_params

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def target_spec(config: dict[str, Any]) -> TargetSpec:
    """target_modules as PEFT reads it: a list of names, or a string that is a full-match regex (or all-linear)."""
    value = config.get("target_modules")
    if value is None:
        return TargetSpec()
    if isinstance(value, str):
        return TargetSpec(preset=ALL_LINEAR) if value.lower() == ALL_LINEAR else TargetSpec(regex=value)
    return TargetSpec(names=tuple(str(v) for v in value))


def settings_of(config: dict[str, Any]) -> LoraSettings:
    """The LoraSettings an adapter_config.json describes; modules_to_save includes what its task type adds."""
    layers = config.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    return LoraSettings(
        rank=int(config.get("r", 8)), alpha=float(config.get("lora_alpha", 8)), targets=target_spec(config),
        layers=tuple(layers) if layers else None, rank_pattern=dict(config.get("rank_pattern") or {}),
        dora=bool(config.get("use_dora")), bias=str(config.get("bias") or "none"),
        modules_to_save=tuple(dict.fromkeys([*(config.get("modules_to_save") or ()),
                                             *TASK_SAVED.get(str(config.get("task_type")), ())])),
        allow_unmatched=True, ensure_weight_tying=bool(config.get("ensure_weight_tying")),
    )


def _adapter_shapes(adapter: Adapter) -> ModelShapes:
    """The adapter's own modules as a model, so config targets can be matched against what it holds."""
    mods = tuple(ModuleShape(m.name, "embedding" if m.kind == "embedding" else "linear", m.shape, 0) for m in adapter.modules)
    return ModelShapes(arch="adapter", head="unknown", modules=mods, shapes_from="headers")


def _factor(key: str) -> str:
    return next((p for p in ("lora_embedding_A", "lora_embedding_B", "lora_A", "lora_B") if p in key), key)


def audit_adapter(adapter: Adapter, stats: dict[str, TensorStats], model: ModelShapes | None = None) -> AdapterAudit:
    """Check an adapter against its own config and, when ``model`` is given, against the base model.

    Args:
        adapter: an opened PEFT adapter.
        stats: values of its tensors by key (``scan_adapter``).
        model: the base model's shapes, optional.
    """
    cfg = adapter.config
    settings = settings_of(cfg)
    findings: list[Finding] = [Finding("note", f"{w['name']}: {w['reason']}") for w in adapter.warnings
                               if not w["reason"].startswith("tensors have rank")]  # reported below, as an error
    rows = []
    for m in adapter.modules:
        out, inn = m.shape
        r_cfg = m.rank
        mag = math.prod(m.magnitude.shape) if m.magnitude is not None else 0
        actual = math.prod(m.left.shape) + math.prod(m.right.shape) + mag
        configured = r_cfg * (out + inn) + ((inn if m.kind == "embedding" else out) if settings.dora else 0)
        zero = [_factor(ref.key) for ref in (m.left, m.right) if stats.get(ref.key) and stats[ref.key].all_zero]
        bad = sum(stats[ref.key].nan + stats[ref.key].inf for ref in (m.left, m.right, m.magnitude)
                  if ref is not None and ref.key in stats)
        rows.append((m.name, layer_of(m.name), type_of(m.name), m.kind, out, inn, m.tensor_rank, r_cfg,
                     actual, configured, ",".join(zero), bad))
    table = pd.DataFrame(rows, columns=["name", "layer", "module_type", "kind", "rows", "cols", "tensor_rank", "r",
                                        "actual", "configured", "zero_factor", "nonfinite"])
    findings += _rank_findings(table)
    findings += _value_findings(adapter, table, stats)
    saved = _saved_table(adapter, settings)
    findings += _saved_findings(saved, settings)
    own = _adapter_shapes(adapter)
    match = match_targets(own, settings.targets, settings.layers, (), cfg.get("layers_pattern"))
    targets = {t: _types(names) for t, names in match.by_target.items()}
    findings += _target_findings(targets, settings)
    audit = AdapterAudit(str(adapter.path), cfg, table, saved, targets, tuple(findings))
    if model is not None:
        audit = _against_model(audit, adapter, model, settings)
    return audit


def _types(names: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[type_of(n)] = out.get(type_of(n), 0) + 1
    return out


def _rank_findings(table: pd.DataFrame) -> list[Finding]:
    off = table[table["tensor_rank"] != table["r"]]
    if off.empty:
        return []
    shown = ", ".join(f"{r.name} (rank {r.tensor_rank}, config r={r.r})" for r in off.head(5).itertuples())
    more = f" and {len(off) - 5} more" if len(off) > 5 else ""
    return [Finding("error", f"{len(off)} module(s) hold tensors whose rank differs from r / rank_pattern in "
                    f"adapter_config.json: {shown}{more}. PEFT would refuse to load them (size mismatch).")]


def _value_findings(adapter: Adapter, table: pd.DataFrame, stats: dict[str, TensorStats]) -> list[Finding]:
    out = []
    zero = table[table["zero_factor"] != ""]
    if not zero.empty:
        every = len(zero) == len(table)
        factor = zero["zero_factor"].iloc[0]
        scope = "every module" if every else f"{len(zero)} of {len(table)} modules (e.g. {zero['name'].iloc[0]})"
        out.append(Finding("error" if every else "warning",
                           f"{factor} is all zeros in {scope}: ΔW = s·B·A is exactly zero there, as PEFT initializes it"
                           + (" — this adapter never trained (or was saved before training)." if every else ".")))
    bad = {k: s for k, s in stats.items() if s.nan or s.inf}
    if bad:
        shown = ", ".join(f"{k} ({s.nan} NaN, {s.inf} Inf)" for k, s in list(bad.items())[:4])
        out.append(Finding("error", f"{len(bad)} tensor(s) hold NaN or Inf values: {shown}."))
    return out


def _saved_table(adapter: Adapter, settings: LoraSettings) -> pd.DataFrame:
    rows = []
    for name, ref in {**adapter.dense, **adapter.vectors}.items():
        info = ref.store.info(ref.key)
        owner = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
        rows.append((name, tuple(info.shape), info.dtype, info.numel, info.nbytes, owner))
    return pd.DataFrame(rows, columns=["name", "shape", "dtype", "params", "bytes", "module"])


def _saved_findings(saved: pd.DataFrame, settings: LoraSettings) -> list[Finding]:
    if saved.empty:
        return []
    listed = settings.modules_to_save
    out = [Finding("note", f"{len(saved)} full tensor(s) saved beside the LoRA factors ({int(saved['params'].sum()):,} "
                   f"parameters, {int(saved['bytes'].sum()):,} bytes): " + ", ".join(
                       f"{r.name} {'×'.join(map(str, r.shape))}" for r in saved.head(6).itertuples()))]
    for module in dict.fromkeys(saved["module"]):
        if in_modules_to_save(module, listed):
            continue
        by_suffix = [t for t in listed if module.endswith(t)]
        if by_suffix:
            out.append(Finding("warning", f"{module} was saved and trained in full although modules_to_save "
                               f"{list(listed)} does not name it: PEFT matches modules_to_save by plain string suffix, "
                               f"so {by_suffix[0]!r} also reaches {module} ({_numel_of(saved, module):,} parameters)."))
        else:
            out.append(Finding("note", f"{module} is saved in full but modules_to_save ({list(listed) or 'none'}) does "
                               "not name it (a trained bias, or a tensor saved by hand)."))
    return out


def _numel_of(saved: pd.DataFrame, module: str) -> int:
    return int(saved.loc[saved["module"] == module, "params"].sum())


def _target_findings(targets: dict[str, dict[str, int]], settings: LoraSettings) -> list[Finding]:
    out = []
    dead = [t for t, types in targets.items() if not types]
    if dead:
        out.append(Finding("warning", f"target(s) {', '.join(map(repr, dead))} in adapter_config.json reached no module "
                           "in this adapter: PEFT ignores a target that matches nothing as long as another one matches."))
    for t, types in targets.items():
        if len(types) > 1:
            listed = ", ".join(f"{k} (×{n})" for k, n in types.items())
            out.append(Finding("note", f"target {t!r} reaches {len(types)} module types: {listed}."))
    return out


def _against_model(audit: AdapterAudit, adapter: Adapter, model: ModelShapes, settings: LoraSettings) -> AdapterAudit:
    """Expected modules and counts from the config on the base model, compared with what the adapter holds."""
    tying = peft_tying(model, settings)
    match = peft_match(model, settings, tying, audit.config.get("layers_pattern"))
    count = count_lora(model, settings, match)
    index = NameIndex(m.name for m in adapter.modules)
    held = {m.name: m for m in adapter.modules}
    model_index = model.by_name()
    findings = list(audit.findings)
    found: set[str] = set()
    missing, mismatched = [], []
    tied = [n for n in tying.tied_lora if tying.embedding in match.modules]  # PEFT saves their factors too
    for name in (*match.modules, *tied):
        hit = index.find(name)
        if hit is None:
            missing.append(name)
            continue
        found.add(hit)
        if tuple(held[hit].shape) != tuple(model_index[name].shape):
            mismatched.append(f"{hit} {held[hit].shape} vs the model's {model_index[name].shape}")
    extra = [n for n in held if n not in found]
    if mismatched:
        findings.append(Finding("error", f"{len(mismatched)} module(s) differ in shape from the given base model — "
                                f"this adapter was trained on another model: {'; '.join(mismatched[:3])}."))
    if missing:
        findings.append(Finding("warning", f"the config reaches {len(missing)} module(s) of the base model that the adapter "
                                f"does not hold, e.g. {', '.join(missing[:3])}."))
    if extra:
        findings.append(Finding("warning", f"the adapter holds {len(extra)} module(s) its config would not create on this "
                                f"model, e.g. {', '.join(extra[:3])}."))
    return AdapterAudit(audit.path, audit.config, audit.modules, audit.saved, audit.targets, tuple(findings), count,
                        model.total)

