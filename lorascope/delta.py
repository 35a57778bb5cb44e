"""Pair modules by normalized name and describe each update ΔW as a lazy Delta item (METRICS.md 'The update ΔW').

- ``DenseDelta``: ΔW = W_tuned − W_base, both upcast before the subtraction.
- ``LowRankDelta``: ΔW = s · L @ R from a LoRA module's factors, never formed.
- ``DoraDelta``: ΔW = m ⊙ (W0 + sBA) / ‖W0 + sBA‖_row − W0; needs the base weight; dense.

``plan_deltas`` reads only names and shapes; tensors are read when an item is computed. Everything
that is skipped or unpaired is recorded as a warning with its reason.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import Adapter, LoraModule, TensorRef, Weights
from .errors import LorascopeError, raise_collected
from .names import NameIndex

# Tensors whose first dimension grows when tokens are added to a vocabulary.
VOCAB_NAMES = re.compile(r"(embed|wte|lm_head|word_embeddings|shared|output|score|head)", re.IGNORECASE)
# Model types whose linear layers are GPT-2 Conv1D, stored (in, out); transposed to (out, in).
CONV1D_MODEL_TYPES = {"gpt2"}
CONV1D_NAMES = re.compile(r"\.(c_attn|c_proj|c_fc|q_attn)$")
EXPERT_STACK = re.compile(r"experts?\b", re.IGNORECASE)


@dataclass(eq=False)
class DenseDelta:
    name: str
    tuned: TensorRef
    base: TensorRef
    source: str = "dense"
    added_rows: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.tuned.shape[:2]  # type: ignore[return-value]


@dataclass(eq=False)
class LowRankDelta:
    name: str
    module: LoraModule
    base: TensorRef | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.module.shape

    @property
    def source(self) -> str:
        return "lora" if self.module.source == "dora" else self.module.source


@dataclass(eq=False)
class DoraDelta:
    name: str
    module: LoraModule
    base: TensorRef
    source: str = "dora"

    @property
    def shape(self) -> tuple[int, int]:
        return self.module.shape


Delta = DenseDelta | LowRankDelta | DoraDelta


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
    base_by_key = {k: k for k in b_store.keys()}
    index = NameIndex(b_store.keys())
    conv1d = _conv1d(tuned) or _conv1d(base)
    paired: set[str] = set()
    for key in t_store.keys():
        t_info = t_store.info(key)
        b_key = base_by_key.get(key) or index.find(key)
        if b_key is None:
            warnings.append({"name": key, "reason": "only in the tuned checkpoint (no base tensor of that name)"})
            continue
        paired.add(b_key)
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
                deltas.append(DenseDelta(f"{name}.{e}", TensorRef(t_store, key, index=e), TensorRef(b_store, b_key, index=e)))
            continue
        layout = "transpose" if conv1d and len(t_info.shape) == 2 and CONV1D_NAMES.search(name) else "flatten"
        rows = b_info.shape[0] if added else None
        deltas.append(DenseDelta(name, TensorRef(t_store, key, layout, rows), TensorRef(b_store, b_key, layout, rows),
                                 added_rows=added))
        if added:
            warnings.append({"name": name, "reason": f"{added} rows added (new tokens); the {rows} common rows analyzed"})
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


def _plan_adapter_alone(adapter: Adapter, warnings: list[dict[str, str]]) -> Plan:
    deltas: list[Delta] = [LowRankDelta(m.name, m) for m in adapter.modules]
    if adapter.is_dora:
        warnings.append({
            "name": "*",
            "reason": "DoRA adapter analyzed without its base: ΔW taken as s·B@A, ignoring the magnitude vector. "
            "Give the base model (lorascope spectrum BASE ADAPTER) for the exact DoRA update.",
        })
    for name in adapter.dense:
        warnings.append({"name": name, "reason": "full tensor saved with the adapter (modules_to_save); its update needs the base model"})
    vectors = []
    for name, ref in adapter.vectors.items():
        if name.endswith(".lora_B.bias"):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
        else:
            warnings.append({"name": name, "reason": "1-D tensor saved with the adapter; its update needs the base model"})
    return Plan(deltas, vectors, warnings, "adapter")


class BaseLookup:
    """Finds the base weight key an adapter module refers to: by dotted name, or by kohya's '_'-flattened name."""

    def __init__(self, base: Weights):
        self.key_of = {weight_name(k): k for k in base.store.keys()}
        self.flat_key_of = {n.replace(".", "_"): k for n, k in self.key_of.items()}
        self.dotted = NameIndex(self.key_of)
        self.flat = NameIndex(self.flat_key_of, sep="_")

    def find(self, name: str, source: str = "lora") -> str | None:
        if source == "kohya":
            hit = self.flat.find(name.replace(".", "_"))
            return None if hit is None else self.flat_key_of[hit]
        hit = self.dotted.find(name)
        return None if hit is None else self.key_of[hit]


