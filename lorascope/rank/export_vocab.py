"""Tied embeddings and an extended vocabulary in an exported adapter.

Tied embeddings (a base whose config declares ``tie_word_embeddings``; ``delta.full_diff.declares_tied``): the
input embedding's update is the output head's too. The export writes the head's factors as well (the
embedding's, transposed, as PEFT's own save writes them), lists ``lm_head`` in ``target_modules`` and sets
``ensure_weight_tying``, so PEFT ties the two and the adapter used unmerged changes the input and the output
as the fine-tune did. PEFT 0.21's ``merge_and_unload`` then adds the update twice to the one shared matrix;
the export's notes say so and how to merge. A head PEFT cannot tie LoRA to (a masked-LM decoder) is named. A
tuned checkpoint that untied its head exports both updates on their own, and says merging needs an untied
base.

An extended vocabulary (rows added to an embedding or head, ``Delta.added_rows``): the new rows are exported
through PEFT's ``trainable_token_indices`` (their tuned values, as ``token_adapter.trainable_tokens_delta``)
when the tensor's common rows carry no LoRA update; beside a LoRA update of the same tensor PEFT cannot hold
them (its TrainableTokensWrapper cannot wrap a LoRA layer), and they are named as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checkpoint import Weights
from ..delta import Plan
from ..delta.full_diff import INPUT_EMBEDDINGS, declares_tied
from ..names import PEFT_PREFIX


@dataclass(frozen=True)
class TiedEmbedding:
    """An exported input embedding whose weight the base's output head uses (tie_word_embeddings)."""

    embedding: str  # module name: model.embed_tokens
    head: str | None  # the tied head PEFT can tie LoRA to (a causal LM's lm_head), else None
    untied: bool = False  # the tuned checkpoint has its own head, paired with the base embedding by the plan


# The output head of causal LMs: the name PEFT's ensure_weight_tying ties LoRA targets to
# (its EMBEDDING_LAYER_NAMES).
CAUSAL_LM_HEAD = "lm_head"


def tied_embedding(plan: Plan, base: Weights | None, exported: dict[str, int]) -> TiedEmbedding | None:
    """The exported input embedding the base declares tied to its output head, if any."""
    if not isinstance(base, Weights) or not declares_tied(base):
        return None
    names = [n for n in exported if f"{n}.weight".endswith(INPUT_EMBEDDINGS)]
    if len(names) != 1:
        return None
    embedding = names[0]
    untied = any(
        d.name != embedding and d.base is not None and d.base.key == f"{embedding}.weight"
        for d in plan.deltas
    )
    architectures = (base.config or {}).get("architectures") or []
    causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return TiedEmbedding(embedding, CAUSAL_LM_HEAD if causal else None, untied)


