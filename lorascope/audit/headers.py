"""Owns module shapes from a checkpoint's tensor headers alone: no config, no tensor data.

The source for a checkpoint without a config.json, whatever is installed (transformers needs a config).

The total is exact — a checkpoint stores a tied matrix once. Kinds are inferred from names: embeddings by
``EMBEDDING_NAMES``, GPT-2's Conv1D layers (stored (in, out)) by ``CONV1D_NAMES`` in a checkpoint that has
``wte``; every other 2-D ``weight`` is taken as a Linear (out, in). Buffers saved by old exporters
(``BUFFER_SUFFIXES``) are not parameters and are left out.

Checkpoints saved from bitsandbytes-quantized models (transformers' ``save_pretrained`` of a model loaded
with ``load_in_4bit`` / ``load_in_8bit``) are counted by their logical shapes, as PEFT's
get_nb_trainable_parameters counts the loaded model:

- 4-bit (``bitsandbytes.nn.Params4bit``, ``QuantState.as_dict(packed=True)``): ``<w>`` holds the packed codes
  (two per byte of the storage dtype, shape (ceil(n / 2 / itemsize), 1)); beside it ``<w>.absmax``,
  ``<w>.quant_map``, with double quantization ``<w>.nested_absmax`` and ``<w>.nested_quant_map``, and
  ``<w>.quant_state.bitsandbytes__nf4`` (or ``__fp4``): a uint8 tensor of JSON bytes whose ``shape`` is the
  weight's logical (out, in). That JSON is the one tensor whose data is read (``bnb_layout`` names it).
- 8-bit (``bitsandbytes.nn.Linear8bitLt``): ``<m>.weight`` is int8 in its logical (out, in) shape, with the
  row scales ``<m>.SCB`` and the layout tag ``<m>.weight_format`` beside it.

A quantized weight whose logical shape cannot be known (its quant_state is missing) is refused, not guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..checkpoint.store import DTYPE_BITS, TensorStore
from ..errors import LorascopeError
from ..limits import loads_json
from .shapes import ModelShapes, ModuleShape

EMBEDDING_NAMES = (
    "embed_tokens",
    "wte",
    "wpe",
    "word_embeddings",
    "position_embeddings",
    "token_type_embeddings",
    "embed_positions",
    "shared",
)
CONV1D_NAMES = ("c_attn", "c_proj", "c_fc", "q_attn")
BUFFER_SUFFIXES = (
    ".attn.bias",
    ".attn.masked_bias",
    "rotary_emb.inv_freq",
    "position_ids",
    ".num_batches_tracked",
)
HEAD_NAMES = ("lm_head", "embed_out", "output")

BNB_STATE = re.compile(r"^(?P<weight>.+)\.quant_state\.bitsandbytes__(?P<quant_type>nf4|fp4)$")
BNB_4BIT_PARTS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")  # "<weight>.<part>"
BNB_8BIT_PARTS = ("SCB", "weight_format")  # "<module>.<part>" beside an int8 "<module>.weight"
QUANT_STATE_BYTES = 4096  # far above any real state (about 200 bytes); anything longer is not one


@dataclass(frozen=True)
class BnbLayout:
    """The bitsandbytes-quantized weights of a checkpoint, found from key names alone."""

    four_bit: dict[str, str | None] = field(default_factory=dict)  # packed weight key -> its quant_state key
    eight_bit: tuple[str, ...] = ()  # int8 weight keys
    state: frozenset[str] = frozenset()  # keys that hold quantization state, not parameters

    def __bool__(self) -> bool:
        return bool(self.four_bit or self.eight_bit)


def bnb_layout(keys: list[str] | Mapping[str, object]) -> BnbLayout:
    """The bitsandbytes 4-bit and 8-bit weights among ``keys`` and the state tensors that go with them."""
    keys = set(keys)
    four: dict[str, str | None] = {}
    state: set[str] = set()
    for key in keys:
        m = BNB_STATE.match(key)
        if m and m["weight"] in keys:
            four[m["weight"]] = key
    for key in keys:  # a packed weight whose absmax / quant_map survived but not its quant_state
        weight, _, part = key.rpartition(".")
        if part in BNB_4BIT_PARTS and weight in keys and weight not in four:
            four[weight] = None
    for weight in four:
        state |= {f"{weight}.{p}" for p in BNB_4BIT_PARTS} & keys
        state |= {k for k in keys if k.startswith(weight + ".quant_state.")}
    eight = []
    for key in keys:
        module, _, part = key.rpartition(".")
        if part == "SCB" and f"{module}.weight" in keys:
            eight.append(f"{module}.weight")
            state |= {f"{module}.{p}" for p in BNB_8BIT_PARTS} & keys
    return BnbLayout(four, tuple(sorted(eight)), frozenset(state))


def checkpoint_shapes(
    tensors: Mapping[str, tuple[tuple[int, ...], bool]],
    quantized: Mapping[str, tuple[int, int]] | None = None,
    bnb: BnbLayout | None = None,
    where: str = "the checkpoint",
) -> ModelShapes:
    """ModelShapes from ``{key: (shape, is_float)}`` of every tensor in a checkpoint.

    Args:
        tensors: each stored tensor's shape and whether it is floating point (integer tensors are buffers).
        quantized: the logical (out, in) shape of each bitsandbytes weight of ``bnb`` (read by the loading
            layer from its quant_state, or the stored shape of an 8-bit weight).
        bnb: the checkpoint's bitsandbytes layout (``bnb_layout``); its state tensors are not parameters.
        where: the file named in errors.

    Raises:
        LorascopeError: a quantized weight with no logical shape, or an integer ``weight`` that no known
            quantization layout explains — counting it as a buffer would undercount the model.
    """
    bnb = bnb or BnbLayout()
    quantized = dict(quantized or {})
    _check_quantized(tensors, bnb, quantized, where)
    tensors = {
        k: ((tuple(quantized[k]), True) if k in quantized else v)
        for k, v in tensors.items()
        if k not in bnb.state
    }
    keys = [k for k, (_, is_float) in tensors.items() if is_float and not k.endswith(BUFFER_SUFFIXES)]
    gpt2 = any(k.split(".")[-2:-1] == ["wte"] for k in keys)
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key in keys:
        module, _, param = key.rpartition(".")
        modules.setdefault(module or key, {})[param if module else "weight"] = tensors[key][0]
    out = []
    for name, params in modules.items():
        total = sum(math.prod(s) for s in params.values())
        bias = math.prod(params["bias"]) if "bias" in params else 0
        weight = params.get("weight", ())
        last = name.rsplit(".", 1)[-1]
        if len(weight) == 2 and last in EMBEDDING_NAMES:
            kind, shape = "embedding", weight
        elif len(weight) == 2 and gpt2 and last in CONV1D_NAMES:
            kind, shape = "conv1d", (weight[1], weight[0])
        elif len(weight) == 2:
            kind, shape = "linear", weight
        else:
            kind, shape = "other", weight
        out.append(ModuleShape(name, kind, tuple(shape), total, bias))
    head = next((m.name for m in out if m.name.rsplit(".", 1)[-1] in HEAD_NAMES and m.kind == "linear"), None)
    embed = next((m for m in out if m.kind == "embedding"), None)
    notes = (
        "shapes from tensor headers: kinds are inferred from names, and an output head tied to the "
        "embeddings is not stored, so it cannot be targeted here",
    )
    if quantized:
        n4, n8 = len(bnb.four_bit), len(bnb.eight_bit)
        told = [f"{n4} bitsandbytes 4-bit weight(s) by the shape their quant_state records"] if n4 else []
        told += [f"{n8} bitsandbytes 8-bit weight(s) by their int8 (out, in) shape"] if n8 else []
        notes += (
            f"counted {' and '.join(told)}; their quantization state (absmax, quant_map, SCB …) is not "
            "counted as parameters, as PEFT's get_nb_trainable_parameters counts the loaded model",
        )
    return ModelShapes(
        arch="checkpoint",
        head="unknown",
        modules=tuple(out),
        output_head=head,
        notes=notes,
        hidden=embed.shape[1] if embed else None,
        shapes_from="headers",
    )


def _check_quantized(
    tensors: Mapping[str, tuple[tuple[int, ...], bool]],
    bnb: BnbLayout,
    quantized: Mapping[str, tuple[int, int]],
    where: str,
) -> None:
    problems = []
    for weight, state in sorted(bnb.four_bit.items()):
        if weight not in quantized:
            shape = list(tensors[weight][0])
            why = (
                f"its quant_state tensor {state} holds no valid shape"
                if state
                else f"it has {weight}.absmax / quant_map but no "
                f"{weight}.quant_state.bitsandbytes__nf4 (or __fp4)"
            )
            problems.append(f"{weight} is a bitsandbytes 4-bit packed tensor {shape}, and {why}")
    explained = set(bnb.four_bit) | set(bnb.eight_bit) | set(bnb.state)
    for key, (shape, is_float) in sorted(tensors.items()):
        if not is_float and key.endswith(".weight") and len(shape) == 2 and key not in explained:
            problems.append(
                f"{key} is an integer weight {list(shape)} that no known quantization layout "
                "explains (bitsandbytes 8-bit weights have a .SCB beside them)"
            )
    if problems:
        raise LorascopeError(
            f"{where} holds quantized weights whose logical shapes cannot be known from it, so its "
            f"parameters cannot be counted: {'; '.join(problems[:4])}{' …' if len(problems) > 4 else ''}. "
            "Give the model's config.json (or its folder) instead: shapes then come from the configuration."
        )


def store_shapes(store: TensorStore, where: str) -> ModelShapes:
    """``checkpoint_shapes`` of an opened checkpoint: its headers, and the quant_state JSON of any
    bitsandbytes 4-bit weight (the one tensor whose data is read)."""
    infos = {k: (tuple(store.info(k).shape), store.info(k).is_float) for k in store.keys()}
    bnb = bnb_layout(infos)
    quantized = {w: tuple(infos[w][0]) for w in bnb.eight_bit}
    for weight, state in bnb.four_bit.items():
        shape = quant_state_shape(store, weight, state) if state else None
        if shape is not None:
            quantized[weight] = shape
    return checkpoint_shapes(infos, quantized, bnb, where)


def quant_state_shape(store: TensorStore, weight: str, state: str) -> tuple[int, int] | None:
    """The logical (out, in) shape a bitsandbytes 4-bit weight's ``quant_state.bitsandbytes__*`` records,
    checked against its packed tensor (two 4-bit codes per byte of the storage dtype), or None when it holds
    none.

    Raises:
        LorascopeError: the recorded shape does not fit the packed tensor.
    """
    info = store.info(state)
    if info.dtype != "uint8" or len(info.shape) != 1 or info.numel > QUANT_STATE_BYTES:
        return None
    try:
        data = loads_json(bytes(store.get_numpy(state).tolist()), f"{store.path}: {state}")
    except LorascopeError:
        return None  # not a quant state: checkpoint_shapes refuses the weight with its own message
    shape = data.get("shape") if isinstance(data, dict) else None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d > 0 for d in shape)):
        return None
    packed = store.info(weight)
    per_element = DTYPE_BITS.get(packed.dtype, 8) // 4  # 4-bit codes per stored element (quant_storage)
    if -(-shape[0] * shape[1] // per_element) != packed.numel:
        raise LorascopeError(
            f"{store.path}: {state} records the shape {shape}, which does not fit the packed tensor {weight} "
            f"({packed.dtype} {list(packed.shape)}, {per_element} 4-bit codes each); the file is damaged or "
            "not a bitsandbytes checkpoint."
        )
    return shape[0], shape[1]
