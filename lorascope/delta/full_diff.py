"""A full fine-tune's update, tuned − base, paired tensor by tensor into lazy ``Delta`` items.

Tensors pair by normalized name (``lorascope.names.NameIndex``); an ambiguous name pairs nothing and is
reported. Orientation comes from declarations — a base config's ``model_type`` whose linear layers are
GPT-2 Conv1D (``declares_conv1d``) — never from a coincidence of shapes. Rows added to a vocabulary for new
tokens are left out of ΔW with a warning; a tuned output head whose base declares it tied to the input
embeddings pairs with that embedding (``declares_tied``).
"""

from __future__ import annotations

import re

from ..checkpoint.base import TensorRef, Weights
from ..errors import LorascopeError, raise_collected
from ..names import NameIndex
from .items import Delta, Plan, VectorDelta, dense_delta, weight_name

# Tensors whose first dimension grows when tokens are added to a vocabulary.
VOCAB_NAMES = re.compile(r"(embed|wte|lm_head|word_embeddings|shared|output|score|head)", re.IGNORECASE)
# Model types whose linear layers are GPT-2 Conv1D, stored (in, out); transposed to (out, in).
CONV1D_MODEL_TYPES = {"gpt2"}
CONV1D_NAMES = re.compile(r"\.(c_attn|c_proj|c_fc|q_attn)$")
EXPERT_STACK = re.compile(r"experts?\b", re.IGNORECASE)


def _conv1d(ckpt: Weights) -> bool:
    return bool(ckpt.config) and ckpt.config.get("model_type") in CONV1D_MODEL_TYPES


def declares_conv1d(base: Weights, name: str) -> bool:
    """Whether the base's config declares this weight a GPT-2 Conv1D, stored (in, out)."""
    return _conv1d(base) and CONV1D_NAMES.search(weight_name(name)) is not None


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
        tied = (
            b_key is None and not hit.ambiguous and (b_key := tied_partner(base, key, warnings)) is not None
        )
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
                deltas.append(
                    dense_delta(
                        f"{name}.{e}", TensorRef(t_store, key, index=e), TensorRef(b_store, b_key, index=e)
                    )
                )
            continue
        layout = "transpose" if conv1d and len(t_info.shape) == 2 and CONV1D_NAMES.search(name) else "flatten"
        rows = b_info.shape[0] if added else None
        deltas.append(
            dense_delta(
                name,
                TensorRef(t_store, key, layout, rows),
                TensorRef(b_store, b_key, layout, rows),
                added_rows=added,
            )
        )
        if added:
            warnings.append(
                {"name": name, "reason": f"{added} rows added (new tokens); the {rows} common rows analyzed"}
            )
    raise_collected(
        ambiguous,
        f"{base.path} and {tuned.path}: {len(ambiguous)} tensor name(s) match more "
        "than one tensor of the other checkpoint once wrapper prefixes are removed; lorascope "
        "pairs tensors only by one unambiguous name (lorascope.names.NameIndex). Ambiguous "
        "names:",
    )
    raise_collected(
        problems,
        f"{base.path} and {tuned.path} do not have the same shapes for {len(problems)} tensor(s); "
        "they are probably not the same model (or a layer was resized). Mismatched keys:",
    )
    for key in b_store.keys():
        if key not in paired:
            warnings.append(
                {"name": key, "reason": "only in the base checkpoint (no tuned tensor of that name)"}
            )
    if not deltas and not vectors:
        raise LorascopeError(
            f"{base.path} and {tuned.path} share no tensor names; they are not two versions of one model "
            f"(base has e.g. {', '.join(b_store.keys()[:2])}; tuned has e.g. "
            f"{', '.join(t_store.keys()[:2])})."
        )
    return Plan(deltas, vectors, warnings, "full-diff")


# ---- tied output heads: a tuned checkpoint that unties what its base declares tied -----------------------

# Output heads that models tie to their input embeddings, and those input embeddings, by the end of their key.
TIED_HEADS = ("lm_head.weight", "cls.predictions.decoder.weight", "vocab_projector.weight")
INPUT_EMBEDDINGS = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "tok_embeddings.weight",
    "shared.weight",
)


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
    found = [
        k for k in base.store.keys() if k.endswith(INPUT_EMBEDDINGS) and len(base.store.info(k).shape) == 2
    ]
    if len(found) != 1:
        return None
    reason = (
        f"the base declares its output head tied to the input embeddings (tie_word_embeddings) and "
        f"stores no {key}; the tuned checkpoint has its own, untied: ΔW = {key} (tuned) − {found[0]} "
        "(base), the weight the base's head uses"
    )
    warnings.append({"name": weight_name(key), "reason": reason})
    return found[0]


def _added_rows(key: str, tuned: tuple[int, ...], base: tuple[int, ...]) -> int | None:
    """Rows added to an embedding or output head for new tokens, or None for a real mismatch."""
    if len(tuned) == len(base) and len(tuned) in (1, 2) and tuned[1:] == base[1:] and tuned[0] > base[0]:
        if VOCAB_NAMES.search(key):
            return tuned[0] - base[0]
    return None
