"""Module shapes from a checkpoint's tensor names and shapes alone (no config, no tensor data).

The total is exact — a checkpoint stores a tied matrix once. Kinds are inferred from names: embeddings by
``EMBEDDING_NAMES``, GPT-2's Conv1D layers (stored (in, out)) by ``CONV1D_NAMES`` in a checkpoint that has
``wte``; every other 2-D ``weight`` is taken as a Linear (out, in). Buffers saved by old exporters
(``BUFFER_SUFFIXES``) are not parameters and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from .layout import ModelShapes, ModuleShape

EMBEDDING_NAMES = ("embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings",
                   "embed_positions", "shared")
CONV1D_NAMES = ("c_attn", "c_proj", "c_fc", "q_attn")
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "position_ids", ".num_batches_tracked")
HEAD_NAMES = ("lm_head", "embed_out", "output")


def checkpoint_shapes(tensors: Mapping[str, tuple[tuple[int, ...], bool]]) -> ModelShapes:
    """ModelShapes from ``{key: (shape, is_float)}`` of every tensor in a checkpoint.

    Args:
        tensors: each stored tensor's shape and whether it is floating point (integer tensors are buffers).
    """
    keys = [k for k, (_, is_float) in tensors.items() if is_float and not k.endswith(BUFFER_SUFFIXES)]
    gpt2 = any(k.split(".")[-2:-1] == ["wte"] for k in keys)
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key in keys:
        module, _, param = key.rpartition(".")
        modules.setdefault(module or key, {})[param if module else "weight"] = tensors[key][0]
    out = []
    for name, params in modules.items():
        total = sum(_numel(s) for s in params.values())
        bias = _numel(params["bias"]) if "bias" in params else 0
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
    notes = ("shapes from tensor headers: kinds are inferred from names, and an output head tied to the "
             "embeddings is not stored, so it cannot be targeted here",)
    return ModelShapes(arch="checkpoint", head="unknown", modules=tuple(out), hidden=embed.shape[1] if embed else None,
                       output_head=head, shapes_from="headers", notes=notes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
