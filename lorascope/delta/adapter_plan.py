"""An adapter's modules as lazy ``Delta`` items: alone, or each paired with its base weight.

``BaseLookup`` finds the base weight an adapter module refers to (by dotted name, kohya's flattened name under
its component's declared prefixes, or GGUF's names); ``_base_ref`` orients it as the formats declare
(PEFT's ``fan_in_fan_out``, a GPT-2 Conv1D base) and refuses a shape that fits only a guess. A family that
needs the base and has none is skipped, or analyzed by its stand-in (``BASE_FREE_STAND_INS``) with a warning.
"""

from __future__ import annotations

import dataclasses

from ..checkpoint.base import Adapter, AdapterModule, TensorRef, Weights
from ..checkpoint.gguf_names import GGUFBaseNames
from ..checkpoint.kohya_names import COMPONENT_PREFIXES, component_of, stem_of_key
from ..errors import LorascopeError, raise_collected
from ..names import Match, NameIndex
from .experts import ExpertBases
from .family import FAMILIES
from .full_diff import declares_conv1d
from .items import Delta, Plan, VectorDelta, dense_delta, module_delta, weight_name

# 1-D tensors that are updates themselves, not new values: PEFT lora_B bias, LyCORIS full diff_b and norm
# diffs.
UPDATE_VECTORS = (".lora_B.bias", ".diff_b", ".w_norm", ".b_norm")


def plan_adapter(adapter: Adapter, base: Weights | None) -> Plan:
    warnings = list(adapter.warnings)
    if base is None:
        return _plan_adapter_alone(adapter, warnings)
    return _plan_adapter_on_base(adapter, base, warnings)


def _without_base(m: AdapterModule, warnings: list[dict[str, str]]) -> Delta | None:
    """The module's Delta when no base weight is given: its own family, or its stand-in with a warning,
    or None."""
    family = FAMILIES[m.family]
    if not family.needs_base:
        return module_delta(m.name, m)
    fallback = BASE_FREE_STAND_INS.get(m.family)
    if fallback is None:
        warnings.append(
            {
                "name": m.name,
                "reason": f"{m.family} update (ΔW = {family.formula}) needs the base weight, "
                "which was not found; skipped",
            }
        )
        return None
    return module_delta(m.name, dataclasses.replace(m, family=m.params.get("inner", fallback)))


# Families whose update needs the base, and the family analyzed in their place without one (with a warning).
BASE_FREE_STAND_INS = {"dora": "lora"}


def _refuse_base_only(adapter: Adapter, deltas: list[Delta]) -> None:
    if adapter.modules and not deltas:
        families = ", ".join(adapter.families)
        raise LorascopeError(
            f"{adapter.path} is a {families} adapter: its update needs the base weights it was trained on "
            f"(ΔW = {FAMILIES[adapter.modules[0].family].formula}), so it cannot be analyzed alone. "
            "Give BASE ADAPTER: lorascope spectrum BASE ADAPTER."
        )


def _refuse_unnamed_experts(adapter: Adapter) -> None:
    """Nested LoRAs on several parameters of one module can be told apart only by their base parameters."""
    unnamed = sorted(
        {
            m.params["module"]
            for m in adapter.modules
            if m.family == "lora_expert" and m.params.get("parameter") is None
        }
    )
    if unnamed:
        example = next(
            m for m in adapter.modules if m.family == "lora_expert" and m.params["module"] == unnamed[0]
        )
        raise LorascopeError(
            f"{adapter.path} holds LoRAs on several fused parameters of one module ({len(unnamed)} such "
            f"modules, e.g. {unnamed[0]}: {', '.join(example.params['candidates'])}). PEFT nests one wrapper "
            "per parameter in the order the model class registers its parameters, which the adapter does not "
            "record, so which LoRA belongs to which parameter is not known from the adapter alone. Give BASE "
            "ADAPTER (lorascope spectrum BASE ADAPTER): its fused parameters' shapes, or its config's model "
            "type, tell them apart."
        )


