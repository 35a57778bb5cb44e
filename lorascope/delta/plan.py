"""Pair modules by normalized name and describe each update ΔW as a lazy ``Delta`` item (docs/METRICS.md 'The
update ΔW').

``plan_deltas(base, tuned)`` is the entry: a full fine-tune is paired tensor by tensor (``full_diff``), an
adapter module by module, alone or on its base (``adapter_plan``); the items themselves are ``items``'. It
reads only names, shapes and what the formats declare; tensors are read when an item is computed. Everything
skipped or unpaired is a warning with its reason. Orientation comes from declarations — PEFT's
``fan_in_fan_out``, a base config's ``model_type`` whose linear layers are GPT-2 Conv1D — never from a
coincidence of shapes.
"""

from __future__ import annotations

from ..checkpoint.base import Adapter, Weights
from ..errors import LorascopeError
from .adapter_plan import BASE_FREE_STAND_INS, UPDATE_VECTORS, BaseLookup, plan_adapter
from .full_diff import (
    INPUT_EMBEDDINGS,
    TIED_HEADS,
    declares_conv1d,
    declares_tied,
    plan_full_diff,
    tied_partner,
)
from .items import (
    Delta,
    Plan,
    VectorDelta,
    dense_delta,
    filter_names,
    module_delta,
    unique_names,
    weight_name,
)

__all__ = [  # the planning entry point, and the names this module always offered
    "BASE_FREE_STAND_INS",
    "INPUT_EMBEDDINGS",
    "TIED_HEADS",
    "UPDATE_VECTORS",
    "BaseLookup",
    "Delta",
    "Plan",
    "VectorDelta",
    "declares_conv1d",
    "declares_tied",
    "dense_delta",
    "filter_names",
    "module_delta",
    "plan_adapter",
    "plan_deltas",
    "plan_full_diff",
    "tied_partner",
    "unique_names",
    "weight_name",
]


def plan_deltas(base: Weights | Adapter | None, tuned: Weights | Adapter) -> Plan:
    """Every update between ``base`` and ``tuned`` (an adapter alone when ``base`` is None)."""
    if isinstance(base, Adapter):
        raise LorascopeError(
            f"{base.path} is a LoRA adapter, but the first of two inputs must be the base model's weights. "
            "Give BASE TUNED, BASE ADAPTER, or an ADAPTER alone."
        )
    if isinstance(tuned, Adapter):
        return plan_adapter(tuned, base)
    if base is None:
        raise LorascopeError(
            f"{tuned.path} holds plain weights ({len(tuned.store.keys())} tensors such as "
            f"{', '.join(tuned.store.keys()[:3])}), not a LoRA adapter: its tensor names match none of the "
            "layouts lorascope reads (PEFT lora_A/lora_B, kohya lora_down/lora_up, diffusers .lora.down/.up, "
            "cloneofsimo :down/:up). To analyze a full fine-tune give two checkpoints: BASE TUNED."
        )
    return plan_full_diff(base, tuned)
