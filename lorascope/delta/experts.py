"""LoRA on fused MoE experts (PEFT ``target_parameters``) against its base: which parameter, which way round.

A ``lora_expert`` module is expert e of a LoRA on a 3-D parameter (E, d1, d2). PEFT defines its factors
from that parameter (``lora.ParamWrapper``): when the experts module declares ``is_transposed`` the
parameter is (E, in, out), else (E, out, in), and ΔW_e = s·B_e A_e is (out, in) either way. Against the
base, the parameter's expert slice is used as stored (E, out, in) or transposed (E, in, out):

- the shapes decide where they can: a (d1, d2) slice with d1 ≠ d2 fits only one orientation of (out, in);
- square experts need the declaration: the base's config ``model_type`` names a transformers class that sets
  ``is_transposed`` (``TRANSPOSED_EXPERTS``) or leaves PEFT's default, False (``PLAIN_EXPERTS``); for any
  other model type the pairing is refused.

Several parameters of one module (gate_up_proj and down_proj, say) are wrapped by nested ParamWrappers in
the order the model class registers them, which the adapter does not record. The base tells them apart:
by the shapes of its fused parameters, or, for the model types above, by the order every transformers
experts class registers them in (``REGISTRATION_ORDER``). Checkpoints saved by transformers keep experts
one by one on disk (``experts.0.gate_proj.weight`` …), not fused: the modules are then named and analyzed
without the base's values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..checkpoint.base import AdapterModule, Weights

# transformers 5 experts classes decorated with use_experts_implementation(is_transposed=True): (E, in, out)
TRANSPOSED_EXPERTS = frozenset({"gpt_oss", "aria", "openai_privacy_filter"})
# model types whose fused experts PEFT reads as (E, out, in): decorated without is_transposed, or (llama4,
# step3p7) not decorated at all, so PEFT's getattr(module, "is_transposed", False) is False
PLAIN_EXPERTS = frozenset(
    {
        "afmoe",
        "bailing_hybrid",
        "cohere2_moe",
        "deepseek_v2",
        "deepseek_v3",
        "deepseek_v32",
        "deepseek_v4",
        "dots1",
        "ernie4_5_moe",
        "ernie4_5_vl_moe",
        "exaone_moe",
        "flex_olmo",
        "gemma4",
        "glm4_moe",
        "glm4_moe_lite",
        "glm4v_moe",
        "granitemoe",
        "granitemoehybrid",
        "granitemoeshared",
        "hunyuan_v1_moe",
        "jamba",
        "kimi_linear",
        "lfm2_moe",
        "llama4",
        "llama4_text",
        "minimax",
        "minimax_m2",
        "mixtral",
        "nemotron_h",
        "olmoe",
        "phimoe",
        "qwen2_moe",
        "qwen3_5_moe",
        "qwen3_moe",
        "qwen3_next",
        "qwen3_omni_moe",
        "qwen3_vl_moe",
        "step3p7",
    }
)
# the order in which every experts class of those model types registers its fused parameters (transformers 5)
REGISTRATION_ORDER = ("gate_up_proj", "gate_proj", "up_proj", "down_proj")


def declared_model_type(config: dict[str, Any] | None) -> str | None:
    """The base config's model type among those whose experts layout lorascope knows, else None."""
    for cfg in (config or {}, (config or {}).get("text_config") or {}):
        kind = cfg.get("model_type") if isinstance(cfg, dict) else None
        if kind in TRANSPOSED_EXPERTS | PLAIN_EXPERTS:
            return kind
    return None