def tie_head(
    tie: TiedEmbedding,
    tensors: dict[str, np.ndarray],
    exported: dict[str, int],
    extra: dict[str, Any],
    notes: list[str],
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The head's factors and ensure_weight_tying for a tied embedding, or the note saying how to apply the
    update instead (also in the embedding's export.csv row); export.csv rows for what was added."""
    e = tie.embedding
    row = next(r for r in rows if r["name"] == e)
    if tie.untied:
        row["reason"] = "tied to the base's output head, which the tuned model unties: exact unmerged only"
        notes.append(
            f"The tuned model unties its output head from {e}, which the base ties "
            "(tie_word_embeddings): the two updates are exported on their own. Unmerged "
            "(PeftModel) the adapter is exact; merging would write both into the one matrix the "
            "base shares, so merge only into a base whose head is untied "
            f"(tie_word_embeddings=false, its head a copy of {e})."
        )
        return []
    if tie.head is None:
        row["reason"] = "tied to the base's output head, which PEFT cannot tie LoRA to: apply it merged"
        notes.append(
            f"{e} is tied to the base's output head (tie_word_embeddings), which PEFT cannot tie "
            "LoRA to (ensure_weight_tying acts on lm_head only): unmerged (PeftModel) the update "
            "reaches the input embedding only. Apply it merged (merge_and_unload), which writes it "
            "into the shared matrix once."
        )
        return []
    head, key = tie.head, PEFT_PREFIX + tie.head
    row["reason"] = f"tied to {head}: ensure_weight_tying; merging needs the recipe in the notes (README)"
    tensors[f"{key}.lora_A.weight"] = tensors[f"{PEFT_PREFIX}{e}.lora_embedding_B"].T  # (dim, r)ᵀ -> (r, dim)
    tensors[f"{key}.lora_B.weight"] = tensors[f"{PEFT_PREFIX}{e}.lora_embedding_A"].T  # (r, num)ᵀ -> (num, r)
    exported[head] = exported[e]
    extra["ensure_weight_tying"] = True
    notes.append(
        f"{e} is tied to {head} (tie_word_embeddings): the adapter holds {head}'s factors too (the "
        "embedding's, transposed) and sets ensure_weight_tying, so unmerged (PeftModel) the update "
        "reaches the input and the output as in the fine-tune. PEFT 0.21's merge_and_unload adds "
        "it twice to the shared matrix: to merge, load the adapter with ensure_weight_tying=False "
        f"and without {head} in target_modules."
    )
    reason = f"tied to {e}: its factors, transposed (ensure_weight_tying)"
    own = next((r for r in rows if r["name"] == head), None)  # an adapter resized that held the head
    if own is not None:
        own.update(rank=exported[e], exported=True, reason=reason)
        return []
    return [_row(head, "linear", True, reason, exported[e])]


def new_token_rows(
    plan: Plan,
    ranks: dict[str, int],
    exported: dict[str, int],
    tensors: dict[str, np.ndarray],
    extra: dict[str, Any],
    notes: list[str],
) -> list[dict[str, Any]]:
    """Rows added for new tokens: through trainable_token_indices where PEFT can hold them, else named as
    dropped."""
    rows, indices, size = [], {}, 0
    for d in plan.deltas:
        if not d.added_rows or d.name not in ranks:
            continue
        first, k = d.tuned.rows, d.added_rows
        size = max(size, first + k)
        label = f"{d.name} rows {first}–{first + k - 1}"
        if d.name in exported:
            _pad_token_rows(tensors, d.name, k)
            why = (
                "PEFT cannot hold them beside a LoRA update of the same tensor (its "
                "trainable_token_indices cannot wrap a LoRA layer)"
            )
            notes.append(
                f"{label} ({k} new tokens) are not in the adapter: {why}; the adapter leaves them "
                "as the resize makes them. Keep those rows of the tuned tensor yourself, or select "
                f"rank 0 for {d.name} to export them through trainable_token_indices instead."
            )
            rows.append(_row(label, "rows", False, f"{k} row(s) added for new tokens, dropped: {why}"))
            continue
        values = d.tuned.store.get_numpy(d.tuned.key)[
            first : first + k
        ]  # (k, dim): the new rows' tuned values
        tensors[f"{PEFT_PREFIX}{d.name}.token_adapter.trainable_tokens_delta"] = np.ascontiguousarray(values)
        indices[d.name] = list(range(first, first + k))
        reason = f"{k} new token row(s): their tuned values (trainable_token_indices)"
        rows.append(_row(label, "rows", True, reason))
    if indices:
        extra["trainable_token_indices"] = indices
        shown = ", ".join(f"{n} {v[0]}–{v[-1]}" for n, v in indices.items())
        notes.append(
            f"New token rows ({shown}) are exported through trainable_token_indices, with their "
            "tuned values, which replace what the resize put there."
        )
    if size:
        notes.append(
            f"The fine-tune grew the vocabulary to {size} tokens: resize the base first "
            f"(model.resize_token_embeddings({size})), then load the adapter; it is shaped for that "
            "size."
        )
    return rows


def _pad_token_rows(tensors: dict[str, np.ndarray], name: str, k: int) -> None:
    """Zero LoRA update for ``k`` new token rows, so the factors fit the resized base: the columns of an
    embedding's
    lora_embedding_A (r, num) -> (r, num + k), the rows of a head's lora_B (out, r) -> (out + k, r)."""
    key = PEFT_PREFIX + name
    if f"{key}.lora_embedding_A" in tensors:
        a = tensors[f"{key}.lora_embedding_A"]
        tensors[f"{key}.lora_embedding_A"] = np.concatenate([a, np.zeros((a.shape[0], k), a.dtype)], axis=1)
    elif f"{key}.lora_B.weight" in tensors:
        b = tensors[f"{key}.lora_B.weight"]
        tensors[f"{key}.lora_B.weight"] = np.concatenate([b, np.zeros((k, b.shape[1]), b.dtype)], axis=0)


def _row(name: str, kind: str, exported: bool, reason: str, rank: float = np.nan) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "rank": rank,
        "method": None,
        "energy": np.nan,
        "rel_error": np.nan,
        "optimal_rel_error": np.nan,
        "exported": exported,
        "reason": reason,
    }
