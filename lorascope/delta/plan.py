"""Pair modules by normalized name and describe each update ΔW as a lazy ``Delta`` item (docs/METRICS.md 'The update ΔW').

A ``Delta`` names its family (``lorascope.delta.FAMILIES``), its stored tensors by part, and, where given,
the base weight in ΔW's (out, in) orientation. ``plan_deltas`` reads only names, shapes and what the formats
declare; tensors are read when an item is computed. Everything skipped or unpaired is a warning with its
reason. Orientation comes from declarations — PEFT's ``fan_in_fan_out``, a base config's ``model_type`` whose
linear layers are GPT-2 Conv1D — never from a coincidence of shapes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..checkpoint import Adapter, AdapterModule, TensorRef, Weights
from ..checkpoint.gguf import GGUFBaseNames
from ..checkpoint.kohya_names import COMPONENT_PREFIXES, component_of, stem_of_key
from ..errors import LorascopeError, raise_collected
from ..names import Match, NameIndex
from .experts import ExpertBases
from .family import FAMILIES

# Tensors whose first dimension grows when tokens are added to a vocabulary.
VOCAB_NAMES = re.compile(r"(embed|wte|lm_head|word_embeddings|shared|output|score|head)", re.IGNORECASE)
# Model types whose linear layers are GPT-2 Conv1D, stored (in, out); transposed to (out, in).
CONV1D_MODEL_TYPES = {"gpt2"}
CONV1D_NAMES = re.compile(r"\.(c_attn|c_proj|c_fc|q_attn)$")
EXPERT_STACK = re.compile(r"experts?\b", re.IGNORECASE)
# 1-D tensors that are updates themselves, not new values: PEFT lora_B bias, LyCORIS full diff_b and norm diffs.
UPDATE_VECTORS = (".lora_B.bias", ".diff_b", ".w_norm", ".b_norm")


@dataclass(eq=False)
class Delta:
    """One update, read lazily: its family, stored tensors by part, ΔW's shape and the base weight where given.

    ``parts`` of the dense family hold ``tuned``; an adapter module's are the module's own. ``source`` is the
    format the update came from (dense, peft, kohya, …, modules_to_save).
    """

    name: str
    family: str
    parts: dict[str, TensorRef]
    shape: tuple[int, int]
    source: str
    base: TensorRef | None = None
    module: AdapterModule | None = None
    added_rows: int = 0

    @property
    def tuned(self) -> TensorRef:
        return self.parts["tuned"]

    @property
    def scale(self) -> float | None:
        return None if self.module is None else self.module.scale

    @property
    def rank(self) -> int | None:
        return None if self.module is None else self.module.rank


def dense_delta(name: str, tuned: TensorRef, base: TensorRef, source: str = "dense", added_rows: int = 0) -> Delta:
    return Delta(name, "dense", {"tuned": tuned}, tuple(tuned.shape[:2]), source, base, None, added_rows)


def module_delta(name: str, module: AdapterModule, base: TensorRef | None = None) -> Delta:
    return Delta(name, module.family, dict(module.parts), tuple(module.shape), module.source, base, module)


@dataclass
class VectorDelta:
    """A 1-D update (bias, norm weight): only its norms are recorded, in vectors.csv."""

    name: str
    tuned: TensorRef
    base: TensorRef | None = None
    is_update: bool = False  # the tensor is itself an update (lora_B.bias), not a new value


@dataclass
class Plan:
    deltas: list[Delta]
    vectors: list[VectorDelta] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    kind: str = "full-diff"  # full-diff | adapter | adapter+base


def weight_name(key: str) -> str:
    return key.removesuffix(".weight")


def filter_names(plan: Plan, include: str | None, exclude: str | None) -> Plan:
    """Keep the deltas whose names match ``include`` and not ``exclude`` (regexes, searched anywhere)."""
    inc = _compile(include, "--include")
    exc = _compile(exclude, "--exclude")

    def keep(name: str) -> bool:
        return (inc is None or inc.search(name) is not None) and (exc is None or exc.search(name) is None)

    deltas = [d for d in plan.deltas if keep(d.name)]
    if plan.deltas and not deltas:
        raise LorascopeError(
            f"no module name passes the filters (include={include!r}, exclude={exclude!r}); "
            f"names look like {plan.deltas[0].name!r}."
        )
    vectors = [v for v in plan.vectors if keep(v.name)]
    return dataclasses.replace(plan, deltas=deltas, vectors=vectors)


def _compile(pattern: str | None, option: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise LorascopeError(f"{option} {pattern!r} is not a valid regular expression: {exc}") from None


def plan_deltas(base: Weights | Adapter | None, tuned: Weights | Adapter) -> Plan:
    """Every update between ``base`` and ``tuned`` (an adapter alone when ``base`` is None)."""
    if isinstance(base, Adapter):
        raise LorascopeError(
            f"{base.path} is a LoRA adapter, but the first of two inputs must be the base model's weights. "
            "Give BASE TUNED, BASE ADAPTER, or an ADAPTER alone."
        )
    if isinstance(tuned, Adapter):
        return plan_adapter(tuned, base)
    if base is None:
        raise LorascopeError(
            f"{tuned.path} holds plain weights ({len(tuned.store.keys())} tensors such as "
            f"{', '.join(tuned.store.keys()[:3])}), not a LoRA adapter: its tensor names match none of the "
            "layouts lorascope reads (PEFT lora_A/lora_B, kohya lora_down/lora_up, diffusers .lora.down/.up, "
            "cloneofsimo :down/:up). To analyze a full fine-tune give two checkpoints: BASE TUNED."
        )
    return plan_full_diff(base, tuned)


# ---- full fine-tune: tuned − base -----------------------------------------------------------


def _conv1d(ckpt: Weights) -> bool:
    return bool(ckpt.config) and ckpt.config.get("model_type") in CONV1D_MODEL_TYPES


def plan_full_diff(base: Weights, tuned: Weights) -> Plan:
    warnings: list[dict[str, str]] = []
    deltas: list[Delta] = []
    vectors: list[VectorDelta] = []
    problems: list[str] = []
    b_store, t_store = base.store, tuned.store
    index = NameIndex(b_store.keys())
    conv1d = _conv1d(tuned) or _conv1d(base)
    paired: dict[str, str] = {}
    ambiguous: list[str] = []
    for key in t_store.keys():
        t_info = t_store.info(key)
        hit = index.match(key)
        b_key = hit.name
        tied = b_key is None and not hit.ambiguous and (b_key := tied_partner(base, key, warnings)) is not None
        if b_key is None:
            if hit.ambiguous:
                ambiguous.append(f"{key}: {hit.reason}")
            else:
                warnings.append({"name": key, "reason": f"only in the tuned checkpoint ({hit.reason})"})
            continue
        if not tied:  # a tied head's base weight is the embedding's too, as declared: not a second claim
            if b_key in paired:
                ambiguous.append(f"{key} and {paired[b_key]} both match the base tensor {b_key}")
                continue
            paired[b_key] = key
        b_info = b_store.info(b_key)
        if not (t_info.is_float and b_info.is_float):
            warnings.append({"name": key, "reason": f"not floating point ({t_info.dtype}); skipped"})
            continue
        if t_info.shape != b_info.shape:
            added = _added_rows(key, t_info.shape, b_info.shape)
            if added is None:
                problems.append(f"{key}: base {list(b_info.shape)} vs tuned {list(t_info.shape)}")
                continue
        else:
            added = 0
        if len(t_info.shape) <= 1:
            vectors.append(VectorDelta(weight_name(key), TensorRef(t_store, key), TensorRef(b_store, b_key)))
            continue
        name = weight_name(key)
        if len(t_info.shape) == 3 and EXPERT_STACK.search(key):
            for e in range(t_info.shape[0]):
                deltas.append(dense_delta(f"{name}.{e}", TensorRef(t_store, key, index=e),
                                          TensorRef(b_store, b_key, index=e)))
            continue
        layout = "transpose" if conv1d and len(t_info.shape) == 2 and CONV1D_NAMES.search(name) else "flatten"
        rows = b_info.shape[0] if added else None
        deltas.append(dense_delta(name, TensorRef(t_store, key, layout, rows), TensorRef(b_store, b_key, layout, rows),
                                  added_rows=added))
        if added:
            warnings.append({"name": name, "reason": f"{added} rows added (new tokens); the {rows} common rows analyzed"})
    raise_collected(ambiguous, f"{base.path} and {tuned.path}: {len(ambiguous)} tensor name(s) match more "
                    "than one tensor of the other checkpoint once wrapper prefixes are removed; lorascope "
                    "pairs tensors only by one unambiguous name (lorascope.names.NameIndex). Ambiguous "
                    "names:")
    raise_collected(
        problems,
        f"{base.path} and {tuned.path} do not have the same shapes for {len(problems)} tensor(s); "
        "they are probably not the same model (or a layer was resized). Mismatched keys:",
    )
    for key in b_store.keys():
        if key not in paired:
            warnings.append({"name": key, "reason": "only in the base checkpoint (no tuned tensor of that name)"})
    if not deltas and not vectors:
        raise LorascopeError(
            f"{base.path} and {tuned.path} share no tensor names; they are not two versions of one model "
            f"(base has e.g. {', '.join(b_store.keys()[:2])}; tuned has e.g. {', '.join(t_store.keys()[:2])})."
        )
    return Plan(deltas, vectors, warnings, "full-diff")


# ---- tied output heads: a tuned checkpoint that unties what its base declares tied -----------------------

# Output heads that models tie to their input embeddings, and those input embeddings, by the end of their key.
TIED_HEADS = ("lm_head.weight", "cls.predictions.decoder.weight", "vocab_projector.weight")
INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                    "tok_embeddings.weight", "shared.weight")


def declares_tied(ckpt: Weights) -> bool:
    """Whether a checkpoint's config declares its output head tied to the input embeddings.

    ``tie_word_embeddings`` as written, or where the key is left out, the default of its model type's
    transformers config class (gpt2 and gemma tie, llama does not). No config, or no transformers to ask:
    not declared.
    """
    config = ckpt.config or {}
    if isinstance(config.get("tie_word_embeddings"), bool):
        return config["tie_word_embeddings"]
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return False
    try:
        import transformers

        return bool(getattr(transformers.AutoConfig.for_model(model_type), "tie_word_embeddings", False))
    except Exception:  # noqa: BLE001 - no transformers, or a model type it does not know
        return False


def tied_partner(base: Weights, key: str, warnings: list[dict[str, str]]) -> str | None:
    """The base tensor a tuned output head is paired with when the base stores none: the base's input
    embedding, when the base declares the two tied (the tuned checkpoint has untied them). A warning says so.
    """
    if not key.endswith(TIED_HEADS) or not declares_tied(base):
        return None
    found = [k for k in base.store.keys()
             if k.endswith(INPUT_EMBEDDINGS) and len(base.store.info(k).shape) == 2]
    if len(found) != 1:
        return None
    reason = (f"the base declares its output head tied to the input embeddings (tie_word_embeddings) and "
              f"stores no {key}; the tuned checkpoint has its own, untied: ΔW = {key} (tuned) − {found[0]} "
              "(base), the weight the base's head uses")
    warnings.append({"name": weight_name(key), "reason": reason})
    return found[0]


def _added_rows(key: str, tuned: tuple[int, ...], base: tuple[int, ...]) -> int | None:
    """Rows added to an embedding or output head for new tokens, or None for a real mismatch."""
    if len(tuned) == len(base) and len(tuned) in (1, 2) and tuned[1:] == base[1:] and tuned[0] > base[0]:
        if VOCAB_NAMES.search(key):
            return tuned[0] - base[0]
    return None


# ---- adapters ---------------------------------------------------------------------------------


def plan_adapter(adapter: Adapter, base: Weights | None) -> Plan:
    warnings = list(adapter.warnings)
    if base is None:
        return _plan_adapter_alone(adapter, warnings)
    return _plan_adapter_on_base(adapter, base, warnings)


def _without_base(m: AdapterModule, warnings: list[dict[str, str]]) -> Delta | None:
    """The module's Delta when no base weight is given: its own family, or its stand-in with a warning, or None."""
    family = FAMILIES[m.family]
    if not family.needs_base:
        return module_delta(m.name, m)
    fallback = BASE_FREE_STAND_INS.get(m.family)
    if fallback is None:
        warnings.append({"name": m.name, "reason": f"{m.family} update (ΔW = {family.formula}) needs the base weight, "
                         "which was not found; skipped"})
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
    unnamed = sorted({m.params["module"] for m in adapter.modules
                      if m.family == "lora_expert" and m.params.get("parameter") is None})
    if unnamed:
        example = next(m for m in adapter.modules
                       if m.family == "lora_expert" and m.params["module"] == unnamed[0])
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
        warnings.append({
            "name": "*",
            "reason": f"{len(stood_in)} DoRA module(s) analyzed without the base: ΔW taken as the undecomposed update "
            "(s·B@A for LoRA), ignoring the magnitude vector. Give the base model (lorascope spectrum BASE ADAPTER) for the exact DoRA update.",
        })
    warnings += skipped
    for name in adapter.dense:
        warnings.append({"name": name, "reason": "full tensor saved with the adapter (modules_to_save); its update needs the base model"})
    vectors = []
    for name, ref in adapter.vectors.items():
        if name.endswith(UPDATE_VECTORS):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
        else:
            warnings.append({"name": name, "reason": "1-D tensor saved with the adapter; its update needs the base model"})
    return Plan(deltas, vectors, warnings, "adapter")