def _plan_adapter_alone(adapter: Adapter, warnings: list[dict[str, str]]) -> Plan:
    _refuse_unnamed_experts(adapter)
    skipped: list[dict[str, str]] = []
    deltas = [d for d in (_without_base(m, skipped) for m in adapter.modules) if d is not None]
    _refuse_base_only(adapter, deltas)
    stood_in = [m for m in adapter.modules if m.family in BASE_FREE_STAND_INS]
    if stood_in:
        warnings.append(
            {
                "name": "*",
                "reason": f"{len(stood_in)} DoRA module(s) analyzed without the base: ΔW taken as the "
                "undecomposed update (s·B@A for LoRA), ignoring the magnitude vector. Give the base model "
                "(lorascope spectrum BASE ADAPTER) for the exact DoRA update.",
            }
        )
    warnings += skipped
    for name in adapter.dense:
        warnings.append(
            {
                "name": name,
                "reason": (
                    "full tensor saved with the adapter (modules_to_save); its update needs the base model"
                ),
            }
        )
    vectors = []
    for name, ref in adapter.vectors.items():
        if name.endswith(UPDATE_VECTORS):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
        else:
            warnings.append(
                {"name": name, "reason": "1-D tensor saved with the adapter; its update needs the base model"}
            )
    return Plan(deltas, vectors, warnings, "adapter")


# The leading component of a dotted adapter name -> its kohya_names.COMPONENT_PREFIXES entry: diffusers
# pipeline LoRAs name modules 'unet.…' / 'text_encoder.…'; ComfyUI saves the diffusion model's under
# 'diffusion_model.' (its 'model.diffusion_model.' checkpoint prefix, less 'model.').
DOTTED_COMPONENTS = {
    "unet": "unet",
    "text_encoder": "text_encoder",
    "text_encoder_2": "text_encoder_2",
    "transformer": "transformer",
    "diffusion_model": "diffusion_model",
}


class BaseLookup:
    """Finds the base weight key an adapter module refers to: by dotted name, by kohya's '_'-flattened name,
    or through GGUF's names for the adapter's architecture (``checkpoint.gguf.GGUFBaseNames``)."""

    def __init__(self, base: Weights, adapter: Adapter | None = None):
        self.key_of = {weight_name(k): k for k in base.store.keys()}
        flat: dict[str, list[str]] = {}
        for n, k in self.key_of.items():
            flat.setdefault(n.replace(".", "_"), []).append(k)
        # two dotted names that flatten alike ('a_b.c', 'a.b_c') are left out: a kohya name cannot tell them
        # apart
        self.flat_key_of = {n: ks[0] for n, ks in flat.items() if len(ks) == 1}
        self.dotted = NameIndex(self.key_of)
        self.flat = NameIndex(self.flat_key_of, sep="_")
        self.gguf = GGUFBaseNames(base, adapter) if adapter is not None and adapter.format == "gguf" else None

    def pair(self, m: AdapterModule) -> tuple[Match, AdapterModule]:
        """(the base key found or why not, the module with its parts as the base orders them) of one
        module."""
        if self.gguf is not None and m.source == "gguf":
            key, m = self.gguf.pair(m)
            return Match(key, "" if key else "no base tensor maps to this GGUF name"), m
        if m.source == "kohya":
            return self._kohya(m), m
        return self.match(m.name, m.source), m

    def _kohya(self, m: AdapterModule) -> Match:
        """A kohya module's base weight: kohya's own stem, then the resolved name, each under one of its
        component's declared prefixes (``kohya_names.COMPONENT_PREFIXES``)."""
        stem = stem_of_key(next(iter(m.parts.values())).key)
        split = component_of(stem) if stem else None
        if split is None:
            return self.match(m.name, "kohya")
        component, rest = split
        resolved = m.name.removeprefix(f"{component}.") if component else m.name
        for path in (rest, resolved.replace(".", "_")):
            hit = self._under(component, path, "_", f"the kohya name {stem}")
            if hit.name is not None or hit.ambiguous:
                return hit
        return self.match(m.name, "kohya")

    def _under(self, component: str | None, path: str, sep: str, what: str) -> Match:
        """The one base weight named ``prefix + path`` for a declared checkpoint prefix of ``component``,
        matched exactly (components joined by ``sep``). The base's names decide; two that fit pair nothing."""
        names = self.flat_key_of if sep == "_" else self.key_of
        hits = {
            names[n]
            for n in (p.replace(".", sep) + path for p in COMPONENT_PREFIXES[component])
            if n in names
        }
        if len(hits) == 1:
            return Match(hits.pop())
        if hits:
            return Match(None, f"ambiguous: {', '.join(sorted(hits))} all fit {what}", tuple(sorted(hits)))
        return Match(None, f"no base weight fits {what}")

    def match(self, name: str, source: str = "peft") -> Match:
        """The base weight key of an adapter module (``Match.name``), or None and why.

        A dotted name that starts with a pipeline component (diffusers' ``unet.``, ComfyUI's
        ``diffusion_model.``, ``DOTTED_COMPONENTS``) pairs under that component's declared checkpoint
        prefixes first."""
        if source == "kohya":
            hit = self.flat.match(name.replace(".", "_"))
            return Match(self.flat_key_of[hit.name]) if hit.name is not None else hit
        head, _, rest = name.partition(".")
        if head in DOTTED_COMPONENTS and rest:
            hit = self._under(DOTTED_COMPONENTS[head], rest, ".", f"the {head} component's {rest}")
            if hit.name is not None or hit.ambiguous:
                return hit
        hit = self.dotted.match(name)
        return Match(self.key_of[hit.name]) if hit.name is not None else hit

    def find(self, name: str, source: str = "peft") -> str | None:
        return self.match(name, source).name


