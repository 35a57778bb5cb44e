"""PEFT LoRA folders (peft_type LORA): LoRA, DoRA, rsLoRA, grouped convolutions and LoRA on parameters.

Each module's ``lora_A``/``lora_B`` (or ``lora_embedding_A``/``_B``) become an ``AdapterModule`` of the
``lora`` family, ``dora`` with a ``lora_magnitude_vector``; LoRA on parameters (``target_parameters``, PEFT's
``ParamWrapper`` on fused MoE experts) is ``peft_experts``'. The scale is PEFT's
(``peft_config.module_scale``). Variants whose update is not s·B@A of the stored factors are refused by name
(``UNREAD_VARIANTS``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef
from .peft_config import CONFIG, module_scale, patterns, positive
from .peft_experts import expert_modules, targets_parameters
from .peft_keys import Leftovers, finish, group_parts, peft_type
from .tensor_store import TensorStore

# <module>.<part>[.<adapter name>][.weight|.bias]
_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[^.]+?))??(?:\.(?P<param>weight|bias))?$"
)
ADAPTER_PARTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}

# LoRA variants whose update PEFT applies is not s·B@A of the stored factors, by config key.
UNREAD_VARIANTS = {
    "use_qalora": "QALoRA pools the input in groups before lora_A, so its update is not B@A of the factors",
    "use_bdlora": "BD-LoRA stores block-diagonal factors reshaped at merge time",
    "kasa_config": "KaSA also truncates the base weight's smallest singular directions and adds lora_diag",
    "arrow_config": "Arrow routes each token among several adapters, so there is no single ΔW",
    "layer_replication": "layer replication duplicates base layers; module names do not address base weights",
}
# init_lora_weights values after which the adapter applies to a changed base, not the published one.
BASE_CHANGING_INITS = ("pissa", "olora", "corda")


def lora_config_checks(cfg: dict[str, Any], path: Path) -> list[dict[str, str]]:
    """Validate a LoRA config (r, alpha, patterns, variants); warnings about what the adapter applies to.

    Raises:
        LorascopeError: a non-positive or non-finite r, alpha or pattern value, or a variant not read.
    """
    positive(cfg, "r", path, integer=True)
    positive(cfg, "lora_alpha", path, default=8)
    patterns(cfg, path, {"rank_pattern": True, "alpha_pattern": False})
    for field, why in UNREAD_VARIANTS.items():
        if cfg.get(field):
            raise LorascopeError(
                f"{path / CONFIG} sets {field}={cfg[field]!r}: {why}, which lorascope "
                "does not read. Merge the adapter with PEFT and compare base and merged "
                "checkpoints instead."
            )
    warnings = []
    init = str(cfg.get("init_lora_weights", ""))
    if init.lower().startswith(BASE_CHANGING_INITS):
        warnings.append(
            {
                "name": "*",
                "reason": f"init_lora_weights={init!r}: the adapter's ΔW is relative "
                "to the base PEFT changed at initialization (its residual), not the original base",
            }
        )
    if cfg.get("alora_invocation_tokens"):
        warnings.append(
            {
                "name": "*",
                "reason": "aLoRA: PEFT applies ΔW = s·B@A only to tokens after the "
                "invocation sequence; the spectra are of that ΔW",
            }
        )
    return warnings


@peft_type("LORA", ADAPTER_PARTS, lora_config_checks)
def open_lora(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT LORA folder: config checked, then its tensors grouped into modules."""
    warnings = lora_config_checks(cfg, path)
    adapter = build_adapter(path, "peft", store, cfg)
    adapter.warnings[:0] = warnings
    return adapter


