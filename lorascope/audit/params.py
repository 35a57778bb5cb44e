"""Owns ``lorascope params`` end to end: one SOURCE and one LoRA configuration → counts, bytes, claim check.

``audit_source`` loads (``shape_source``, or ``adapter`` for a PEFT folder), counts and checks; it returns a
``ParamsResult`` or an ``AdapterResult``, whose ``to_dict`` is the JSON of ``--json`` and params.json.
Terminal output is ``render``'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LorascopeError
from .adapter import AdapterAudit, audit_adapter, load_adapter, scan_adapter
from .claims import Claim, ClaimCheck, check_claim, figure_rows
from .count import LoraCount, LoraSettings, count_lora, tying_notes
from .footprint import DTYPES, MemoryAssumptions, adapter_file_size, training_memory
from .shape_source import SHAPE_SOURCES, load_model, source_kind
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
        if problems := self.problems(self.__dict__):
            raise ValueError("; ".join(problems))

    @staticmethod
    def problems(f: dict[str, Any]) -> list[str]:
        """Every invalid field among ``f`` (AuditOptions field -> value), one sentence each."""
        allowed = {"shapes": SHAPE_SOURCES, "dtype": tuple(DTYPES)}
        return [
            f"{k} {f[k]!r} is not one of {', '.join(ok)}"
            for k, ok in allowed.items()
            if f.get(k, ok[0]) not in ok
        ]

    @property
    def memory(self) -> MemoryAssumptions:
        return MemoryAssumptions(weights_dtype=self.dtype, master_weights=self.master_weights)


@dataclass(frozen=True)
class ParamsResult:
    """Exact counts of one LoRA configuration on one model, its adapter file and training memory."""

    source: str
    count: LoraCount
    options: AuditOptions
    warnings: tuple[str, ...] = ()
    claim: ClaimCheck | None = None

    model = property(lambda self: self.count.model)
    file_bytes = property(lambda self: adapter_file_size(self.count, self.options.dtype))
    memory = property(
        lambda self: training_memory(self.count.total, self.count.trainable, self.options.memory)
    )

    def to_dict(self) -> dict[str, Any]:
        c, m, s = self.count, self.count.model, self.count.settings
        return _plain({
            "source": self.source,
            "model": {"arch": m.arch, "head": m.head, "shapes_from": m.shapes_from, "parameters": c.total,
                      "layers": m.num_layers, "hidden": m.hidden,
                      "tied": [{"module": t.name, "tied_to": t.tied_to} for t in m.tied], "notes": m.notes},
            "lora": {"rank": s.rank, "alpha": s.alpha, "targets": c.match.label, "layers": s.layers,
                     "rank_pattern": dict(s.rank_pattern), "dora": s.dora, "bias": s.bias,
                     "modules_to_save": s.modules_to_save, "ensure_weight_tying": s.ensure_weight_tying,
                     "modules": len(c.rows)},
            "matched": c.match.by_target, "unmatched_targets": c.match.unmatched,
            "counts": {"lora": c.lora, "dora_magnitude": c.magnitude, "bias": c.bias,
                       "modules_to_save": c.saved, "trainable": c.trainable, "total": c.total,
                       "percent": c.percent, "peft_all_params": c.peft_total, "peft_percent": c.peft_percent},
            "by_module_type": c.by_type().to_dict(orient="records"),
            "by_layer": c.by_layer().to_dict(orient="records"),
            "adapter_file": {"dtype": self.options.dtype, "bytes": self.file_bytes, "format": "safetensors"},
            "memory": {"assumptions": self.options.memory.lines(),
                       "bytes": self.memory.to_dict(orient="records")},
            "warnings": self.warnings, **_claim(self.claim),
        })  # fmt: skip


@dataclass(frozen=True)
class AdapterResult:
    """The adapter audit, with the claim check when a base model was given."""

    source: str
    audit: AdapterAudit
    claim: ClaimCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        a, c = self.audit, self.audit.model_count
        keys = ("r", "lora_alpha", "target_modules", "rank_pattern", "use_dora", "modules_to_save",
                "task_type", "base_model_name_or_path")  # fmt: skip
        return _plain({
            "source": self.source, "config": {k: a.config.get(k) for k in keys},
            "counts": {"actual": a.actual, "configured": a.configured, "saved_full_tensors": a.saved_params,
                       "trainable": a.trainable},
            "targets": a.targets, "modules": a.modules.to_dict(orient="records"),
            "saved": a.saved.to_dict(orient="records"),
            "findings": [{"severity": f.severity, "message": f.message} for f in a.findings],
            **({} if c is None else {"model": {"parameters": c.total, "configured_on_model": c.trainable,
                                               "percent": 100.0 * a.trainable / c.total}}),
            **_claim(self.claim),
        })  # fmt: skip


def _claim(check: ClaimCheck | None) -> dict[str, Any]:
    """A claim check as JSON: each figure's row (``claims.figure_rows``), as audit.csv holds it."""
    return {} if check is None else {"claim": {"ok": check.ok, "figures": figure_rows(check)}}


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, tuples to lists, NaN (no layer, no fit) to null."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (float, np.floating)) or x is pd.NA:
        return None if x is pd.NA or math.isnan(x) else float(x)
    return x.item() if isinstance(x, np.generic) else x


def count_config(model: ModelShapes, settings: LoraSettings, options: AuditOptions,
                 claim: Claim | None = None, source: str = "") -> ParamsResult:  # fmt: skip
    """Count, size and check one configuration on known shapes (no file access).

    Raises:
        LorascopeError: targets that match nothing (unless allowed) or reach layers LoRA cannot wrap.
    """
    count = count_lora(model, settings)
    warnings = check_match(count.match, model, settings.allow_unmatched) + tying_notes(model, count.tying)
    checked = check_claim(count, claim) if claim is not None else None
    return ParamsResult(source, count, options, tuple(warnings), checked)


def audit_source(source: str | Path, settings: LoraSettings, options: AuditOptions | None = None,
                 claim: Claim | None = None) -> ParamsResult | AdapterResult:  # fmt: skip
    """Exact counts for SOURCE: a config.json, model folder or checkpoint with ``settings``; or an adapter.

    Args:
        source: the path.
        settings: the LoRA configuration (ignored for an adapter, which brings its own).
        options: shapes source, head, dtype, memory assumptions, base model of an adapter.
        claim: claimed figures to check.

    Raises:
        LorascopeError: bad input anywhere (named with its file, key or value).
    """
    options = options or AuditOptions()
    if source_kind(source) != "adapter":
        return count_config(
            load_model(source, options.shapes, options.head), settings, options, claim, str(source)
        )
    adapter = load_adapter(source)
    model = load_model(options.model, options.shapes, options.head) if options.model else None
    audit = audit_adapter(adapter, scan_adapter(adapter), model)
    if claim is not None and audit.model_count is None:
        raise LorascopeError(
            f"checking a claim against the adapter {source} needs the base model's shapes: "
            "pass --model CONFIG_OR_FOLDER (the model the adapter was trained on)."
        )
    return AdapterResult(str(source), audit, check_claim(audit.model_count, claim) if claim else None)
