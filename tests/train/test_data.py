"""The facts world, its tokenizer and the tasks: determinism, what each set holds, file tasks, errors."""

from __future__ import annotations

import json

import pytest
import torch

from lorascope.errors import LorascopeError
from lorascope.train.data import (
    IGNORE,
    Example,
    encode,
    examples_from_lines,
    file_task,
    pretrain_corpus,
    world_task,
)
from lorascope.train.folders import read_task_file
from lorascope.train.tokenizer import WordTokenizer, from_hf_tokenizer_json, hf_tokenizer_json
from lorascope.train.world import WorldConfig, build_world, world_from_dict, world_to_dict

WORLD = build_world(WorldConfig(n_entities=12, seed=3))


def test_world_is_deterministic_and_serializable():
    again = build_world(WorldConfig(n_entities=12, seed=3))
    assert again.entities == WORLD.entities and again.facts == WORLD.facts
    assert build_world(WorldConfig(n_entities=12, seed=4)).entities != WORLD.entities
    assert world_from_dict(json.loads(json.dumps(world_to_dict(WORLD)))) == WORLD
    assert len(set(WORLD.entities)) == 12
    capitals = [WORLD.facts[(e, "capital")] for e in WORLD.entities]
    assert len(set(capitals)) == 12 and not set(capitals) & set(WORLD.entities)


def test_templates_end_with_the_value():
    rel = WORLD.relations["currency"]
    assert rel.render(0, "brikonia", "euro") == ("the currency of brikonia is the", "euro")
    corpus = pretrain_corpus(WORLD)
    assert len(corpus) == 12 * 6 * 4 and all(e.prompt == "" and e.completion.endswith(" .") for e in corpus)
    assert not any("national animal" in e.completion for e in corpus)  # the domain relation stays unseen


def test_edit_task_sets():
    task = world_task("edit:7", WORLD, seed=1)
    edits = task.details["edits"]
    assert len(edits) == 7 and all(e["old"] != e["new"] for e in edits)
    assert all(e["new"] in WORLD.relations[e["relation"]].values for e in edits)
    edited = set(task.details["edited_relations"])
    assert len(edited) == 3 and "capital" not in edited  # half of the 5 shared-value relations, rounded up
    assert len(task.train) == 7 * 2 and task.evals["edit"] == task.train
    assert len(task.evals["paraphrase"]) == 7 * 2
    assert {e.completion for e in task.train} <= {e["new"] for e in edits}
    assert len(task.evals["retain_same"]) == (12 * 3 - 7) * 4
    assert len(task.evals["retain_other"]) == 12 * 3 * 4
    edited_prompts = {
        WORLD.relations[e["relation"]].render(t, e["entity"], "")[0] for e in edits for t in range(4)
    }
    assert not edited_prompts & {e.prompt for e in task.evals["retain_same"]}
    assert world_task("edit:7", WORLD, seed=1) == task and world_task("edit:7", WORLD, seed=2) != task


def test_domain_task_teaches_the_unseen_relation():
    task = world_task("domain", WORLD, seed=0)
    assert task.details["relations"] == ["animal"]
    assert len(task.train) == 12 * 2 and len(task.evals["retain"]) == 12 * 6 * 4


@pytest.mark.parametrize(
    "spec,match",
    [
        ("edit:0", "1 ≤ K"),
        ("edit:500", "1 ≤ K"),
        ("edit:x", "number of edits"),
        ("rewrite:3", "unknown task"),
    ],
)
def test_bad_task_specs(spec, match):
    with pytest.raises(LorascopeError, match=match):
        world_task(spec, WORLD, 0)


def test_world_task_needs_a_world():
    with pytest.raises(LorascopeError, match="no world"):
        world_task("edit:3", None, 0)


def test_file_tasks(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "q1", "completion": "a1"}\n\n{"text": "hello there"}\n')
    assert read_task_file(tmp_path / "a.jsonl") == [Example("q1", "a1"), Example("", "hello there")]
    (tmp_path / "b.txt").write_text("one\ntwo\n\nthree\n")
    examples = read_task_file(tmp_path / "b.txt")
    assert [e.completion for e in examples] == ["one", "two", "three"]
    task = file_task("b.txt", examples * 10, WORLD, seed=0)
    assert len(task.evals["heldout"]) == 3 and len(task.train) == 27 and "retain" in task.evals
    with pytest.raises(LorascopeError, match="line 2"):
        examples_from_lines(['{"text": "ok"}', '{"prompt": 1}'], jsonl=True, source="x.jsonl")
    with pytest.raises(LorascopeError, match="does not exist"):
        read_task_file(tmp_path / "missing.jsonl")
    (tmp_path / "c.csv").write_text("x")
    with pytest.raises(LorascopeError, match=".txt"):
        read_task_file(tmp_path / "c.csv")


def test_tokenizer_words_and_unknowns():
    tok = WordTokenizer(tuple(WORLD.words()))
    ids = tok.encode("The currency of " + WORLD.entities[0].upper() + " is the zorblax.")
    assert tok.decode(ids).split()[:4] == ["the", "currency", "of", WORLD.entities[0]]
    assert ids[-2:] == [tok.unk_id, tok.index["."]]
    assert from_hf_tokenizer_json(hf_tokenizer_json(tok)) == tok
    assert tok.unknown_fraction(["the zorblax"]) == 0.5


def test_encode_masks_prompts_and_padding():
    tok = WordTokenizer(("a", "b", "c"))
    enc, cut = encode([Example("a b", "c"), Example("", "a b c a")], tok, max_len=4)
    assert cut == 1
    assert enc.ids.tolist() == [[2, 4, 5, 6], [2, 4, 5, 6]]
    assert enc.labels.tolist() == [[IGNORE, IGNORE, IGNORE, 6], [IGNORE, 4, 5, 6]]
    enc, _ = encode([Example("a", "b"), Example("", "c")], tok, max_len=8)
    assert enc.ids.tolist() == [[2, 4, 5], [2, 6, 0]] and enc.labels[1, 2] == IGNORE


@pytest.mark.hf
def test_saved_tokenizer_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    from lorascope.train.folders import save_minigpt
    from lorascope.train.model import MiniGPTConfig, build

    tok = WordTokenizer(tuple(WORLD.words()))
    save_minigpt(
        tmp_path,
        build(
            MiniGPTConfig(
                vocab_size=tok.vocab_size,
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
            ),
            0,
        ),
        tok,
        WORLD,
    )
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = (
        f"The capital of {WORLD.entities[3].title()} is "
        f"{WORLD.facts[(WORLD.entities[3], 'capital')]} , zorblax!"
    )
    assert hf(text)["input_ids"] == [tok.bos_id] + tok.encode(text)
    assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (tok.pad_id, tok.eos_id, tok.unk_id)
    assert torch.is_tensor(hf(text, return_tensors="pt")["input_ids"])
