"""lorascope/train/world.py: the synthetic facts world — deterministic by seed, and what its tokenizer
needs."""

import random

import pytest

from lorascope.train.world import WorldConfig, build_world, sample, world_from_dict, world_to_dict


def test_the_world_is_a_function_of_its_seed_and_round_trips():
    a, b = build_world(WorldConfig(n_entities=12, seed=3)), build_world(WorldConfig(n_entities=12, seed=3))
    assert a == b and len(a.entities) == 12 and len(set(a.entities)) == 12
    assert world_from_dict(world_to_dict(a)) == a
    assert build_world(WorldConfig(n_entities=12, seed=4)).facts != a.facts


def test_every_fact_renders_to_words_of_the_world():
    world = build_world(WorldConfig(n_entities=6))
    words = set(world.words())
    for name in world.relations:
        for fact in world.facts_of(name):
            rel = world.relations[name]
            prompt, answer = rel.render(0, fact.entity, fact.value)
            assert answer == fact.value and set(prompt.replace(".", " . ").split()) <= words
    unique = [r for r in world.relations.values() if r.unique]
    for rel in unique:  # one value per country: no two countries share it
        values = [world.facts[(e, rel.name)] for e in world.entities]
        assert len(set(values)) == len(values)
    assert list(world.train_templates) == [0, 1] and list(world.paraphrase_templates) == [2, 3]


def test_bad_configs_and_sampling():
    with pytest.raises(ValueError, match="n_entities"):
        WorldConfig(n_entities=1)
    with pytest.raises(ValueError, match="n_train_templates"):
        WorldConfig(n_train_templates=4)
    assert sorted(sample(random.Random(0), list(range(10)), 10)) == list(range(10))
