"""Owns which modules a LoRA target specification reaches, by PEFT's rules (peft/tuners/tuners_utils.py).

A list of names matches a module whose name equals a name or ends with ``.`` + name (``c_proj`` reaches
``attn.c_proj`` and ``mlp.c_proj`` in GPT-2); a string is a full-match regex; ``all-linear`` is every Linear
and Conv1D layer but the output layer. ``layers_to_transform`` filters name lists only; ``modules_to_save``
is never a LoRA target. ``attn`` and ``mlp`` are lorascope presets (``PRESETS``); no targets means PEFT's
default for the architecture (``PEFT_DEFAULTS``: TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import LorascopeError
from .numbers import format_ranges
from .shapes import LORA_KINDS, ModelShapes, type_of

ALL_LINEAR = "all-linear"
PRESET_WORDS = (ALL_LINEAR, "attn", "mlp")
_LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2")
# Preset target sets per architecture: a tuple of names (PEFT list semantics) or a regex string.
PRESETS: dict[str, dict[str, tuple[str, ...] | str]] = {
    "attn": {
        **dict.fromkeys(_LLAMA_LIKE, ("q_proj", "k_proj", "v_proj", "o_proj")),
        "phi3": ("qkv_proj", "o_proj"), "gpt2": ("attn.c_attn", "attn.c_proj"),
        "bert": ("query", "key", "value", "attention.output.dense"),
        "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin"),
    },
    "mlp": {
        **dict.fromkeys((a for a in _LLAMA_LIKE if a != "mixtral"), ("gate_proj", "up_proj", "down_proj")),
        "mixtral": ("w1", "w2", "w3"), "phi3": ("gate_up_proj", "down_proj"),
        "gpt2": ("mlp.c_fc", "mlp.c_proj"),
        # not ("intermediate.dense", "output.dense"): 'output.dense' also ends 'attention.output.dense'
        "bert": r".*\.layer\.\d+\.(intermediate|output)\.dense", "distilbert": ("ffn.lin1", "ffn.lin2"),
    },
}  # fmt: skip
PEFT_DEFAULTS = {
    **dict.fromkeys(_LLAMA_LIKE, ("q_proj", "v_proj")),
    "gpt2": ("c_attn",),
    "bert": ("query", "value"),
}
# PEFT ≥ 0.21 on transformers ≥ 5 (peft/utils/transformers_weight_conversion.py): MoE models whose experts
# transformers fuses into 3-D parameters get their transformers-4 target names mapped to target_parameters
# (old leaf name -> the parameter it now targets); a fused group is targeted whole, at rank r·len(group).
MOE_TARGETS = {
    "mixtral": {"gate": "gate.weight", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"}
}
MOE_FUSED = {"mixtral": {"gate_up_proj": ("w1", "w3")}}


@dataclass(frozen=True)
class TargetSpec:
    """What the user asked LoRA to target: names, one regex, a preset word, or nothing (PEFT's default)."""

    names: tuple[str, ...] = ()
    regex: str | None = None
    preset: str | None = None  # all-linear | attn | mlp | None

    def __post_init__(self) -> None:
        if sum((bool(self.names), self.regex is not None, self.preset is not None)) > 1:
            raise ValueError("TargetSpec takes one of names, regex or preset")
        if self.preset is not None and self.preset not in PRESET_WORDS:
            raise ValueError(f"preset must be one of {PRESET_WORDS}, got {self.preset!r}")

    def __str__(self) -> str:
        return ",".join(self.names) or (self.regex if self.regex is not None else self.preset or "default")


def parse_targets(value: str | Sequence[str] | None, where: str = "--targets") -> TargetSpec:
    """A TargetSpec from ``q_proj,v_proj``, ``attn``, ``mlp``, ``all-linear``, a regex, or a list of names.

    A string with regex characters (``*+?[](){}|^$\\``) or a ``re:`` prefix is a full-match regex, as a string
    target_modules is in PEFT; otherwise it is a comma-separated list of names.

    Raises:
        LorascopeError: an empty name or a regex that does not compile.
    """
    if value is None:
        return TargetSpec()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in PRESET_WORDS:
            return TargetSpec(preset=text.lower())
        if text.startswith("re:") or set("*+?[](){}|^$\\") & set(text):
            pattern = text.removeprefix("re:")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise LorascopeError(
                    f"{where} {pattern!r} is not a valid regular expression: {exc}."
                ) from None
            return TargetSpec(regex=pattern)
        value = text.split(",")
    names = tuple(str(n).strip() for n in value)
    if not names or not all(names):
        raise LorascopeError(
            f"{where} {value!r} has an empty target name; give names separated by commas (q_proj,v_proj), a "
            "preset (attn, mlp, all-linear) or a regex."
        )
    return TargetSpec(names=names)


@dataclass(frozen=True)
class TargetMatch:
    """The modules one target specification reaches in one model."""

    label: str  # how the targets were chosen, for messages
    modules: tuple[str, ...]  # LoRA modules, in model order
    regex: str | None = None  # the full-match regex PEFT receives, if any
    by_target: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each target -> modules it reached
    unmatched: tuple[str, ...] = ()  # targets that reached nothing
    refused: tuple[tuple[str, str], ...] = ()  # (name, kind) reached but not a layer LoRA can wrap
    outside_layers: int = 0  # modules a target named that --layers left out
    parameters: tuple[str, ...] = ()  # target_parameters reached (fused experts, routers): parameter paths
    rank_factor: dict[str, int] = field(default_factory=dict)  # parameter leaf -> rank multiple (fused)
    absent_layers: tuple[int, ...] = ()  # --layers indices the model does not have
    model_layers: tuple[int, ...] = ()  # the layer indices it has (where --layers was given)

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Matched modules by module type (``self_attn.q_proj``, ``block_sparse_moe.experts.*.w1``)."""
        out: dict[str, tuple[str, ...]] = {}
        for name in (*self.modules, *self.parameters):
            out[type_of(name)] = (*out.get(type_of(name), ()), name)
        return out


def resolve(spec: TargetSpec, model: ModelShapes) -> tuple[tuple[str, ...], str | None, str, bool]:
    """(names, regex, label, full_names) PEFT would get for this model: presets and the default made concrete;
    ``full_names`` for all-linear's exact module names, which PEFT does not filter by layer.

    Raises:
        LorascopeError: a preset or default that does not exist for the architecture.
    """
    if spec.names or spec.regex is not None:
        return spec.names, spec.regex, str(spec) if spec.names else f"regex {spec.regex}", False
    if spec.preset == ALL_LINEAR:
        head = model.output_head
        names = tuple(m.name for m in model.modules if m.kind in ("linear", "conv1d") and m.name != head)
        return names, None, ALL_LINEAR + (f" (leaves out the output layer {head})" if head else ""), True
    table = PRESETS[spec.preset] if spec.preset else PEFT_DEFAULTS
    if model.arch not in table and spec.preset:
        raise LorascopeError(
            f"--targets {spec.preset}: no {spec.preset} preset for model_type {model.arch!r} (presets exist "
            f"for {', '.join(sorted(table))}); give the module names instead."
        )
    if model.arch not in table:
        raise LorascopeError(
            f"no --targets given and PEFT has no default targets for model_type {model.arch!r}; give "
            "--targets (names, attn, mlp, all-linear or a regex)."
        )
    value = table[model.arch]
    if isinstance(value, str):
        return (), value, f"{spec.preset} = regex {value}", False
    default = f"{','.join(value)} (PEFT's default for {model.arch})"
    return value, None, f"{spec.preset} = {','.join(value)}" if spec.preset else default, False


def peft_layer_index(name: str, layers_pattern: Sequence[str] | str | None = None) -> int | None:
    """The layer index PEFT's layers_to_transform reads from a module name (its first numbered component
    after at least two others, or after one of ``layers_pattern``), or None."""
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern or [r"[^.]*"]
    lead = r"(?:^|.*?\.)" if layers_pattern else r".*?\."
    return next((int(m[1]) for p in patterns if (m := re.match(rf"{lead}{p}\.(\d+)\.", name))), None)


def names_component(entry: str, name: str) -> bool:
    """Whether ``entry`` names whole components of ``name``, as PEFT's ``re.match`` of
    ``(^|.*\\.){entry}($|\\..*)`` decides it: how modules_to_save keeps LoRA off a module and how
    ensure_weight_tying finds a tied one."""
    return re.match(rf"(^|.*\.){entry}($|\..*)", name) is not None


def match_targets(
    model: ModelShapes,
    spec: TargetSpec,
    layers: Sequence[int] | None = None,
    modules_to_save: Sequence[str] = (),
    layers_pattern: Sequence[str] | str | None = None,
) -> TargetMatch:
    """The modules PEFT would put LoRA on (check_target_module_exists over every module owning parameters).

    Raises:
        LorascopeError: ``layers`` with a regex or all-linear (PEFT refuses that combination); one member of
            a fused expert group targeted without the others (``_moe_conversion``).
    """
    names, regex, label, full_names = resolve(spec, model)
    if layers is not None and (regex is not None or full_names):
        raise LorascopeError(
            f"--layers cannot be combined with targets {label}: PEFT applies layers_to_transform to lists of "
            "names only (LoraConfig raises 'layers_to_transform cannot be used when target_modules is a "
            "str'). Give module names, or put the layer range into the regex."
        )
    names, regex, label, param_targets, rank_factor = _moe_conversion(names, regex, label, full_names, model)
    full_names = full_names and not param_targets  # converted all-linear: leaf names, PEFT list semantics
    by_target: dict[str, list[str]] = {t: [] for t in (() if full_names else names)}
    by_target |= {regex: []} if regex is not None else {}
    hits, refused, outside, wanted = [], [], 0, set(names)
    for m in model.modules:
        if any(names_component(t, m.name) for t in modules_to_save):
            continue
        parts = m.name.split(".")
        if regex is not None:
            targets = [regex] if re.fullmatch(regex, m.name) else []
        elif m.name in wanted:
            targets = [m.name]
        elif targets := [t for i in range(1, len(parts)) if (t := ".".join(parts[i:])) in wanted]:
            if layers is not None and peft_layer_index(m.name, layers_pattern) not in set(layers):
                outside += 1
                continue
        if targets and m.kind not in LORA_KINDS:
            refused.append((m.name, m.kind))
        elif targets:
            hits.append(m.name)
            for t in () if full_names else targets:
                by_target[t].append(m.name)
    by_target = {ALL_LINEAR: hits} if full_names else by_target
    by_target |= {t: [] for t in param_targets if t not in by_target}
    params = []
    for p in model.parameters:
        if reached := [t for t in param_targets if p.name == t or p.name.endswith("." + t)]:
            params.append(p.name)
            for t in reached:
                by_target[t].append(p.name)
    indices = (peft_layer_index(m.name, layers_pattern) for m in model.modules) if layers is not None else ()
    have = {i for i in indices if i is not None}
    return TargetMatch(
        label, tuple(hits), regex, {k: tuple(v) for k, v in by_target.items()},
        tuple(t for t, found in by_target.items() if not found), tuple(refused), outside, tuple(params),
        rank_factor, tuple(sorted(set(layers or ()) - have)), tuple(sorted(have)),
    )  # fmt: skip


def _moe_conversion(
    names: tuple[str, ...], regex: str | None, label: str, full_names: bool, model: ModelShapes
):
    """PEFT's MoE target conversion for transformers-5 module trees (``MOE_TARGETS``); a no-op elsewhere:
    (names, regex, label, target_parameters, rank factor per fused parameter).

    all-linear and regexes become leaf names first (all-linear adds every expert and router name; a regex the
    transformers-4 expert names it would have matched, probed on the fused parameters' containers); names
    that map to fused parameters move to target_parameters, which layers_to_transform does not filter.

    Raises:
        LorascopeError: one member of a fused group targeted without the others (PEFT refuses it).
    """
    mapping = MOE_TARGETS.get(model.arch)
    if model.shapes_from != "hf" or not mapping or not any(len(p.shape) == 3 for p in model.parameters):
        return names, regex, label, (), {}
    if full_names:
        names = tuple(dict.fromkeys([n.rsplit(".", 1)[-1] for n in names] + list(mapping)))
    elif regex is not None:
        keys = [m.name for m in model.modules] + [p.name for p in model.parameters]
        leaves = {k.rsplit(".", 1)[-1] for k in keys if re.fullmatch(regex, k)}
        for container, _, leaf in (p.name.rpartition(".") for p in model.parameters):
            old = {o for o, new in mapping.items() if new == leaf and re.fullmatch(regex, f"{container}.{o}")}
            leaves |= old
        if not leaves:
            return names, regex, label, (), {}
        names = tuple(sorted(leaves))
    present: dict[str, set[str]] = {}
    for target in names:
        if old := next((o for o in mapping if target == o or target.endswith("." + o)), None):
            present.setdefault(mapping[old], set()).add(old)
    for new, group in MOE_FUSED.get(model.arch, {}).items():
        if present.get(new) and present[new] != set(group):
            raise LorascopeError(
                f"targets {label}: {', '.join(sorted(present[new]))} cannot be targeted without "
                f"{', '.join(sorted(set(group) - present[new]))} on this model, because transformers fuses "
                f"them into {new} (PEFT raises the same error). Target them together."
            )
    remaining = tuple(t for t in names if not any(t == o or t.endswith("." + o) for o in mapping))
    factor = {
        new: len(g) for new, g in MOE_FUSED.get(model.arch, {}).items() if new in present and len(g) > 1
    }
    label += " (experts and router as target_parameters)" if present else ""
    return remaining, None, label, tuple(present), factor


def check_match(match: TargetMatch, model: ModelShapes, allow_unmatched: bool = False) -> list[str]:
    """Problems with a match, loudest first; raises when LoRA would reach nothing or PEFT would refuse.

    Returns:
        warnings to show (targets that matched nothing while others matched, with allow_unmatched).

    Raises:
        LorascopeError: nothing matched; a target matched a module LoRA cannot wrap; a target matched nothing
            (unless ``allow_unmatched``).
    """
    if match.refused:
        raise LorascopeError(
            f"targets {match.label} reach {len(match.refused)} module(s) LoRA cannot wrap: "
            f"{', '.join(f'{n} ({k})' for n, k in match.refused[:4])}. PEFT accepts Linear, Conv1D and "
            "Embedding layers only (it raises 'Target module … is not supported'). Narrow the targets."
        )
    wrappable = {m.name: type_of(m.name) for m in model.modules if m.kind in LORA_KINDS}
    messages = []
    for target in match.unmatched:
        why = " (all its matches lie outside --layers)" if match.outside_layers else ""
        near = sorted({t for name, t in wrappable.items() if target in name})[:5]
        hint = f"; names containing it: {', '.join(near)}" if near else ""
        messages.append(f"target {target!r} matched no module{why}{hint}")
    reached = bool(match.modules or match.parameters)
    if not reached or (messages and not allow_unmatched):
        peft = "PEFT raises 'Target modules … not found in the base model'"
        intro = (
            "some LoRA targets matched nothing"
            if reached
            else f"LoRA targets matched nothing in this model ({peft})"
        )
        tail = " Pass --allow-unmatched to count the rest anyway, as PEFT silently does." if reached else ""
        listed = ", ".join(f"{t} (×{n})" if n > 1 else t for t, n in Counter(wrappable.values()).items())
        reasons = "\n".join(f"  - {x}" for x in messages or [f"targets {match.label}"])
        raise LorascopeError(f"{intro}:\n{reasons}\n  layers LoRA can wrap in this model: {listed}{tail}")
    if match.absent_layers:
        has = f"its layers are {format_ranges(match.model_layers)}" if match.model_layers else ""
        has = has or "it has no numbered layers"
        messages.append(
            f"--layers (layers_to_transform) names layers this model does not have: "
            f"{format_ranges(match.absent_layers)} ({has}); PEFT skips them silently, so they add nothing to "
            "the count"
        )
    return messages
