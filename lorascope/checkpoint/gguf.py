"""GGUF files (llama.cpp) opened as a LoRA adapter or a model's weights.

Read with the ``gguf`` package (``pip install 'lorascope[gguf]'``), the library that defines the format.
What a GGUF LoRA adapter is comes from llama.cpp's ``convert_lora_to_gguf.py`` (which writes them) and
``src/llama-adapter.cpp`` (which loads them):

- an adapter: ``general.type = adapter`` and ``adapter.type = lora``;
- α: ``adapter.lora.alpha`` (float32). ΔW = s · B @ A with s = α / r, and s = 1 where α = 0 (llama.cpp's
  ``get_scale``; the runtime ``--lora-scaled`` factor, chosen at inference, is not part of the file);
- the factors: ``<base tensor>.lora_a`` = A (r, in) and ``<base tensor>.lora_b`` = B (out, r), e.g.
  ``blk.3.attn_q.weight.lora_a``; r is B's column count (llama.cpp: ``b->ne[0]``);
- the token embedding: ``token_embd.weight.lora_a`` is stored transposed, a (vocab, r), b (dim, r):
  ΔE (vocab, dim) = s · a @ bᵀ (llama.cpp ``llm_build_inp_embd``);
- the model: ``general.architecture`` (``llama``, ``qwen2``, …) selects the gguf ``TensorNameMap``
  that names its tensors.

The file itself is a lazy store (``gguf_file``); pairing an adapter's modules with a Hugging Face base, in
the base's names and row order, is ``gguf_names``'. Both are importable from here, as they always were.

This module does not own the update's formula (``lorascope.delta``) or the other formats' readers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef, Weights
from .gguf_file import (
    ADAPTER_TYPE,
    ARCHITECTURE,
    FACTOR_SUFFIXES,
    GENERAL_TYPE,
    LORA_ALPHA,
    TOKEN_EMBEDDING,
    GGUFFile,
    gguf_package,
    is_gguf,
)
from .gguf_names import GGUFBaseNames, RowOrder, rope_row_order

__all__ = [
    "GGUFBaseNames",
    "GGUFFile",
    "RowOrder",
    "gguf_package",
    "is_gguf",
    "open_gguf",
    "open_gguf_adapter",
    "rope_row_order",
]


# ---- opening: an adapter, or a model's weights ------------------------------------------------------


def open_gguf(path: Path, store: GGUFFile | None = None) -> Weights | Adapter:
    """A GGUF file as a LoRA ``Adapter`` (``general.type = adapter``) or as a model's ``Weights``.

    Raises:
        LorascopeError: LoRA factors in a file that does not declare itself an adapter, or an adapter that
            is not a valid llama.cpp LoRA (see ``open_gguf_adapter``).
    """
    store = store or GGUFFile(path)
    kind = store.fields.get(GENERAL_TYPE)
    if kind == "adapter":
        return open_gguf_adapter(path, store)
    factors = [k for k in store.keys() if k.endswith(tuple(FACTOR_SUFFIXES))]
    if factors:
        raise LorascopeError(
            f"{path} holds LoRA factors (e.g. {factors[0]}) but its {GENERAL_TYPE} is {kind!r}, not "
            "'adapter'; llama.cpp refuses it as an adapter too. Convert the PEFT adapter again with "
            "convert_lora_to_gguf.py."
        )
    return Weights(path, "gguf", store, None)


def open_gguf_adapter(path: Path, store: GGUFFile) -> Adapter:
    """The LoRA modules of a llama.cpp adapter: family ``lora``, names as GGUF names (``blk.3.attn_q``).

    Raises:
        LorascopeError: ``adapter.type`` is not 'lora', ``adapter.lora.alpha`` is missing, or factors are
            unpaired, of unexpected names, not floating point or of shapes that do not chain (all listed).
    """
    alpha = _declared_alpha(path, store)
    pairs: dict[str, dict[str, str]] = {}
    vectors: dict[str, TensorRef] = {}
    problems: list[str] = []
    for key in store.keys():
        suffix = next((s for s in FACTOR_SUFFIXES if key.endswith(s)), None)
        if suffix is not None:
            pairs.setdefault(key[: -len(suffix)], {})[FACTOR_SUFFIXES[suffix]] = key
        elif key.endswith("_norm.weight") and len(store.info(key).shape) == 1:
            vectors[key.removesuffix(".weight")] = TensorRef(store, key)  # mergekit-extract-lora's norms
        else:
            problems.append(f"{key}: not a LoRA factor (.lora_a / .lora_b) nor a norm vector")
    modules: list[AdapterModule] = []
    for target, pair in sorted(pairs.items(), key=lambda kv: _natural(kv[0])):
        if set(pair) != {"a", "b"}:
            problems.append(f"{target}: only lora_{next(iter(pair))} is present")
            continue
        built = _modules(store, target, pair["a"], pair["b"], alpha, problems)
        modules.extend(built)
    if problems:
        raise LorascopeError(
            f"{path} is not a valid GGUF LoRA adapter:\n" + "\n".join(f"  - {p}" for p in problems[:20])
        )
    warnings = []
    if alpha == 0:
        warnings.append(
            {"name": "*", "reason": f"{LORA_ALPHA} = 0: scale 1 (llama.cpp applies α/r only when α ≠ 0)"}
        )
    config = {
        k: store.fields[k]
        for k in (GENERAL_TYPE, ADAPTER_TYPE, LORA_ALPHA, ARCHITECTURE, "general.name")
        if k in store.fields
    }
    return Adapter(path, "gguf", store, modules, {}, vectors, config, warnings)


def _declared_alpha(path: Path, store: GGUFFile) -> float:
    adapter_type = store.fields.get(ADAPTER_TYPE)
    if adapter_type != "lora":
        raise LorascopeError(
            f"{path} is a GGUF adapter whose {ADAPTER_TYPE} is {adapter_type!r}; lorascope reads LoRA "
            f"adapters ({ADAPTER_TYPE} = 'lora', as convert_lora_to_gguf.py writes them)."
        )
    alpha = store.fields.get(LORA_ALPHA)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not np.isfinite(alpha):
        found = "missing" if alpha is None else f"{alpha!r}"
        raise LorascopeError(
            f"{path}: the GGUF LoRA adapter's {LORA_ALPHA} is {found}; the update's scale s = α/r needs it. "
            "convert_lora_to_gguf.py writes it from adapter_config.json's lora_alpha: convert the adapter "
            "again."
        )
    if alpha < 0:  # 0 means scale 1 in llama.cpp; a negative α is no scale any tool writes
        raise LorascopeError(
            f"{path}: the GGUF LoRA adapter's {LORA_ALPHA} is {alpha!r}; an alpha must be finite and "
            "non-negative (0 means scale 1, as llama.cpp reads it). The file is damaged: convert the adapter "
            "again."
        )
    return float(alpha)


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _modules(
    store: GGUFFile, target: str, a_key: str, b_key: str, alpha: float, problems: list[str]
) -> list[AdapterModule]:
    """The AdapterModule(s) of one factor pair: one, or one per expert of a stacked (E, …) pair."""
    a, b = store.info(a_key), store.info(b_key)
    if not (a.is_float and b.is_float):
        problems.append(f"{target}: factors of dtype {a.dtype} / {b.dtype}, not floating point")
        return []
    name = target.removesuffix(".weight")
    if target == TOKEN_EMBEDDING and len(a.shape) == 2 == len(b.shape):
        # a (vocab, r), b (dim, r): ΔE (vocab, dim) = s · a @ bᵀ (llama.cpp llm_build_inp_embd)
        if a.shape[1] != b.shape[1]:
            problems.append(
                f"{target}: lora_a {list(a.shape)} and lora_b {list(b.shape)} have different ranks"
            )
            return []
        rank = b.shape[1]
        parts = {"up": TensorRef(store, a_key), "down": TensorRef(store, b_key, "transpose")}
        return [_module(name, parts, (a.shape[0], b.shape[0]), rank, alpha, "embedding")]
    if len(a.shape) == 2 == len(b.shape):
        # A (r, in), B (out, r): ΔW (out, in) = s · B @ A
        if a.shape[0] != b.shape[1]:
            problems.append(f"{target}: lora_b {list(b.shape)} @ lora_a {list(a.shape)} do not chain")
            return []
        parts = {"up": TensorRef(store, b_key), "down": TensorRef(store, a_key)}
        return [_module(name, parts, (b.shape[0], a.shape[1]), a.shape[0], alpha, "linear")]
    if len(a.shape) == 3 == len(b.shape) and a.shape[0] in (1, b.shape[0]) and a.shape[1] == b.shape[2]:
        # stacked experts (convert_lora_to_gguf stacks A and B; A's leading dim may be 1, shared)
        out = []
        for e in range(b.shape[0]):
            parts = {
                "up": TensorRef(store, b_key, index=e),
                "down": TensorRef(store, a_key, index=min(e, a.shape[0] - 1)),
            }
            out.append(_module(f"{name}.{e}", parts, (b.shape[1], a.shape[2]), a.shape[1], alpha, "linear"))
        return out
    problems.append(f"{target}: lora_a {list(a.shape)} and lora_b {list(b.shape)} are not LoRA factor shapes")
    return []


def _module(
    name: str, parts: dict[str, TensorRef], shape: tuple[int, int], rank: int, alpha: float, kind: str
) -> AdapterModule:
    scale = alpha / rank if alpha else 1.0  # llama_adapter_lora_weight::get_scale
    return AdapterModule(name, "lora", parts, shape, rank, alpha, scale, kind, "gguf")
