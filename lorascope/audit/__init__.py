"""Parameter-count audits: exact LoRA counts from configs, checkpoint headers or adapters; claim checks.

Rooms: ``layout`` (the shared data types), ``shapes`` (lorascope's own shape rules), ``hf_shapes`` (transformers
on the meta device), ``headers`` (shapes from checkpoint headers), ``targets`` (PEFT target matching, presets),
``count`` (LoRA/DoRA counts, adapter file size), ``memory`` (training memory), ``claims`` (claim checks and
mistake explanations), ``adapter`` (adapter audit), ``sources`` (all file reading), ``params`` (one SOURCE end
to end), ``claims_file`` (``audit CLAIMS.yaml``), ``render`` (terminal) and ``page`` (HTML).
"""

from __future__ import annotations

from .adapter import AdapterAudit, Finding, audit_adapter
from .claims import MISTAKES, Claim, ClaimCheck, check_claim
from .count import LoraCount, LoraSettings, adapter_file_size, count_lora
from .layout import ModelShapes, ModuleShape
from .memory import MemoryAssumptions, training_memory
from .params import AdapterResult, AuditOptions, ParamsResult, audit_source, count_config
from .shapes import rule_shapes
from .sources import load_model
from .targets import TargetSpec, match_targets, parse_targets

__all__ = [
    "AdapterAudit", "AdapterResult", "AuditOptions", "Claim", "ClaimCheck", "Finding", "LoraCount", "LoraSettings",
    "MISTAKES", "MemoryAssumptions", "ModelShapes", "ModuleShape", "ParamsResult", "TargetSpec", "adapter_file_size",
    "audit_adapter", "audit_source", "check_claim", "count_config", "count_lora", "load_model", "match_targets",
    "parse_targets", "rule_shapes", "training_memory",
]