def _base_ref(
    base: Weights, key: str, m: AdapterModule
) -> tuple[TensorRef | None, AdapterModule, str | None]:
    """The base weight in ΔW's (out, in) orientation as the formats declare it, the module completed from it
    (the family's ``fit_base``), or (None, m, the problem).

    Transposed when the adapter declares ``fan_in_fan_out`` (not for an embedding: PEFT's Embedding ignores
    it) or the base's config declares a Conv1D layer;
    as stored (conv kernels flattened) otherwise. A shape that fits only the other orientation is refused,
    never guessed: on a square layer a guess cannot be checked.
    """
    # PEFT's fan_in_fan_out applies to its Linear/Conv1D layers; its Embedding layer ignores the flag
    transpose = (m.fan_in_fan_out and m.kind != "embedding") or declares_conv1d(base, key)
    ref = TensorRef(base.store, key, "transpose" if transpose else "flatten")
    fit = FAMILIES[m.family].fit_base
    if fit is not None and len(ref.shape) == 2:
        fitted = fit(m, ref)
        if isinstance(fitted, str):
            return None, m, f"{m.name}: {fitted}"
        m = fitted
    if ref.shape == tuple(m.shape):
        return ref, m, None
    stored = base.store.info(key).shape
    problem = f"{m.name}: ΔW is {list(m.shape)} but the base weight {key} is {list(stored)}"
    if len(stored) == 2 and tuple(reversed(stored)) == tuple(m.shape):
        if transpose:
            problem += " (stored (out, in) although the adapter or the base config declares (in, out))"
        else:
            problem += (
                " — it fits only transposed, but nothing declares the (in, out) layout of GPT-2's Conv1D: "
                "give the base as its model folder with config.json (model_type declares it), or an adapter "
                "whose adapter_config.json sets fan_in_fan_out"
            )
    return None, m, problem


def _expert_delta(base: Weights, experts: ExpertBases, m: AdapterModule) -> Delta | str:
    """One expert of a LoRA on a fused parameter, paired with that expert's slice of the base parameter
    (``lorascope.delta.experts``); without a base ref where the base stores no fused parameter of its name."""
    resolved = experts.resolve(m)
    if isinstance(resolved, str):
        return resolved
    param, key, transpose = resolved
    e = int(m.params["expert"])
    path = weight_name(key) if key is not None else f"{m.params['module']}.{param}"
    name = f"{path}.{e}"  # the parameter path and expert index, as a full diff names its experts
    m = dataclasses.replace(m, name=name, params={**m.params, "parameter": param, "transposed": transpose})
    if key is None:
        return module_delta(name, m)
    return module_delta(name, m, TensorRef(base.store, key, "transpose" if transpose else "as_is", index=e))


