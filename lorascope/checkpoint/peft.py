"""PEFT adapter folders (adapter_config.json + adapter_model.safetensors or .bin), read by ``peft_type``.

``open_peft`` reads the config (``read_config``: strict JSON, an object, a type lorascope reads), checks it
with its type's check, and hands the weights to the reader registered for that type
(``peft_keys.PEFT_TYPES``): LoRA and its variants (``peft_lora``, ``peft_experts``), LoHa, LoKr, AdaLoRA,
VeRA (``peft_types``), IA3, OFT, BOFT (``peft_multiplicative``). Each reader groups the saved tensors into
``AdapterModule``s of one ``lorascope.delta`` family, with the scale PEFT applies (``peft_config``). The
names the config module and the readers define are importable from here too, as they always were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from . import peft_lora, peft_multiplicative, peft_types  # noqa: F401 - each registers its peft_types
from .base import Adapter
from .configs import read_config as read_json_config
from .peft_config import (
    CONFIG,
    WEIGHT_FILES,
    lora_config,
    module_scale,
    pattern_key,
    pattern_values,
    patterns,
    positive,
    positive_number,
    write_adapter,
)
from .peft_keys import CONFIG_CHECKS, PARTS_BY_TYPE, PEFT_TYPES, Leftovers, finish, group_parts, part_pattern
from .peft_keys import peft_type
from .peft_lora import build_adapter, lora_config_checks, open_lora
from .store import member, open_file

__all__ = [
    "CONFIG",
    "CONFIG_CHECKS",
    "PARTS_BY_TYPE",
    "PEFT_TYPES",
    "WEIGHT_FILES",
    "Leftovers",
    "build_adapter",
    "finish",
    "group_parts",
    "is_peft_folder",
    "lora_config",
    "lora_config_checks",
    "module_scale",
    "open_lora",
    "open_peft",
    "part_pattern",
    "pattern_key",
    "pattern_values",
    "patterns",
    "peft_type",
    "positive",
    "positive_number",
    "read_config",
    "weight_file",
    "write_adapter",
]


def is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(path: Path) -> dict[str, Any]:
    """The folder's adapter_config.json, checked to be an object of a peft_type lorascope reads.

    Raises:
        LorascopeError: invalid JSON, not an object, or a peft_type without a ΔW (prompt tuning …).
    """
    cfg_path = path / CONFIG
    cfg = read_json_config(cfg_path, "a PEFT adapter config")
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind not in PEFT_TYPES:
        raise LorascopeError(
            f"{cfg_path} describes an adapter of type {kind} (peft_type={cfg.get('peft_type')!r}). lorascope "
            "reads the PEFT types whose update is a weight change ΔW: "
            f"{', '.join(sorted(PEFT_TYPES))}; an adapter of "
            f"type {kind} has no ΔW to take a spectrum of. Merge it into the base model and compare base and "
            "merged checkpoints instead (lorascope spectrum BASE MERGED)."
        )
    return cfg


def weight_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return member(path, name, f"the PEFT adapter folder {path}")
    raise LorascopeError(
        f"{path} has an {CONFIG} but no adapter weights: expected one of {', '.join(WEIGHT_FILES)} in the "
        "folder."
    )


def open_peft(path: Path) -> Adapter:
    """Open a PEFT adapter folder of any supported ``peft_type``.

    Raises:
        LorascopeError: the config or the weights are not a usable adapter of the type the config declares.
    """
    path = Path(path)
    cfg = read_config(path)
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind in CONFIG_CHECKS:
        CONFIG_CHECKS[kind](cfg, path)
    store = open_file(weight_file(path))
    return PEFT_TYPES[kind](path, store, cfg)
