"""PEFT adapter folders (adapter_config.json + adapter_model.safetensors or .bin), with PEFT's semantics.

Scale s = lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora``; ``rank_pattern`` and
``alpha_pattern`` override r and alpha per module, their keys matched as PEFT's ``get_pattern_key``
does: the first key k for which ``(.*\\.)?(k)$`` matches the module's name in the model.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from ..limits import read_json
from ..names import strip_adapter_prefix
from .base import Adapter, AdapterModule, TensorRef
from .store import TensorStore, member, open_file
from .validate import check_peft_scales

CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")

# <module>.<part>[.<adapter name>][.weight|.bias]
_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[^.]+?))??(?:\.(?P<param>weight|bias))?$"
)
ADAPTER_PARTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}


def is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG
    cfg = read_json(cfg_path, "a PEFT adapter config")
    if not isinstance(cfg, dict):
        raise LorascopeError(f"{cfg_path} must hold a JSON object, found {type(cfg).__name__}.")
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LorascopeError(
            f"{cfg_path} describes an adapter of type {peft_type} (peft_type={cfg.get('peft_type')!r}), not LoRA. "
            "lorascope analyzes LoRA and DoRA adapters, whose updates are low-rank products B @ A; an "
            f"adapter of type {peft_type} has no such factors, so there is no ΔW spectrum to take from it alone. "
            "Merge it into the base model and compare base and merged checkpoints instead."
        )
    problems = []
    for field, kind in (("r", (int,)), ("lora_alpha", (int, float))):
        if field in cfg and (not isinstance(cfg[field], kind) or isinstance(cfg[field], bool) or cfg[field] <= 0):
            problems.append(f"'{field}' must be a positive number, found {cfg[field]!r}")
    for field in ("rank_pattern", "alpha_pattern"):
        if cfg.get(field) is not None and not isinstance(cfg[field], dict):
            problems.append(f"'{field}' must be a JSON object mapping name patterns to numbers, found {cfg[field]!r}")
    if "r" not in cfg:
        problems.append("'r' (the LoRA rank) is missing")
    if problems:
        raise LorascopeError(f"{cfg_path} is not a usable LoRA config: " + "; ".join(problems) + ".")
    check_peft_scales(cfg, str(cfg_path))
    return cfg


def pattern_key(patterns: dict[str, Any], name: str) -> str | None:
    """The first pattern key matching ``name`` the way PEFT's get_pattern_key matches it, or None."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return key
        except re.error as exc:
            raise LorascopeError(f"rank_pattern/alpha_pattern key {key!r} is not a valid regular expression: {exc}") from None
    return None


def module_scale(cfg: dict[str, Any], name: str) -> tuple[int, float, float]:
    """(r, alpha, s) for one module under PEFT's rules."""
    rank_pattern = cfg.get("rank_pattern") or {}
    alpha_pattern = cfg.get("alpha_pattern") or {}
    rk = pattern_key(rank_pattern, name)
    ak = pattern_key(alpha_pattern, name)
    r = int(rank_pattern[rk]) if rk is not None else int(cfg["r"])
    alpha = float(alpha_pattern[ak]) if ak is not None else float(cfg.get("lora_alpha", 8))
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return r, alpha, scale


def weight_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return member(path, name, f"the PEFT adapter folder {path}")
    raise LorascopeError(
        f"{path} has an {CONFIG} but no adapter weights: expected one of {', '.join(WEIGHT_FILES)} in the folder."
    )


def open_peft(path: Path) -> Adapter:
    """Open a PEFT LoRA/DoRA adapter folder."""
    path = Path(path)
    cfg = read_config(path)
    store = open_file(weight_file(path))
    return build_adapter(path, "peft", store, cfg)