# The leading component of a dotted adapter name -> its kohya_names.COMPONENT_PREFIXES entry: diffusers pipeline
# LoRAs name modules 'unet.…' / 'text_encoder.…'; ComfyUI saves the diffusion model's under 'diffusion_model.'
# (its 'model.diffusion_model.' checkpoint prefix, less 'model.').
DOTTED_COMPONENTS = {
    "unet": "unet", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
    "transformer": "transformer", "diffusion_model": "diffusion_model",
}


class BaseLookup:
    """Finds the base weight key an adapter module refers to: by dotted name, by kohya's '_'-flattened name, or
    through GGUF's names for the adapter's architecture (``checkpoint.gguf.GGUFBaseNames``)."""

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
        """(the base key found or why not, the module with its parts as the base orders them) of one module."""
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
        hits = {names[n] for n in (p.replace(".", sep) + path for p in COMPONENT_PREFIXES[component]) if n in names}
        if len(hits) == 1:
            return Match(hits.pop())
        if hits:
            return Match(None, f"ambiguous: {', '.join(sorted(hits))} all fit {what}", tuple(sorted(hits)))
        return Match(None, f"no base weight fits {what}")

    def match(self, name: str, source: str = "peft") -> Match:
        """The base weight key of an adapter module (``Match.name``), or None and why.

        A dotted name that starts with a pipeline component (diffusers' ``unet.``, ComfyUI's ``diffusion_model.``,
        ``DOTTED_COMPONENTS``) pairs under that component's declared checkpoint prefixes first."""
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


