"""lorascope/rank/export_vocab.py: tied heads take the embedding's factors transposed; new token rows pad the
factors or go through trainable_token_indices."""

import numpy as np

from lorascope.names import PEFT_PREFIX
from lorascope.rank.export_vocab import TiedEmbedding, tie_head

E = "model.embed_tokens"


def test_a_tied_head_gets_the_embeddings_factors_transposed():
    a, b = np.random.default_rng(0).standard_normal((3, 10)), np.random.default_rng(1).standard_normal((6, 3))
    tensors = {f"{PEFT_PREFIX}{E}.lora_embedding_A": a, f"{PEFT_PREFIX}{E}.lora_embedding_B": b}
    exported, extra, notes = {E: 3}, {}, []
    rows = [{"name": E, "reason": ""}]
    added = tie_head(TiedEmbedding(E, "lm_head"), tensors, exported, extra, notes, rows)
    head_a, head_b = (
        tensors[f"{PEFT_PREFIX}lm_head.lora_A.weight"],
        tensors[f"{PEFT_PREFIX}lm_head.lora_B.weight"],
    )
    np.testing.assert_array_equal(
        head_b @ head_a, (b @ a).T
    )  # the head's update (num, dim) is the embedding's
    assert (
        exported["lm_head"] == 3 and extra == {"ensure_weight_tying": True} and added[0]["name"] == "lm_head"
    )
    assert "merge_and_unload adds it twice" in notes[0]


def test_a_head_peft_cannot_tie_and_an_untied_head_are_notes_only():
    for tie, phrase in (
        (TiedEmbedding(E, None), "cannot tie"),
        (TiedEmbedding(E, "lm_head", untied=True), "unties"),
    ):
        tensors, exported, extra, notes, rows = {}, {E: 2}, {}, [], [{"name": E, "reason": ""}]
        assert tie_head(tie, tensors, exported, extra, notes, rows) == [] and tensors == {} and extra == {}
        assert phrase in notes[0] and rows[0]["reason"]
