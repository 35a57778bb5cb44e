"""Owns ``lorascope params`` end to end: one SOURCE and one LoRA configuration → counts, bytes, claim check.

``audit_source`` loads (``shape_source``, or ``adapter`` for a PEFT folder), counts and checks; it returns a
``ParamsResult`` or an ``AdapterResult``, whose ``to_dict`` is the JSON of ``--json`` and params.json.
Terminal output is ``render``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LorascopeError
from .adapter import AdapterAudit, audit_adapter, load_adapter, scan_adapter
from .claims import Claim, ClaimCheck, check_claim
from .count import LoraCount, LoraSettings, count_lora, peft_match, peft_tying, tying_notes
from .footprint import DTYPES, MemoryAssumptions, adapter_file_size, training_memory
from .shape_source import load_model, source_kind
from .shapes import ModelShapes
from .targets import check_match


@dataclass(frozen=True)
class AuditOptions:
    """How to read the source and what to estimate."""

    shapes: str = "auto"  # auto | hf | rules: where a config's shapes come from
    head: str | None = None  # base | causal-lm | masked-lm | seq-cls; default: the config's architectures
    dtype: str = "bf16"  # adapter file and model weights
    master_weights: bool = True  # fp32 master copy of 16-bit trainable weights in the memory estimate
    model: str | Path | None = None  # the base model, for an adapter SOURCE

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @property
    def memory(self) -> MemoryAssumptions:
        return MemoryAssumptions(weights_dtype=self.dtype, master_weights=self.master_weights)


@dataclass(frozen=True)
class ParamsResult:
    """Exact counts of one LoRA configuration on one model."""

    source: str
    count: LoraCount
    file_bytes: int
    dtype: str
    memory: pd.DataFrame
    assumptions: MemoryAssumptions
    warnings: tuple[str, ...] = ()
    claim: ClaimCheck | None = None

    @property
    def model(self) -> ModelShapes:
        return self.count.model

    def to_dict(self) -> dict[str, Any]:
        c = self.count
        out: dict[str, Any] = {
            "source": self.source,
            "model": {"arch": c.model.arch, "head": c.model.head, "shapes_from": c.model.shapes_from,
                      "parameters": c.total, "layers": c.model.num_layers, "hidden": c.model.hidden,
                      "tied": [{"module": m.name, "tied_to": m.tied_to} for m in c.model.tied],
                      "notes": list(c.model.notes)},
            "lora": {"rank": c.settings.rank, "alpha": c.settings.alpha, "targets": c.match.resolved.label,
                     "layers": list(c.settings.layers) if c.settings.layers else None,
                     "rank_pattern": dict(c.settings.rank_pattern), "dora": c.settings.dora, "bias": c.settings.bias,
                     "modules_to_save": list(c.settings.modules_to_save),
                     "ensure_weight_tying": c.settings.ensure_weight_tying, "modules": len(c.rows)},
            "matched": {t: list(v) for t, v in c.match.by_target.items()},
            "unmatched_targets": list(c.match.unmatched),
            "counts": {"lora": c.lora, "dora_magnitude": c.magnitude, "bias": c.bias, "modules_to_save": c.saved,
                       "trainable": c.trainable, "total": c.total, "percent": c.percent,
                       "peft_all_params": c.peft_total, "peft_percent": c.peft_percent},
            "by_module_type": c.by_type().to_dict(orient="records"),
            "by_layer": [{"layer": None if pd.isna(r["layer"]) else int(r["layer"]), "modules": int(r["modules"]),
                          "params": int(r["params"])} for r in c.by_layer().to_dict(orient="records")],
            "adapter_file": {"dtype": self.dtype, "bytes": self.file_bytes, "format": "safetensors"},
            "memory": {"assumptions": self.assumptions.lines(), "bytes": self.memory.to_dict(orient="records")},
            "warnings": list(self.warnings),
        }
        if self.claim is not None:
            out["claim"] = claim_dict(self.claim)
        return _plain(out)


@dataclass(frozen=True)
class AdapterResult:
    """The adapter audit, with the claim check when a base model was given."""

    source: str
    audit: AdapterAudit
    claim: ClaimCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        a = self.audit
        out: dict[str, Any] = {
            "source": self.source,
            "config": {k: a.config.get(k) for k in ("r", "lora_alpha", "target_modules", "rank_pattern", "use_dora",
                                                    "modules_to_save", "task_type", "base_model_name_or_path")},
            "counts": {"actual": a.actual, "configured": a.configured, "saved_full_tensors": a.saved_params,
                       "trainable": a.trainable},
            "targets": a.targets,
            "modules": a.modules.to_dict(orient="records"),
            "saved": a.saved.assign(shape=a.saved["shape"].map(list)).to_dict(orient="records") if not a.saved.empty else [],
            "findings": [{"severity": f.severity, "message": f.message} for f in a.findings],
        }
        if a.model_count is not None:
            out["model"] = {"parameters": a.model_total, "configured_on_model": a.model_count.trainable,
                            "percent": 100.0 * a.trainable / a.model_total}
        if self.claim is not None:
            out["claim"] = claim_dict(self.claim)
        return _plain(out)


def claim_dict(check: ClaimCheck) -> dict[str, Any]:
    rows = []
    for f in check.figures:
        e = f.explanation
        rows.append({"figure": f.figure, "claimed": f.claimed, "exact": f.exact, "relative_error": f.error,
                     "tolerance": f.tolerance, "verdict": f.verdict,
                     "explanation": None if e is None else {"mistakes": list(e.keys), "steps": list(e.steps),
                                                            "value": e.value, "error": e.error,
                                                            "reproduces": e.reproduces, "also": list(e.also)}})
    return {"ok": check.ok, "figures": rows}


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, tuples to lists."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if x != x else float(x)  # NaN (a module outside the layer stack) is null in JSON
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def count_config(model: ModelShapes, settings: LoraSettings, options: AuditOptions, claim: Claim | None = None,
                 source: str = "") -> ParamsResult:
    """Count, size and check one configuration on known shapes (no file access).

    Raises:
        LorascopeError: targets that match nothing (unless allowed) or reach layers LoRA cannot wrap.
    """
    tying = peft_tying(model, settings)
    match = peft_match(model, settings, tying)
    warnings = check_match(match, model, settings.allow_unmatched) + tying_notes(model, tying)
    count = count_lora(model, settings, match)
    memory = training_memory(count.total, count.trainable, options.memory)
    checked = check_claim(count, claim) if claim is not None else None
    return ParamsResult(source, count, adapter_file_size(count, options.dtype), options.dtype, memory, options.memory,
                        tuple(warnings), checked)


def audit_source(source: str | Path, settings: LoraSettings, options: AuditOptions | None = None,
                 claim: Claim | None = None) -> ParamsResult | AdapterResult:
    """Exact counts for SOURCE: a config.json, model folder or checkpoint with ``settings``, or a PEFT adapter.

    Args:
        source: the path.
        settings: the LoRA configuration (ignored for an adapter, which brings its own).
        options: shapes source, head, dtype, memory assumptions, base model of an adapter.
        claim: claimed figures to check.

    Raises:
        LorascopeError: bad input anywhere (named with its file, key or value).
    """
    options = options or AuditOptions()
    if source_kind(source) == "adapter":
        return audit_adapter_source(source, options, claim)
    model = load_model(source, options.shapes, options.head)
    return count_config(model, settings, options, claim, str(source))


def audit_adapter_source(source: str | Path, options: AuditOptions, claim: Claim | None = None) -> AdapterResult:
    adapter = load_adapter(source)
    model = load_model(options.model, options.shapes, options.head) if options.model else None
    audit = audit_adapter(adapter, scan_adapter(adapter), model)
    checked = None
    if claim is not None:
        if audit.model_count is None:
            raise LorascopeError(f"checking a claim against the adapter {source} needs the base model's shapes: "
                                 "pass --model CONFIG_OR_FOLDER (the model the adapter was trained on).")
        checked = check_claim(audit.model_count, claim)
    return AdapterResult(str(source), audit, checked)
