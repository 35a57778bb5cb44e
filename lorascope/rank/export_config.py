"""The exported adapter's adapter_config.json: r = lora_alpha = the largest rank, ``rank_pattern`` and
``alpha_pattern`` that resolve every module to its own rank (scale 1 everywhere), and ``target_modules`` that
select the exported modules only.

``rank_pattern``/``alpha_pattern`` keys are full module names, longest first; PEFT takes the first key k with
``(.*\\.)?(k)$`` matching a module name, and every exported module is checked to resolve to its own rank with
``checkpoint.peft_config.module_scale`` before anything is written (explicit keys for every module, then
escaped keys, where a shorter name would also match a longer one). The dict itself is
``checkpoint.peft_config.lora_config``'s, the one LoRA config lorascope writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..checkpoint.peft_config import lora_config, module_scale


def _ordered(names: Iterable[str]) -> list[str]:
    """Longest first (then by name): a name that is a dotted suffix of another comes after it."""
    return sorted(names, key=lambda n: (-len(n), n))


def rank_patterns(
    ranks: dict[str, int], r_default: int, explicit_all: bool = False, escape: bool = False
) -> dict[str, int]:
    """rank_pattern (= alpha_pattern) entries: full names, longest first, for ranks other than the default."""
    keep = [n for n in ranks if explicit_all or ranks[n] != r_default]
    return {(re.escape(n) if escape else n): int(ranks[n]) for n in _ordered(keep)}


def pattern_problems(config: dict[str, Any], ranks: dict[str, int]) -> list[str]:
    """Every exported module whose (r, alpha, scale) under PEFT's pattern rules is not (r_l, r_l, 1)."""
    problems = []
    for name, r in ranks.items():
        got_r, got_alpha, scale = module_scale(config, name)
        if got_r != r or got_alpha != r or abs(scale - 1.0) > 1e-12:
            problems.append(f"{name}: resolves to r={got_r}, alpha={got_alpha:g} instead of r=alpha={r}")
    return problems


def target_problems(targets: list[str], exported: Iterable[str], all_names: Iterable[str]) -> list[str]:
    """Modules PEFT's target_modules matching (name == t or name ends with '.' + t) would wrongly select."""
    exported = set(exported)
    wrong = []
    for name in all_names:
        if name in exported:
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            wrong.append(name)
    return wrong


def adapter_config(
    ranks: dict[str, int],
    fan_in_fan_out: bool,
    source: dict[str, Any] | None = None,
    base_path: str | None = None,
    task_type: str | None = None,
) -> dict[str, Any]:
    """``adapter_config.json``: r = lora_alpha = the largest rank, patterns for the rest, scale 1 everywhere.

    The patterns are checked to select exactly their own module (module docstring); ValueError if no
    key form does.
    """
    if not ranks:
        raise ValueError("no module to export")  # module names, or target_parameters' parameter paths
    r_max = max(ranks.values())
    source = source or {}
    config = lora_config(
        r_max,
        r_max,
        sorted(ranks),
        fan_in_fan_out=fan_in_fan_out,
        base_model_name_or_path=source.get("base_model_name_or_path") or base_path,
        task_type=source.get("task_type", task_type),
        layers_to_transform=None,
        layers_pattern=None,
    )
    for explicit_all, escape in ((False, False), (True, False), (True, True)):
        pattern = rank_patterns(ranks, r_max, explicit_all, escape)
        config["rank_pattern"], config["alpha_pattern"] = pattern, dict(pattern)
        if not pattern_problems(config, ranks):
            return config
    raise ValueError(
        "no rank_pattern form selects exactly the intended modules: "
        + "; ".join(pattern_problems(config, ranks)[:5])
    )


def regex_targets(names: Iterable[str]) -> str:
    """A target_modules regex PEFT full-matches against module names: exactly these names."""
    return "^(?:" + "|".join(re.escape(n) for n in sorted(names)) + ")$"
