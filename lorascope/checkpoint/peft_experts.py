"""LoRA on parameters (PEFT ``target_parameters``, ``lora.ParamWrapper``): fused MoE expert weights.

PEFT wraps one parameter per wrapper, nesting them in the order the model class registers its parameters; a
3-D parameter (E, ·, ·) gives lora_A (E·r, in) and lora_B (out, r·E), one ``lora_expert`` module per expert.
Which nested wrapper is which parameter is resolved against the base (``lorascope.delta.experts``).
"""

from __future__ import annotations

import math
from typing import Any

from .base import AdapterModule, TensorRef
from .peft_config import pattern_values
from .tensor_store import TensorStore


def parameter_candidates(cfg: dict[str, Any], module: str) -> list[str]:
    """Names of ``module``'s parameters that the config's ``target_parameters`` select, PEFT's matching:
    the key ``<module>.<parameter>`` equals a target or ends with '.' + target."""
    found = []
    for target in cfg.get("target_parameters") or []:
        param = str(target).rpartition(".")[2]
        key = f"{module}.{param}"
        if (key == target or key.endswith("." + str(target))) and param not in found:
            found.append(param)
    return found


def targets_parameters(cfg: dict[str, Any], module: str) -> bool:
    return bool(parameter_candidates(cfg, module))


def expert_modules(
    module: str,
    by_depth: dict[int, dict[str, str]],
    store: TensorStore,
    cfg: dict[str, Any],
    fmt: str,
    problems: list[str],
    warnings: list[dict[str, str]],
) -> list[AdapterModule]:
    """The LoRAs PEFT's ParamWrapper puts on the parameters of ``module``: one module per expert.

    PEFT wraps one parameter per wrapper, nesting them in the order the model class registers its
    parameters; the first wrapped is innermost, its keys carry the most ``.base_layer`` segments. A single
    targeted parameter is named by the config; several are told apart only by the base (its fused
    parameters' shapes or its model type), so their modules carry ``params['parameter'] = None`` and the
    candidates until a base resolves them (``lorascope.delta.experts``).

    A 3-D parameter (E, ·, ·) gives lora_A (E·r, in) and lora_B (out, r·E); a 2-D one (E = 1) is a plain
    LoRA on that weight.
    """
    candidates = parameter_candidates(cfg, module)
    wrappers = len(by_depth)
    known = candidates[0] if len(candidates) == 1 and wrappers == 1 else None
    if not candidates:
        problems.append(
            f"{module}: LoRA factors nested under base_layer, but target_parameters names no "
            "parameter of this module"
        )
        return []
    ranks = {c: pattern_values(cfg, f"{module}.{c}") for c in ([known] if known else candidates)}
    if len(set(ranks.values())) > 1:
        problems.append(
            f"{module}: {wrappers} nested parameter LoRAs whose rank_pattern / alpha_pattern "
            f"entries differ ({ranks}); which is which is not recorded"
        )
        return []
    r, alpha = next(iter(ranks.values()))
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    out: list[AdapterModule] = []
    for depth, p in sorted(by_depth.items()):
        where = module + ".base_layer" * depth
        if "lora_A" not in p or "lora_B" not in p:
            problems.append(f"{where}: has {', '.join(sorted(p))} but not both LoRA factors")
            continue
        a, b = TensorRef(store, p["lora_A"]), TensorRef(store, p["lora_B"])
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] % r or b.shape[1] != a.shape[0]:
            problems.append(
                f"{where}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not "
                f"(E·r, in) and (out, r·E) for r={r}"
            )
            continue
        experts, shape = a.shape[0] // r, (b.shape[0], a.shape[1])
        if experts == 1 and known is not None:  # a 2-D parameter: a plain LoRA on that weight
            name = module if known == "weight" else f"{module}.{known}"
            parts = {"up": b, "down": a}
            out.append(AdapterModule(name, "lora", parts, shape, r, alpha, scale, "linear", fmt))
            continue
        path = f"{module}.{known}" if known else f"{module}.<nested {depth} of {wrappers}>"
        for e in range(experts):
            params = {
                "expert": e,
                "experts": experts,
                "module": module,
                "parameter": known,
                "candidates": tuple(candidates),
                "depth": depth,
                "wrappers": wrappers,
            }
            parts = {"lora_A": a, "lora_B": b}
            out.append(
                AdapterModule(
                    f"{path}.{e}", "lora_expert", parts, shape, r, alpha, scale, "expert", fmt, params=params
                )
            )
    return out
