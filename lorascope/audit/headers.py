"""Owns module shapes from a checkpoint's tensor headers alone: no config, and no tensor data but one.

The source for a checkpoint without a config.json (transformers needs a config). The total is exact — a
checkpoint stores a tied matrix once. Kinds are inferred from names: embeddings by ``EMBEDDING_NAMES``,
GPT-2's Conv1D layers (stored (in, out)) by ``CONV1D_NAMES`` in a checkpoint that has ``wte``; every other
2-D ``weight`` is a Linear (out, in). Buffers old exporters saved (``BUFFER_SUFFIXES``) are not parameters.

A checkpoint saved from a bitsandbytes-quantized model (transformers' ``save_pretrained`` after
``load_in_4bit`` / ``load_in_8bit``) counts by its logical shapes, as PEFT's get_nb_trainable_parameters
counts the loaded model. 4-bit (``Params4bit``, ``QuantState.as_dict(packed=True)``): ``<w>`` holds the
packed codes (two per byte of the storage dtype) beside ``<w>.absmax``, ``<w>.quant_map``, ``<w>.nested_*``
and ``<w>.quant_state.bitsandbytes__nf4`` (or ``__fp4``), uint8 JSON bytes whose ``shape`` is the logical
(out, in) — the one tensor whose data is read. 8-bit (``Linear8bitLt``): ``<m>.weight`` is int8 in its
logical shape, with ``<m>.SCB`` and ``<m>.weight_format``. A quantized weight whose shape cannot be known
is refused, not guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..checkpoint.store import DTYPE_BITS, TensorStore
from ..errors import LorascopeError
from ..limits import loads_json
from .shapes import ModelShapes, ModuleShape

EMBEDDING_NAMES = ("embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings",
                   "token_type_embeddings", "embed_positions", "shared")  # fmt: skip
CONV1D_NAMES = ("c_attn", "c_proj", "c_fc", "q_attn")
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "position_ids",
                   ".num_batches_tracked")  # fmt: skip
HEAD_NAMES = ("lm_head", "embed_out", "output")
BNB_STATE = re.compile(r"^(?P<weight>.+)\.quant_state\.bitsandbytes__(?:nf4|fp4)$")
BNB_4BIT_PARTS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")  # "<weight>.<part>"
BNB_8BIT_PARTS = ("SCB", "weight_format")  # "<module>.<part>" beside an int8 "<module>.weight"
QUANT_STATE_BYTES = 4096  # far above any real state (about 200 bytes); anything longer is not one
Tensors = Mapping[str, tuple[tuple[int, ...], bool]]  # key -> (stored shape, is floating point)


@dataclass(frozen=True)
class BnbLayout:
    """The bitsandbytes-quantized weights of a checkpoint, found from key names alone."""

    four_bit: dict[str, str | None]  # packed weight key -> its quant_state key (None: it was lost)
    eight_bit: tuple[str, ...]  # int8 weight keys
    state: frozenset[str]  # keys that hold quantization state, not parameters


def bnb_layout(keys: Iterable[str]) -> BnbLayout:
    """The bitsandbytes 4-bit and 8-bit weights among ``keys`` and the state tensors that go with them."""
    keys = set(keys)
    four = {m["weight"]: k for k in keys if (m := BNB_STATE.match(k)) and m["weight"] in keys}
    for weight, _, part in (k.rpartition(".") for k in keys):  # absmax / quant_map kept, quant_state lost
        if part in BNB_4BIT_PARTS and weight in keys:
            four.setdefault(weight, None)
    eight = sorted(f"{m}.weight" for m, _, part in (k.rpartition(".") for k in keys)
                   if part == "SCB" and f"{m}.weight" in keys)  # fmt: skip
    state = {k for k in keys for w in four if k.startswith(w + ".quant_state.")}
    state |= {f"{w}.{p}" for w in four for p in BNB_4BIT_PARTS}
    state |= {w.removesuffix("weight") + p for w in eight for p in BNB_8BIT_PARTS}
    return BnbLayout(four, tuple(eight), frozenset(state & keys))


def checkpoint_shapes(
    tensors: Tensors,
    logical: Mapping[str, tuple[int, int]] | None = None,
    bnb: BnbLayout | None = None,
    where: str = "the checkpoint",
) -> ModelShapes:
    """ModelShapes from the headers of every tensor in a checkpoint.

    Args:
        tensors: each stored tensor's shape and whether it is floating point (integer tensors are buffers).
        logical: the logical (out, in) shape of each bitsandbytes weight of ``bnb`` (``store_shapes`` reads
            it from the quant_state, or takes an 8-bit weight's stored shape).
        bnb: the checkpoint's bitsandbytes layout (``bnb_layout``); its state tensors are not parameters.
        where: the file named in errors.

    Raises:
        LorascopeError: a quantized weight with no logical shape, or an integer ``weight`` that no known
            quantization layout explains — counting it as a buffer would undercount the model.
    """
    bnb, logical = bnb or BnbLayout({}, (), frozenset()), dict(logical or {})
    _check_quantized(tensors, bnb, logical, where)
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, (shape, is_float) in tensors.items():
        if key in logical or (is_float and key not in bnb.state and not key.endswith(BUFFER_SUFFIXES)):
            module, _, param = key.rpartition(".")
            modules.setdefault(module or key, {})[param if module else "weight"] = logical.get(key, shape)
    gpt2 = any(name.rsplit(".", 1)[-1] == "wte" for name in modules)
    out = []
    for name, params in modules.items():
        weight, last = params.get("weight", ()), name.rsplit(".", 1)[-1]
        kind = "other" if len(weight) != 2 else "embedding" if last in EMBEDDING_NAMES else "linear"
        if kind == "linear" and gpt2 and last in CONV1D_NAMES:
            kind, weight = "conv1d", weight[::-1]
        bias = math.prod(params["bias"]) if "bias" in params else 0
        out.append(ModuleShape(name, kind, tuple(weight), sum(map(math.prod, params.values())), bias))
    head = next((m.name for m in out if m.name.rsplit(".", 1)[-1] in HEAD_NAMES and m.kind == "linear"), None)
    embedding = next((m for m in out if m.kind == "embedding"), None)
    notes = ["shapes from tensor headers: kinds are inferred from names, and an output head tied to the "
             "embeddings is not stored, so it cannot be targeted here"]  # fmt: skip
    if logical:
        n4, n8 = len(bnb.four_bit), len(bnb.eight_bit)
        told = [f"{n4} bitsandbytes 4-bit weight(s) by the shape their quant_state records"] if n4 else []
        told += [f"{n8} bitsandbytes 8-bit weight(s) by their int8 (out, in) shape"] if n8 else []
        notes.append(
            f"counted {' and '.join(told)}; their quantization state (absmax, quant_map, SCB …) is not "
            "counted as parameters, as PEFT's get_nb_trainable_parameters counts the loaded model"
        )
    hidden = embedding.shape[1] if embedding else None
    return ModelShapes("checkpoint", "unknown", tuple(out), hidden, head, "headers", tuple(notes))


def _check_quantized(tensors: Tensors, bnb: BnbLayout, logical: Mapping[str, tuple], where: str) -> None:
    problems = []
    for weight, state in sorted(bnb.four_bit.items()):
        if weight not in logical:
            lost = (
                f"it has {weight}.absmax / quant_map but no {weight}.quant_state.bitsandbytes__nf4 (or __fp4)"
            )
            why = f"its quant_state tensor {state} holds no valid shape" if state else lost
            problems.append(
                f"{weight} is a bitsandbytes 4-bit packed tensor {list(tensors[weight][0])}, and {why}"
            )
    explained = {*bnb.four_bit, *bnb.eight_bit, *bnb.state}
    for key, (shape, is_float) in sorted(tensors.items()):
        if not is_float and key.endswith(".weight") and len(shape) == 2 and key not in explained:
            problems.append(f"{key} is an integer weight {list(shape)} that no known quantization layout "
                            "explains (bitsandbytes 8-bit weights have a .SCB beside them)")  # fmt: skip
    if problems:
        raise LorascopeError(
            f"{where} holds quantized weights whose logical shapes cannot be known from it, so its "
            f"parameters cannot be counted: {'; '.join(problems[:4])}{' …' if len(problems) > 4 else ''}. "
            "Give the model's config.json (or its folder) instead: shapes then come from the configuration."
        )


def store_shapes(store: TensorStore, where: str) -> ModelShapes:
    """``checkpoint_shapes`` of an opened checkpoint: its headers, and the quant_state JSON of any
    bitsandbytes 4-bit weight (the one tensor whose data is read).

    Raises:
        LorascopeError: what ``checkpoint_shapes`` refuses; a quant_state whose shape does not fit its packed
            tensor (two 4-bit codes per byte of the storage dtype).
    """
    infos = {k: store.info(k) for k in store.keys()}
    bnb = bnb_layout(infos)
    logical = {w: tuple(infos[w].shape) for w in bnb.eight_bit}
    for weight, state in bnb.four_bit.items():
        info = infos[state] if state else None
        if info is None or info.dtype != "uint8" or len(info.shape) != 1 or info.numel > QUANT_STATE_BYTES:
            continue
        try:
            data = loads_json(bytes(store.get_numpy(state).tolist()), f"{store.path}: {state}")
        except LorascopeError:
            continue  # not a quant state: checkpoint_shapes refuses the weight with its own message
        shape = data.get("shape") if isinstance(data, dict) else None
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(d, int) and d > 0 for d in shape)
        ):
            continue
        packed = infos[weight]
        per_element = DTYPE_BITS.get(packed.dtype, 8) // 4  # 4-bit codes per stored element (quant_storage)
        if -(-shape[0] * shape[1] // per_element) != packed.numel:
            raise LorascopeError(
                f"{store.path}: {state} records the shape {shape}, which does not fit the packed tensor "
                f"{weight} ({packed.dtype} {list(packed.shape)}, {per_element} 4-bit codes each); the file "
                "is damaged or not a bitsandbytes checkpoint."
            )
        logical[weight] = (shape[0], shape[1])
    return checkpoint_shapes({k: (tuple(i.shape), i.is_float) for k, i in infos.items()}, logical, bnb, where)