def _base_ref(base: Weights, key: str, want: tuple[int, ...]) -> TensorRef | None:
    """The base weight in ΔW's (out, in) orientation: as stored, conv-flattened, or transposed (Conv1D)."""
    ref = TensorRef(base.store, key, "flatten")
    if ref.shape == tuple(want):
        return ref
    if len(ref.stored_shape) == 2 and tuple(reversed(ref.stored_shape)) == tuple(want):
        return TensorRef(base.store, key, "transpose")
    return None


def _plan_adapter_on_base(adapter: Adapter, base: Weights, warnings: list[dict[str, str]]) -> Plan:
    lookup = BaseLookup(base)
    deltas: list[Delta] = []
    problems: list[str] = []
    matched = 0
    for m in adapter.modules:
        key = lookup.find(m.name, m.source)
        if key is None:
            warnings.append({"name": m.name, "reason": "no base weight of this name; analyzed without the base"})
            deltas.append(LowRankDelta(m.name, m))
            continue
        info = base.store.info(key)
        ref = _base_ref(base, key, m.shape)
        if ref is None:
            problems.append(f"{m.name}: ΔW is {list(m.shape)} but the base weight {key} is {list(info.shape)}")
            continue
        if not info.is_float:
            problems.append(f"{key}: the base weight is {info.dtype}, not floating point (a quantized "
                            "checkpoint?); give the unquantized base")
            continue
        matched += 1
        name = weight_name(key)  # the base's name, so rows join a full-diff analysis of the same model
        if m.magnitude is not None and m.kind != "embedding":
            deltas.append(DoraDelta(name, m, ref))
            continue
        if m.magnitude is not None:
            warnings.append({"name": m.name, "reason": "DoRA on an embedding: magnitude ignored, ΔW taken as s·B@A"})
        deltas.append(LowRankDelta(name, m, ref))
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
        b_ref = _base_ref(base, key, ref.shape) if key else None
        if b_ref is None:
            warnings.append({"name": name, "reason": "full tensor saved with the adapter (modules_to_save) with no "
                             "base weight of the same name and shape (a new head?); skipped"})
            continue
        deltas.append(DenseDelta(name, ref, b_ref, source="modules_to_save"))
    vectors: list[VectorDelta] = []
    for name, ref in adapter.vectors.items():
        if name.endswith(".lora_B.bias"):
            vectors.append(VectorDelta(name, ref, None, is_update=True))
            continue
        key = lookup.find(name)
        if key is None or base.store.info(key).shape != ref.shape:
            warnings.append({"name": name, "reason": "1-D tensor saved with the adapter with no base tensor of that shape; skipped"})
            continue
        vectors.append(VectorDelta(name, ref, TensorRef(base.store, key)))
    return Plan(deltas, vectors, warnings, "adapter+base")


def vector_update(v: VectorDelta) -> tuple[np.ndarray, np.ndarray | None]:
    """(Δv, v_base) of a 1-D update, float64."""
    tuned = v.tuned.load_numpy().reshape(-1)
    if v.is_update or v.base is None:
        return tuned, None
    base = v.base.load_numpy().reshape(-1)
    return tuned[: base.size] - base, base
