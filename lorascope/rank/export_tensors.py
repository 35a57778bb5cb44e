"""Where an exported module's factors go in a PEFT adapter: the PEFT layer they are shaped for, their tensors
under PEFT's saved key names, and the experts of a fused parameter packed as ``target_parameters`` wants them.

Each module and the tensors it is exported as:

- Linear, GPT-2 Conv1D (``fan_in_fan_out``): ``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r)
- Embedding, ΔW (num, dim): ``lora_embedding_A`` (r, num) = (U√S)ᵀ, ``lora_embedding_B`` (dim, r) = V√S
- ConvNd, ΔW flattened (out, in·k…): ``lora_A.weight`` (r, in, k…), ``lora_B.weight`` (out, r, 1…)
- expert e of a fused (E, ·, ·) parameter: ``target_parameters``: ``lora_A`` (E·r, in), ``lora_B`` (out, r·E)

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..delta import Delta
from ..names import PEFT_PREFIX

# Embedding weights among dense updates (a full fine-tune has no module types, only names).
EMBEDDING_NAMES = re.compile(
    r"(^|\.)(embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|embed_in|"
    r"embed_positions|tok_embeddings|shared)$"
)


@dataclass(frozen=True)
class PeftLayer:
    """The PEFT layer an exported module's factors are shaped for: 'linear', 'embedding', 'conv' (kernel = the
    stored dims after 'in') or 'expert' (a slice of a fused parameter, packed by ``expert_tensors``)."""

    kind: str
    fan_in_fan_out: bool = False
    kernel: tuple[int, ...] = ()


def peft_layer_of(d: Delta) -> PeftLayer | str:
    """The PEFT layer one update is exported as, or the reason it cannot be exported."""
    if d.module is not None:
        m = d.module
        if m.source in ("kohya", "cloneofsimo", "gguf") and d.base is None:
            return (
                f"{m.source} names are not the module names of a model (kohya flattens paths, GGUF renames "
                "them); give the base model so names are resolved"
            )
        if m.family == "lora_expert":
            return PeftLayer("expert")
        if int(m.params.get("groups", 1)) > 1:
            return (
                "a grouped convolution: a PEFT LoRA there has a grouped lora_B (one block per group), "
                "which the truncated SVD of the update does not have"
            )
        transpose = m.fan_in_fan_out or (d.base is not None and d.base.view == "transpose")
        stored = d.base.stored_shape if d.base is not None else ()
        base_kernel = tuple(stored[2:]) if m.kind != "embedding" and len(stored) > 2 else ()
        if base_kernel:
            return PeftLayer("conv", kernel=base_kernel)  # the base's (a Conv1d Tucker core is (k, 1))
        if m.kind == "conv":
            if not m.kernel:  # older LyCORIS LoHa/LoKr keep the kernel inside 2-D factors
                return "a conv layer whose kernel size the file does not record; give the base model"
            return PeftLayer("conv", kernel=m.kernel)
        if m.kind == "matrix" and d.base is None:
            return (
                f"{m.family} stores this layer's factors flattened, so the adapter does not record "
                "whether it is a linear layer or a convolution; give the base model"
            )
        return PeftLayer(m.kind if m.kind == "embedding" else "linear", fan_in_fan_out=transpose)
    ref = d.tuned
    if ref.index is not None:
        return "a slice of a stacked expert tensor; PEFT LoRA targets whole modules"
    stored = ref.stored_shape
    if len(stored) > 2:
        return PeftLayer("conv", kernel=tuple(stored[2:]))
    if ref.view == "transpose":
        return PeftLayer("linear", fan_in_fan_out=True)
    if EMBEDDING_NAMES.search(d.name):
        return PeftLayer("embedding")
    return PeftLayer("linear")


def peft_tensors(name: str, layer: PeftLayer, b: np.ndarray, a: np.ndarray) -> dict[str, np.ndarray]:
    """PEFT's saved tensors for ΔW = B @ A, B (m, r), A (r, n), under ``base_model.model.<name>``."""
    key = PEFT_PREFIX + name
    r = a.shape[0]
    if layer.kind == "embedding":  # ΔW (num, dim) = (lora_B @ lora_A)ᵀ
        return {
            f"{key}.lora_embedding_A": np.ascontiguousarray(b.T),  # (r, num)
            f"{key}.lora_embedding_B": np.ascontiguousarray(a.T),
        }  # (dim, r)
    if layer.kind == "conv":
        ones = (1,) * len(layer.kernel)
        in_ch = a.shape[1] // int(np.prod(layer.kernel, dtype=np.int64))
        return {
            f"{key}.lora_A.weight": np.ascontiguousarray(a.reshape(r, in_ch, *layer.kernel)),
            f"{key}.lora_B.weight": np.ascontiguousarray(b.reshape(b.shape[0], r, *ones)),
        }
    return {f"{key}.lora_A.weight": np.ascontiguousarray(a), f"{key}.lora_B.weight": np.ascontiguousarray(b)}


@dataclass
class ExpertSlot:
    """The exported experts of one fused parameter: expert index -> (B_e (out, k_e), A_e (k_e, in))."""

    module: str
    parameter: str
    experts: int
    depth: int  # the source's nesting depth (PEFT nests parameters of one module in registration order)
    factors: dict[int, tuple[np.ndarray, np.ndarray]]
    names: list[str] = field(default_factory=list)  # the exported experts' module names


def expert_tensors(slots: list[ExpertSlot]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """PEFT ParamWrapper tensors per parameter, and parameter path -> its rank r (the largest expert rank).

    lora_A (E·r, in) holds A_e in rows e·r … e·r + k_e; lora_B (out, r·E) holds B_e's column j in column
    j·E + e (PEFT ``get_delta_factors``: A.reshape(E, r, in), B.reshape(out, r, E)); the rest is zero, so
    each expert's update is its own rank-k_e truncation. Parameters of one module are nested as in the
    source: the deepest there is the deepest here (``.base_layer`` once per level).
    """
    tensors: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    by_module: dict[str, list[ExpertSlot]] = {}
    for slot in slots:
        by_module.setdefault(slot.module, []).append(slot)
    for module, group in by_module.items():
        group.sort(key=lambda sl: -sl.depth)
        for level, slot in enumerate(group):
            r = max(a.shape[0] for _, a in slot.factors.values())
            b0, a0 = next(iter(slot.factors.values()))
            e_count = slot.experts
            lora_a = np.zeros((e_count * r, a0.shape[1]))
            lora_b = np.zeros((b0.shape[0], r * e_count))
            for e, (b, a) in slot.factors.items():
                k = a.shape[0]
                lora_a[e * r : e * r + k] = a  # (k, in) into expert e's rows
                lora_b[:, e + e_count * np.arange(k)] = b  # column j of B_e -> j·E + e
            key = PEFT_PREFIX + module + ".base_layer" * (len(group) - 1 - level)
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = lora_a, lora_b
            ranks[f"{module}.{slot.parameter}"] = r
    return tensors, ranks