def build_adapter(path: Path, fmt: str, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """Group PEFT-named tensors (lora_A/lora_B/…) into modules; everything else is a full tensor or vector.

    A module path holding ``.base_layer`` segments, or one that ``target_parameters`` names, is a LoRA on a
    parameter (PEFT ``ParamWrapper``): see ``peft_experts.expert_modules``.
    """
    leftovers = Leftovers(store, "LORA")
    parts = group_parts(store, _KEY, leftovers)
    modules: list[AdapterModule] = []
    problems: list[str] = []
    warnings: list[dict[str, str]] = []
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    wrapped: dict[str, dict[int, dict[str, str]]] = defaultdict(dict)
    for name, p in sorted(parts.items()):
        if "lora_B.bias" in p:
            leftovers.vectors[name + ".lora_B.bias"] = TensorRef(store, p["lora_B.bias"])
        depth = name.count(".base_layer")
        if depth or targets_parameters(cfg, name):
            wrapped[name.replace(".base_layer", "")][depth] = p
            continue
        module = _lora_module(name, p, store, cfg, fmt, fan_in_fan_out, problems, warnings)
        if module is not None:
            modules.append(module)
    for name, by_depth in sorted(wrapped.items()):
        modules += expert_modules(name, by_depth, store, cfg, fmt, problems, warnings)
    return finish(path, fmt, store, cfg, modules, leftovers, problems, warnings, "LoRA")


def _lora_module(
    name: str,
    p: dict[str, str],
    store: TensorStore,
    cfg: dict[str, Any],
    fmt: str,
    fan_in_fan_out: bool,
    problems: list[str],
    warnings: list[dict[str, str]],
) -> AdapterModule | None:
    """One LoRA / DoRA module, or None with the problem recorded."""
    params: dict[str, Any] = {}
    if "lora_A" in p and "lora_B" in p:
        a, b = p["lora_A"], p["lora_B"]
        kind = "conv" if len(store.info(a).shape) > 2 else "linear"
        left, right = TensorRef(store, b, "flatten"), TensorRef(store, a, "flatten")
        if len(left.shape) != 2 or len(right.shape) != 2:
            problems.append(
                f"{name}: LoRA factors must be matrices (conv kernels flattened), found shapes "
                f"{list(left.stored_shape)} and {list(right.stored_shape)}"
            )
            return None
        per_group, rank = left.shape[1], right.shape[0]
        if kind == "conv" and 0 < per_group < rank and rank % per_group == 0:
            params["groups"] = rank // per_group  # PEFT's grouped lora_B: (out, r/G, 1, …)
    elif "lora_embedding_A" in p and "lora_embedding_B" in p:
        # PEFT Embedding: A (r, num_embeddings), B (dim, r); ΔW (num, dim) = s·(B @ A)ᵀ = s·Aᵀ @ Bᵀ
        a, b = p["lora_embedding_A"], p["lora_embedding_B"]
        kind = "embedding"
        left, right = TensorRef(store, a, "transpose"), TensorRef(store, b, "transpose")
        if len(left.shape) != 2 or len(right.shape) != 2:
            problems.append(
                f"{name}: embedding LoRA factors must be matrices, found shapes "
                f"{list(left.stored_shape)} and {list(right.stored_shape)}"
            )
            return None
    else:
        found = ", ".join(sorted(p))
        problems.append(f"{name}: has {found} but not both LoRA factors (lora_A and lora_B)")
        return None
    rank = right.shape[0]
    if left.shape[1] * params.get("groups", 1) != rank:
        problems.append(f"{name}: factor shapes {left.shape} and {right.shape} do not chain (ranks differ)")
        return None
    if "r" in cfg:
        r, alpha, scale = module_scale(cfg, name)
    else:
        r, alpha, scale = rank, None, 1.0
    if r != rank:  # PEFT builds the layer at the config's r and cannot load these factors (size mismatch)
        key = "rank_pattern" if r != cfg.get("r") else "r"
        params[
            "config_rank"
        ] = (  # the audit reports it; open_checkpoint refuses it (``refuse_rank_mismatch``)
            f"{name}: the factors have rank {rank} but adapter_config.json's {key} gives r={r}"
        )
        warnings.append({"name": name, "reason": f"tensors have rank {rank} but the config gives r={r}"})
    parts = {"up": left, "down": right}
    if "lora_magnitude_vector" in p:
        if params.get("groups"):
            problems.append(f"{name}: DoRA on a grouped convolution is not read")
            return None
        parts["magnitude"] = TensorRef(store, p["lora_magnitude_vector"])
    family = "dora" if "magnitude" in parts else "lora"
    shape = (left.shape[0], right.shape[1])
    kernel = tuple(right.stored_shape[2:]) if kind == "conv" else ()
    return AdapterModule(
        name, family, parts, shape, r, alpha, scale, kind, fmt, fan_in_fan_out, kernel, params
    )