def declares_conv1d(base: Weights, name: str) -> bool:
    """Whether the base's config declares this weight a GPT-2 Conv1D, stored (in, out)."""
    return _conv1d(base) and CONV1D_NAMES.search(weight_name(name)) is not None


def _base_ref(base: Weights, key: str,
              m: AdapterModule) -> tuple[TensorRef | None, AdapterModule, str | None]:
    """The base weight in ΔW's (out, in) orientation as the formats declare it, the module completed from it
    (the family's ``fit_base``), or (None, m, the problem).

    Transposed when the adapter declares ``fan_in_fan_out`` (for a layer other than an embedding, as PEFT reads
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
            problem += (" — it fits only transposed, but nothing declares the (in, out) layout of GPT-2's Conv1D: "
                        "give the base as its model folder with config.json (model_type declares it), or an adapter "
                        "whose adapter_config.json sets fan_in_fan_out")
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
                warnings.append({"name": d.name, "reason": "the base holds no fused parameter of this name "
                                 "(checkpoints saved by transformers keep experts one by one); analyzed "
                                 "without the base"})
            matched += 1
            deltas.append(d)
            continue
        hit, m = lookup.pair(m)
        key = hit.name
        if hit.ambiguous:
            problems.append(f"{m.name}: the base weight is {hit.reason}; give a base whose names are "
                            "unambiguous")
            continue
        if key is None:
            warnings.append({"name": m.name, "reason": f"no base weight of this name ({hit.reason}); "
                             "analyzed without the base"})
            d = _without_base(m, warnings)
            if d is not None:
                deltas.append(d)
            continue
        info = base.store.info(key)
        if m.params.get("groups", 1) > 1 and m.family == "lora":
            warnings.append({"name": m.name, "reason": "LoRA on a grouped convolution: PEFT adds a full "
                             "(ungrouped) convolution beside the grouped base weight and cannot merge it; "
                             "analyzed without the base"})
            matched += 1
            deltas.append(module_delta(weight_name(key), m))
            continue
        ref, m, problem = _base_ref(base, key, m)
        if ref is None:
            problems.append(problem)  # type: ignore[arg-type]
            continue
        if not info.is_float:
            problems.append(f"{key}: the base weight is {info.dtype}, not floating point (a quantized "
                            "checkpoint?); give the unquantized base")
            continue
        matched += 1
        name = weight_name(key)  # the base's name, so rows join a full-diff analysis of the same model
        if m.family == "dora" and m.kind == "embedding":
            warnings.append({"name": m.name, "reason": "DoRA on an embedding: magnitude ignored, ΔW taken as s·B@A"})
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
            f"none of the {len(adapter.modules)} adapter modules of {adapter.path} (e.g. {adapter.modules[0].name}) "
            f"has a weight in the base {base.path} (which has e.g. {', '.join(base.store.keys()[:3])}). "
            "Is this the adapter's base model?"
        )
    for name, ref in adapter.dense.items():
        key = lookup.find(name)
        b_ref = TensorRef(base.store, key, "flatten") if key else None
        if b_ref is None or b_ref.shape != ref.shape:
            warnings.append({"name": name, "reason": "full tensor saved with the adapter (modules_to_save) with no "
                             "base weight of the same name and shape (a new head?); skipped"})
            continue
        deltas.append(dense_delta(name, ref, b_ref, source="modules_to_save"))
    vectors: list[VectorDelta] = []
    for name, ref in adapter.vectors.items():
        if name.endswith(UPDATE_VECTORS):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
            continue
        key = lookup.find(name)
        if key is None or base.store.info(key).shape != ref.shape:
            warnings.append({"name": name, "reason": "1-D tensor saved with the adapter with no base tensor of that shape; skipped"})
            continue
        vectors.append(VectorDelta(name, ref, TensorRef(base.store, key)))
    return Plan(deltas, vectors, warnings, "adapter+base")