def _plan_adapter_on_base(adapter: Adapter, base: Weights, warnings: list[dict[str, str]]) -> Plan:
    lookup = BaseLookup(base, adapter)
    experts = ExpertBases(base, lookup.find, adapter.modules)
    deltas: list[Delta] = []
    problems: list[str] = []
    matched = 0
    for m in adapter.modules:
        if m.family == "lora_expert":
            d = _expert_delta(base, experts, m)
            if isinstance(d, str):
                if d not in problems:
                    problems.append(d)
                continue
            if d.base is None:
                warnings.append(
                    {
                        "name": d.name,
                        "reason": "the base holds no fused parameter of this name "
                        "(checkpoints saved by transformers keep experts one by one); analyzed "
                        "without the base",
                    }
                )
            matched += 1
            deltas.append(d)
            continue
        hit, m = lookup.pair(m)
        key = hit.name
        if hit.ambiguous:
            problems.append(
                f"{m.name}: the base weight is {hit.reason}; give a base whose names are unambiguous"
            )
            continue
        if key is None:
            warnings.append(
                {
                    "name": m.name,
                    "reason": f"no base weight of this name ({hit.reason}); analyzed without the base",
                }
            )
            d = _without_base(m, warnings)
            if d is not None:
                deltas.append(d)
            continue
        info = base.store.info(key)
        if m.params.get("groups", 1) > 1 and m.family == "lora":
            warnings.append(
                {
                    "name": m.name,
                    "reason": "LoRA on a grouped convolution: PEFT adds a full "
                    "(ungrouped) convolution beside the grouped base weight and cannot merge it; "
                    "analyzed without the base",
                }
            )
            matched += 1
            deltas.append(module_delta(weight_name(key), m))
            continue
        ref, m, problem = _base_ref(base, key, m)
        if ref is None:
            problems.append(problem)  # type: ignore[arg-type]
            continue
        if not info.is_float:
            problems.append(
                f"{key}: the base weight is {info.dtype}, not floating point (a quantized "
                "checkpoint?); give the unquantized base"
            )
            continue
        matched += 1
        name = weight_name(key)  # the base's name, so rows join a full-diff analysis of the same model
        if m.family == "dora" and m.kind == "embedding":
            warnings.append(
                {"name": m.name, "reason": "DoRA on an embedding: magnitude ignored, ΔW taken as s·B@A"}
            )
            m = dataclasses.replace(m, family="lora")
        if 0 in m.shape:
            m = dataclasses.replace(m, shape=tuple(ref.shape))
        deltas.append(module_delta(name, m, ref))
    raise_collected(
        problems,
        f"the adapter {adapter.path} does not fit the base {base.path} for {len(problems)} module(s); "
        "is this the model it was trained on?",
    )
    if adapter.modules and matched == 0:
        raise LorascopeError(
            f"none of the {len(adapter.modules)} adapter modules of {adapter.path} (e.g. "
            f"{adapter.modules[0].name}) has a weight in the base {base.path} (which has e.g. "
            f"{', '.join(base.store.keys()[:3])}). Is this the adapter's base model?"
        )
    for name, ref in adapter.dense.items():
        key = lookup.find(name)
        b_ref = TensorRef(base.store, key, "flatten") if key else None
        if b_ref is None or b_ref.shape != ref.shape:
            warnings.append(
                {
                    "name": name,
                    "reason": "full tensor saved with the adapter (modules_to_save) with no "
                    "base weight of the same name and shape (a new head?); skipped",
                }
            )
            continue
        deltas.append(dense_delta(name, ref, b_ref, source="modules_to_save"))
    vectors: list[VectorDelta] = []
    for name, ref in adapter.vectors.items():
        if name.endswith(UPDATE_VECTORS):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
            continue
        key = lookup.find(name)
        if key is None or base.store.info(key).shape != ref.shape:
            warnings.append(
                {
                    "name": name,
                    "reason": "1-D tensor saved with the adapter with no base tensor of that shape; skipped",
                }
            )
            continue
        vectors.append(VectorDelta(name, ref, TensorRef(base.store, key)))
    return Plan(deltas, vectors, warnings, "adapter+base")
