"""Where a single-file adapter declares its scale: ``.alpha`` tensors, diffusers' ``lora_adapter_metadata``
header, kohya's ``ss_network_alpha`` metadata — read and validated here, applied by ``checkpoint.families``.

- ``<module>.alpha`` (0-d or one-element tensor): applies to every family with a rank; scale α / r
- ``lora_adapter_metadata`` (JSON: a PEFT ``LoraConfig``, its keys prefixed per component, e.g.
  ``transformer.r``): applies to LoRA/DoRA modules under that component; scale PEFT's rules: ``r``,
  ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``, ``use_rslora`` (``peft.module_scale``)
- ``ss_network_alpha`` (kohya training metadata): applies to diffusers and lora-ab LoRA modules; scale α / r

diffusers writes the header in ``write_lora_layers`` (``LORA_ADAPTER_METADATA_KEY``) from each component's
``peft_config.to_dict()`` packed as ``<component>.<field>`` (``_pack_dict_with_prefix``), or unprefixed by a
model's own ``save_lora_adapter``; it reads it back in ``_load_sft_state_dict_metadata``. Every α must be
finite and positive.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import LorascopeError, raise_collected
from .base import TensorRef
from .peft_config import module_scale, pattern_problems, positive_number
from .tensor_store import TensorStore

METADATA_KEY = "lora_adapter_metadata"


def tensor_alpha(ref: TensorRef, rank: int) -> float:
    """The α an ``.alpha`` tensor declares. A stored 0 means α = r (scale 1), as both kohya's sd-scripts
    (``LoRAModule``) and LyCORIS (``LoConModule`` … ``LokrModule``: ``alpha = lora_dim if alpha is None or
    alpha == 0``) read it.

    Raises:
        LorascopeError: it holds more than one value, or a value that is not finite and non-negative.
    """
    t = ref.store.get_numpy(ref.key)  # numpy: an adapter-only run needs no torch
    if t.size != 1:
        raise LorascopeError(f"{ref.store.path}: {ref.key} holds {t.size} values; an alpha is one number.")
    value = float(t.reshape(-1)[0])
    if value == 0:
        return float(rank)
    return _alpha(value, f"{ref.store.path}: tensor {ref.key}")


def _alpha(value: float, where: str) -> float:
    """``value`` when finite and > 0 (``peft_config.positive_number``), with why an alpha must be."""
    return positive_number(
        value,
        f"{where}: alpha",
        why="; an alpha must be finite and positive (the update "
        "is scaled by alpha / r). The file is damaged or was not written by a LoRA tool.",
    )


class DeclaredScales:
    """The scale declarations of one file's metadata: diffusers' header and kohya's ``ss_network_alpha``."""

    def __init__(self, store: TensorStore):
        self.path = store.path
        self.configs = _header_configs(store)
        self.network_alpha = _network_alpha(store)

    def from_header(self, name: str) -> tuple[int, float, float] | None:
        """(r, α, s) of the module ``name`` (a dotted path) under its component's config, or None."""
        for prefix, cfg in self.configs.items():
            if prefix == "" or name.startswith(prefix + "."):
                return module_scale(cfg, name.removeprefix(prefix + ".") if prefix else name)
        return None


def _header_configs(store: TensorStore) -> dict[str, dict[str, Any]]:
    """The header's LoraConfig per component prefix ('' for a model's own unprefixed config)."""
    raw = store.metadata.get(METADATA_KEY)
    if raw is None:
        return {}
    where = f"{store.path}: metadata {METADATA_KEY!r}"
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise LorascopeError(
            f"{where} is not valid JSON ({exc}); it should hold the LoraConfig diffusers saved."
        ) from None
    if not isinstance(data, dict):
        raise LorascopeError(f"{where} must be a JSON object (a LoraConfig), found {type(data).__name__}.")
    configs: dict[str, dict[str, Any]] = {}
    if "r" in data:
        configs[""] = data
    else:
        for key, value in data.items():
            prefix, _, field = key.rpartition(".")
            if prefix:
                configs.setdefault(prefix, {})[field] = value
    for prefix, cfg in configs.items():
        _check_config(cfg, f"{where}{f' for {prefix}' if prefix else ''}")
    return {p: c for p, c in sorted(configs.items(), key=lambda pc: -len(pc[0])) if "r" in c}


def _check_config(cfg: dict[str, Any], where: str) -> None:
    """r, lora_alpha and the pattern tables of a LoraConfig header, by PEFT configs' own rules."""
    if cfg.get("r") is not None:
        positive_number(cfg["r"], f"{where}: 'r'", integer=True, why=".")
    positive_number(cfg.get("lora_alpha", 8), f"{where}: 'lora_alpha'", why=".")
    raise_collected(pattern_problems(cfg, {"rank_pattern": True, "alpha_pattern": False}), f"{where}:")


def _network_alpha(store: TensorStore) -> float | None:
    raw = store.metadata.get("ss_network_alpha")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # absent, or 'None': nothing declared
    return _alpha(value, f"{store.path}: metadata 'ss_network_alpha'")
