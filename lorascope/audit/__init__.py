"""Owns parameter-count audits: exact LoRA counts from configs, checkpoint headers or adapters; claim checks.

Rooms: ``shapes`` (what a model is made of), ``shape_source`` (where shapes come from: transformers where
installed, one built-in rule without it), ``headers`` (a checkpoint's headers), ``targets`` (PEFT target
matching), ``count`` (LoRA/DoRA counts, tied weights), ``footprint`` (adapter file and training memory),
``claims`` (claim checks), ``mistakes`` (the recomputations that explain a wrong claim), ``adapter`` (the
adapter audit), ``params`` (one SOURCE end to end), ``claims_file`` (``audit CLAIMS.yaml``) and ``render``
(terminal, CSV and HTML).
"""

from __future__ import annotations

from .adapter import AdapterAudit, Finding, audit_adapter
from .claims import Claim, ClaimCheck, check_claim
from .count import LoraCount, LoraSettings, count_lora
from .footprint import MemoryAssumptions, adapter_file_size, training_memory
from .mistakes import MISTAKES
from .params import AdapterResult, AuditOptions, ParamsResult, audit_source, count_config
from .shape_source import load_model, rule_shapes
from .shapes import ModelShapes, ModuleShape
from .targets import TargetSpec, match_targets, parse_targets

__all__ = [
    "AdapterAudit", "AdapterResult", "AuditOptions", "Claim", "ClaimCheck", "Finding", "LoraCount",
    "LoraSettings", "MISTAKES", "MemoryAssumptions", "ModelShapes", "ModuleShape", "ParamsResult",
    "TargetSpec", "adapter_file_size", "audit_adapter", "audit_source", "check_claim", "count_config",
    "count_lora", "load_model", "match_targets", "parse_targets", "rule_shapes", "training_memory",
]  # fmt: skip