class ExpertBases:
    """Resolves each ``lora_expert`` module to its parameter, base key and orientation (once per module).

    Args:
        base: the base checkpoint.
        find: base key of a dotted name, or None.
        modules: every module of the adapter (the siblings of a wrapped module are told apart together).
    """

    def __init__(self, base: Weights, find: Callable[[str], str | None], modules: list[AdapterModule]):
        self.base = base
        self.find = find
        self.model_type = declared_model_type(base.config)
        self._resolved: dict[str, dict[int, tuple[str, str | None]] | str] = {}
        self.siblings: dict[str, list[AdapterModule]] = {}  # module -> expert 0 of each wrapper
        for m in modules:
            if m.family == "lora_expert" and m.params["expert"] == 0:
                self.siblings.setdefault(m.params["module"], []).append(m)

    def resolve(self, m: AdapterModule) -> tuple[str, str | None, bool] | str:
        """(parameter name, its base key or None when the base holds no fused parameter of that name, whether
        the expert slice is transposed to (out, in)), or the problem."""
        p = m.params
        assigned = self._resolved.get(p["module"])
        if assigned is None:
            assigned = self._resolved[p["module"]] = self._assign(p["module"])
        if isinstance(assigned, str):
            return assigned
        param, key = assigned[p["depth"]]
        if key is None:
            return param, None, False
        info = self.base.store.info(key)
        if not info.is_float:
            return f"{key}: the base parameter is {info.dtype}, not floating point"
        if not self._fits(key, m):
            return (
                f"{key}: the base parameter is {list(info.shape)}, not ({p['experts']} experts, "
                f"{m.shape[0]}, {m.shape[1]}) in either orientation; is this the adapter's base?"
            )
        transposed = self._transposed(m, key)
        return transposed if isinstance(transposed, str) else (param, key, transposed)

    def _fits(self, key: str, m: AdapterModule) -> bool:
        shape = self.base.store.info(key).shape
        return len(shape) == 3 and shape[0] == m.params["experts"] and sorted(shape[1:]) == sorted(m.shape)

    def _assign(self, module: str) -> dict[int, tuple[str, str | None]] | str:
        """depth -> (parameter, base key or None) for every wrapper on ``module``, or the problem."""
        wrappers = self.siblings[module]
        first = wrappers[0].params
        if first["parameter"]:
            return {first["depth"]: (first["parameter"], self.find(f"{module}.{first['parameter']}"))}
        keys = {c: self.find(f"{module}.{c}") for c in first["candidates"]}
        if any(keys.values()):
            return self._by_shapes(module, wrappers, keys)
        return self._by_order(module, wrappers, list(keys))

    def _by_shapes(
        self, module: str, wrappers: list[AdapterModule], keys: dict[str, str | None]
    ) -> dict[int, tuple[str, str | None]] | str:
        """Each wrapper fits exactly one of the base's fused parameters, all different."""
        assignment: dict[int, tuple[str, str | None]] = {}
        for m in wrappers:
            fitting = [(c, k) for c, k in keys.items() if k is not None and self._fits(k, m)]
            if len(fitting) != 1:
                shapes = ", ".join(f"{c} {list(self.base.store.info(k).shape)}" for c, k in keys.items() if k)
                return (
                    f"{module}: {len(wrappers)} nested parameter LoRAs on {', '.join(keys)}; the "
                    f"base's shapes ({shapes}) do not tell which wrapper is which parameter (PEFT "
                    "nests them in the order the model class registers them, which the adapter does not "
                    "record)"
                )
            assignment[m.params["depth"]] = fitting[0]
        if len({c for c, _ in assignment.values()}) != len(assignment):
            return f"{module}: two nested parameter LoRAs fit the same base parameter; which is which?"
        return assignment

    def _by_order(
        self, module: str, wrappers: list[AdapterModule], candidates: list[str]
    ) -> dict[int, tuple[str, str | None]] | str:
        """The innermost wrapper is the first parameter registered, in the order the model type fixes."""
        known = set(candidates) <= set(REGISTRATION_ORDER)
        if self.model_type is None or len(candidates) != len(wrappers) or not known:
            kind = (self.base.config or {}).get("model_type")
            types = ", ".join(sorted(TRANSPOSED_EXPERTS | PLAIN_EXPERTS))
            return (
                f"{module}: {len(wrappers)} nested parameter LoRAs on {', '.join(candidates)}, and the "
                "base holds no fused parameter of these names to tell them apart by shape (checkpoints "
                "saved by transformers keep experts one by one) nor declares a model type whose "
                f"registration order lorascope knows (its config says {kind!r}). Give a base whose "
                "state dict holds the fused parameters, or a model folder whose config.json names one "
                f"of: {types}."
            )
        ordered = sorted(candidates, key=REGISTRATION_ORDER.index)  # first registered = innermost = deepest
        depths = sorted((m.params["depth"] for m in wrappers), reverse=True)
        return {depth: (param, None) for depth, param in zip(depths, ordered)}

    def _transposed(self, m: AdapterModule, key: str) -> bool | str:
        """Whether the expert slice (d1, d2) is (in, out): by the shapes when not square, else as declared."""
        d1, d2 = self.base.store.info(key).shape[1:]
        out, inp = m.shape
        declared = None if self.model_type is None else self.model_type in TRANSPOSED_EXPERTS
        if d1 != d2:
            by_shape = (d1, d2) == (inp, out)
            if declared is not None and declared != by_shape:
                layout = "(E, in, out)" if declared else "(E, out, in)"
                return (
                    f"{key}: the base config ({self.model_type}) declares its experts {layout} but the "
                    "adapter's factors fit only the other orientation; is this the adapter's base?"
                )
            return by_shape
        if declared is None:
            kind = (self.base.config or {}).get("model_type")
            types = ", ".join(sorted(TRANSPOSED_EXPERTS | PLAIN_EXPERTS))
            return (
                f"{key}: square experts ({d1}×{d2}) and no declared layout: whether PEFT read this "
                "parameter as (experts, out, in) or (experts, in, out) depends on the model class's "
                f"is_transposed, which lorascope knows for the model types {types}; the base's config "
                f"declares {kind!r}. Give the base as a model folder whose config.json names one of "
                "them, or analyze the adapter alone (its spectra need no orientation)."
            )
        return declared