def build_adapter(path: Path, fmt: str, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """Group PEFT-named tensors (lora_A/lora_B/…) into modules; everything else is a full tensor or vector."""
    parts: dict[str, dict[str, str]] = defaultdict(dict)
    dense: dict[str, TensorRef] = {}
    vectors: dict[str, TensorRef] = {}
    warnings: list[dict[str, str]] = []
    for key in store.keys():
        m = _KEY.match(key)
        if m is None:
            name = re.sub(r"\.modules_to_save\.[^.]+", "", strip_adapter_prefix(key))
            info = store.info(key)
            if ".base_layer." in f".{name}.":
                warnings.append({"name": name, "reason": "copy of a base weight saved with the adapter (PEFT "
                                 "save_embedding_layers); not part of the LoRA update, skipped"})
            elif not info.is_float:
                warnings.append({"name": name, "reason": f"non-float tensor ({info.dtype}) skipped"})
            elif len(info.shape) >= 2:
                dense[name.removesuffix(".weight")] = TensorRef(store, key, "flatten")
            else:
                vectors[name] = TensorRef(store, key)
            continue
        module = strip_adapter_prefix(m["module"])
        part = m["part"] if m["param"] != "bias" else m["part"] + ".bias"
        if part in parts[module]:
            raise LorascopeError(
                f"{store.path}: module {module} has two {part} tensors ({parts[module][part]} and {key}); "
                "the file holds more than one adapter. Save each adapter separately."
            )
        parts[module][part] = key

    modules: list[AdapterModule] = []
    problems: list[str] = []
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    for name, p in sorted(parts.items()):
        if "lora_B.bias" in p:
            vectors[name + ".lora_B.bias"] = TensorRef(store, p["lora_B.bias"])
        if "lora_A" in p and "lora_B" in p:
            a, b = p["lora_A"], p["lora_B"]
            ndim = len(store.info(a).shape)
            kind = "conv" if ndim > 2 else "linear"
            left, right = TensorRef(store, b, "flatten"), TensorRef(store, a, "flatten")
        elif "lora_embedding_A" in p and "lora_embedding_B" in p:
            # PEFT Embedding: A (r, num_embeddings), B (dim, r); ΔW (num, dim) = s·(B @ A)ᵀ = s·Aᵀ @ Bᵀ
            a, b = p["lora_embedding_A"], p["lora_embedding_B"]
            kind = "embedding"
            left, right = TensorRef(store, a, "transpose"), TensorRef(store, b, "transpose")
        else:
            found = ", ".join(sorted(p))
            problems.append(f"{name}: has {found} but not both LoRA factors (lora_A and lora_B)")
            continue
        if len(left.shape) != 2 or len(right.shape) != 2:
            problems.append(f"{name}: LoRA factors must be matrices (conv kernels flattened), found shapes "
                            f"{list(left.stored_shape)} and {list(right.stored_shape)}")
            continue
        if left.shape[1] != right.shape[0]:
            problems.append(f"{name}: factor shapes {left.shape} and {right.shape} do not chain (ranks differ)")
            continue
        if "r" in cfg:
            r, alpha, scale = module_scale(cfg, name)
        else:
            r, alpha, scale = left.shape[1], None, 1.0
        if r != left.shape[1]:
            warnings.append({
                "name": name,
                "reason": f"tensors have rank {left.shape[1]} but the config gives r={r}; scale uses r={r} as PEFT does",
            })
        parts = {"up": left, "down": right}
        if "lora_magnitude_vector" in p:
            parts["magnitude"] = TensorRef(store, p["lora_magnitude_vector"])
        family = "dora" if "magnitude" in parts else "lora"
        shape = (left.shape[0], right.shape[1])
        kernel = tuple(right.stored_shape[2:]) if kind == "conv" else ()
        modules.append(AdapterModule(name, family, parts, shape, r, alpha, scale, kind, fmt, fan_in_fan_out, kernel))
    if problems:
        raise LorascopeError(f"{store.path}: incomplete LoRA modules:\n" + "\n".join(f"  - {x}" for x in problems[:20]))
    if not modules:
        raise LorascopeError(
            f"{store.path} holds no LoRA factors: no tensor names end in lora_A/lora_B "
            f"(found {len(store.keys())} tensors such as {', '.join(store.keys()[:3])})."
        )
    return Adapter(path, fmt, store, modules, dense, vectors, cfg, warnings)
