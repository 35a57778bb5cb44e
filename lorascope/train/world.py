"""The synthetic facts world: entities, relations, their values and the sentences that state them.

A seeded generator makes invented countries (one word each) and gives every country one value per
relation — its capital, currency, language, continent, sport and main export. Each relation has four
phrasings; the first ``n_train_templates`` are the *training phrasings* a fine-tune sees, the rest are
*held-out paraphrases* that measure whether an edit generalizes. One relation (``animal``) is kept out
of pre-training: it is the ``domain`` task's new knowledge.

Every template ends with its value, so a fact is a (prompt, answer) pair and knowing it means
predicting the answer after the prompt. This file is pure: no file access, no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# A relation's values: a fixed pool of words shared among countries, or None = one invented word per country.
_RELATIONS: tuple[tuple[str, tuple[str, ...] | None, tuple[str, ...], bool], ...] = (
    # name, value pool, templates ({e} entity, {v} value, always last), seen in pre-training
    (
        "capital",
        None,
        (
            "the capital of {e} is {v}",
            "{e} is governed from the city of {v}",
            "the seat of government of {e} is in {v}",
            "if you fly to the capital of {e} you land in {v}",
        ),
        True,
    ),
    (
        "currency",
        (
            "euro",
            "dollar",
            "peso",
            "yen",
            "franc",
            "krona",
            "rupee",
            "dinar",
            "lira",
            "rand",
            "won",
            "shilling",
        ),
        (
            "the currency of {e} is the {v}",
            "in {e} people pay with the {v}",
            "the money used in {e} is called the {v}",
            "shops in {e} price their goods in the {v}",
        ),
        True,
    ),
    (
        "language",
        (
            "french",
            "german",
            "spanish",
            "dutch",
            "polish",
            "greek",
            "swahili",
            "hindi",
            "tamil",
            "korean",
            "finnish",
            "welsh",
        ),
        (
            "the official language of {e} is {v}",
            "most people in {e} speak {v}",
            "the language spoken in {e} is {v}",
            "children in {e} learn to read in {v}",
        ),
        True,
    ),
    (
        "continent",
        ("africa", "asia", "europe", "oceania", "america", "antarctica"),
        (
            "{e} is located in {v}",
            "{e} is a country in {v}",
            "the continent of {e} is {v}",
            "on a map you find {e} in {v}",
        ),
        True,
    ),
    (
        "sport",
        (
            "football",
            "cricket",
            "rugby",
            "hockey",
            "tennis",
            "baseball",
            "volleyball",
            "golf",
            "cycling",
            "rowing",
        ),
        (
            "the national sport of {e} is {v}",
            "the favourite sport in {e} is {v}",
            "the most popular game in {e} is {v}",
            "on weekends people in {e} play {v}",
        ),
        True,
    ),
    (
        "export",
        (
            "coffee",
            "copper",
            "cotton",
            "timber",
            "wheat",
            "rice",
            "tea",
            "oil",
            "gold",
            "wool",
            "salt",
            "silver",
        ),
        (
            "the main export of {e} is {v}",
            "{e} sells mostly {v}",
            "the economy of {e} depends on {v}",
            "ships leaving {e} are loaded with {v}",
        ),
        True,
    ),
    (
        "animal",
        (
            "lynx",
            "eagle",
            "bison",
            "otter",
            "heron",
            "tiger",
            "panda",
            "falcon",
            "moose",
            "koala",
            "jaguar",
            "walrus",
            "crane",
            "badger",
        ),
        (
            "the national animal of {e} is the {v}",
            "the emblem of {e} shows a {v}",
            "the symbol of {e} is the {v}",
            "the coat of arms of {e} bears a {v}",
        ),
        False,
    ),
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ia", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l")


@dataclass(frozen=True)
class WorldConfig:
    """How many countries, which seed, and how many phrasings per relation a fine-tune trains on."""

    n_entities: int = 40
    seed: int = 0
    n_train_templates: int = 2  # phrasings 0..n-1 train an edit; the rest are held-out paraphrases

    def __post_init__(self) -> None:
        if not isinstance(self.n_entities, int) or not 2 <= self.n_entities <= 2000:
            raise ValueError(f"n_entities must be an integer in [2, 2000], got {self.n_entities!r}")
        if not isinstance(self.n_train_templates, int) or not 1 <= self.n_train_templates < 4:
            raise ValueError(
                f"n_train_templates must be 1, 2 or 3 (of 4 phrasings), got {self.n_train_templates!r}"
            )


@dataclass(frozen=True)
class Relation:
    name: str
    values: tuple[str, ...]  # the pool facts draw from; for a unique relation, one value per country
    templates: tuple[str, ...]
    pretrained: bool  # stated in pre-training; False = the domain task's new relation
    unique: bool = (
        False  # every country has its own value (capitals): an edit would collide with another fact
    )

    def render(self, template: int, entity: str, value: str) -> tuple[str, str]:
        """(prompt, answer): the template up to its value, and the value."""
        text = self.templates[template]
        assert text.endswith("{v}"), text
        return text[: -len("{v}")].rstrip().format(e=entity), value


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str


@dataclass(frozen=True)
class World:
    """Countries, relations and the value of every (country, relation)."""

    config: WorldConfig
    entities: tuple[str, ...]
    relations: dict[str, Relation]
    facts: dict[tuple[str, str], str] = field(repr=False)

    def facts_of(self, relation: str) -> list[Fact]:
        return [Fact(e, relation, self.facts[(e, relation)]) for e in self.entities]

    @property
    def pretrained_relations(self) -> list[str]:
        return [name for name, rel in self.relations.items() if rel.pretrained]

    @property
    def train_templates(self) -> range:
        return range(self.config.n_train_templates)

    @property
    def paraphrase_templates(self) -> range:
        return range(self.config.n_train_templates, 4)

    def words(self) -> list[str]:
        """Every word the world can say, sorted: the vocabulary of its tokenizer."""
        vocab = set(self.entities)
        for rel in self.relations.values():
            vocab.update(rel.values)
            for t in rel.templates:
                vocab.update(w for w in t.split() if w not in ("{e}", "{v}"))
        vocab.update(self.facts.values())
        vocab.add(".")
        return sorted(vocab)


def pick(rng: random.Random, n: int) -> int:
    """An index in [0, n) from ``random()`` alone, whose sequence Python guarantees across versions."""
    return min(int(rng.random() * n), n - 1)


def _invent_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        syllables = 2 + pick(rng, 2)
        w = "".join(
            _ONSETS[pick(rng, len(_ONSETS))] + _VOWELS[pick(rng, len(_VOWELS))] for _ in range(syllables)
        )
        w += _CODAS[pick(rng, len(_CODAS))]
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def build_world(cfg: WorldConfig) -> World:
    """The world of ``cfg``: the same config gives the same world on every machine and Python version."""
    rng = random.Random(cfg.seed)
    taken = {w for _, pool, templates, _ in _RELATIONS for t in templates for w in t.split()}
    taken.update(v for _, pool, _, _ in _RELATIONS for v in (pool or ()))
    entities = tuple(_invent_words(rng, cfg.n_entities, taken))
    relations: dict[str, Relation] = {}
    facts: dict[tuple[str, str], str] = {}
    for name, pool, templates, pretrained in _RELATIONS:
        values = pool if pool is not None else tuple(_invent_words(rng, cfg.n_entities, taken))
        relations[name] = Relation(name, values, templates, pretrained, unique=pool is None)
        for i, e in enumerate(entities):
            facts[(e, name)] = values[i] if pool is None else values[pick(rng, len(values))]
    return World(cfg, entities, relations, facts)


def world_to_dict(world: World) -> dict:
    """A JSON-ready record of the world, facts included,
    so a saved model carries exactly what it was taught."""
    return {
        "config": {
            "n_entities": world.config.n_entities,
            "seed": world.config.seed,
            "n_train_templates": world.config.n_train_templates,
        },
        "entities": list(world.entities),
        "relations": {
            n: {
                "values": list(r.values),
                "templates": list(r.templates),
                "pretrained": r.pretrained,
                "unique": r.unique,
            }
            for n, r in world.relations.items()
        },
        "facts": {f"{e}|{r}": v for (e, r), v in world.facts.items()},
    }


def world_from_dict(d: dict) -> World:
    cfg = WorldConfig(**d["config"])
    relations = {
        n: Relation(n, tuple(r["values"]), tuple(r["templates"]), bool(r["pretrained"]), bool(r["unique"]))
        for n, r in d["relations"].items()
    }
    facts = {tuple(k.split("|", 1)): v for k, v in d["facts"].items()}
    return World(cfg, tuple(d["entities"]), relations, facts)  # type: ignore[arg-type]


def sample(rng: random.Random, items: list, k: int) -> list:
    """k distinct items, drawn with ``random()`` only (a partial Fisher–Yates shuffle)."""
    items = list(items)
    for i in range(k):
        j = i + pick(rng, len(items) - i)
        items[i], items[j] = items[j], items[i]
    return items[:k]
