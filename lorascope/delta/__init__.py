"""ΔW has one home: every update family, how it is read, and the form its spectrum is taken from.

- ``family``: the ``Family`` registry entry and ``FAMILIES`` (name -> family).
- one module per family group: ``dense`` (full fine-tunes), ``lora`` (LoRA, DoRA, MoE experts, AdaLoRA,
  VeRA), ``lycoris`` (LoHa, LoKr, full), ``scaled`` (IA3), ``orthogonal`` (OFT, BOFT), …
- ``plan``: pairing modules by name into lazy ``Delta`` items, with the base weight in ΔW's orientation.
- ``read``: reading a Delta's tensors and building its form (``lorascope.linalg.forms``).

Analysis, compare/intruders, sweep/select/export and the trainer ask this package for updates and
``lorascope.linalg.svd`` for spectra; none of them builds a ΔW itself.
"""

from __future__ import annotations

from . import dense, lora, lycoris, orthogonal, scaled  # noqa: F401 - each registers its families
from .family import FAMILIES, Family, Tensors, family_of, register
from .lora import dora_update
from .plan import (
    BASE_FREE_STAND_INS,
    Delta,
    Plan,
    VectorDelta,
    dense_delta,
    filter_names,
    module_delta,
    plan_deltas,
    weight_name,
)
from .read import Fetched, build, fetch, form_from, load_form, norm, pick_device, vector_update

__all__ = [
    "BASE_FREE_STAND_INS", "FAMILIES", "Delta", "Family", "Fetched", "Plan", "Tensors", "VectorDelta", "build",
    "dense_delta", "dora_update", "family_of", "fetch", "filter_names", "form_from", "load_form", "module_delta", "norm",
    "pick_device", "plan_deltas", "register", "vector_update", "weight_name",
]
