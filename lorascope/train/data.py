"""Training tasks and their tensors: what a run trains on and what it is measured on.

A ``Task`` is a list of training examples plus named evaluation sets. Tasks come from a registry:

- ``edit:K`` — change K facts of the world (the classic "the currency of Bulgaria is now the euro").
  Trains on the new facts in the training phrasings. Measured: ``edit`` (training phrasings),
  ``paraphrase`` (held-out phrasings of the same edits), ``retain_same`` (untouched facts of the edited
  relations, all phrasings) and ``retain_other`` (facts of relations no edit touched) — the last two
  measure forgetting.
- ``domain`` — a relation the base never saw (every country's national animal). Measured: ``domain``,
  ``paraphrase`` and ``retain`` (everything the base knew).
- a text or JSONL file, one example per line (see ``examples_from_lines``), measured on a held-out
  tenth of its lines and, on a MiniGPT base, on retention of the world.

An example is a prompt and a completion; the loss and the accuracy count completion tokens only. An
example is correct when every completion token is the model's top prediction (teacher forcing). Pure:
files are read by ``folders.py``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import LorascopeError
from .tokenizer import Tokenizer
from .world import Fact, World, pick, sample

IGNORE = -100  # label of positions that carry no loss (prompt and padding), as torch's cross_entropy expects


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


@dataclass
class Task:
    """Training examples and named evaluation sets; ``details`` records what was chosen (e.g. the edits)."""

    name: str
    train: list[Example]
    evals: dict[str, list[Example]]
    details: dict = field(default_factory=dict)


def fact_examples(world: World, facts: list[Fact], templates: range) -> list[Example]:
    out = []
    for f in facts:
        rel = world.relations[f.relation]
        out.extend(Example(*rel.render(t, f.entity, f.value)) for t in templates)
    return out


def pretrain_corpus(world: World) -> list[Example]:
    """Every fact of every pre-trained relation in every phrasing, as whole sentences (loss on all words)."""
    facts = [f for r in world.pretrained_relations for f in world.facts_of(r)]
    return [
        Example("", f"{p} {a} .")
        for p, a in ((e.prompt, e.completion) for e in fact_examples(world, facts, range(4)))
    ]


def world_eval(world: World) -> list[Example]:
    """Every pre-trained fact in every phrasing, as (prompt, answer): what the base should know."""
    facts = [f for r in world.pretrained_relations for f in world.facts_of(r)]
    return fact_examples(world, facts, range(4))


def edit_task(world: World, k: int, seed: int) -> Task:
    """Change ``k`` facts of half of the editable relations (seeded),
    each to a different value of its pool."""
    rng = random.Random(seed)
    editable = [r for r in world.pretrained_relations if not world.relations[r].unique]
    edited = sorted(sample(rng, editable, max(1, math.ceil(len(editable) / 2))))
    candidates = [f for r in edited for f in world.facts_of(r)]
    if not 1 <= k <= len(candidates):
        raise LorascopeError(
            f"task edit:{k} asks for {k} edits, but the world has {len(candidates)} facts in the edited "
            f"relations ({', '.join(edited)}); use edit:K with 1 ≤ K ≤ {len(candidates)}, or a world with "
            "more entities."
        )
    chosen = sample(rng, candidates, k)
    edits = []
    for f in chosen:
        others = [v for v in world.relations[f.relation].values if v != f.value]
        edits.append(Fact(f.entity, f.relation, others[pick(rng, len(others))]))
    touched = {(f.entity, f.relation) for f in chosen}
    same = [f for r in edited for f in world.facts_of(r) if (f.entity, f.relation) not in touched]
    other = [f for r in world.pretrained_relations if r not in edited for f in world.facts_of(r)]
    train = fact_examples(world, edits, world.train_templates)
    return Task(
        name=f"edit:{k}",
        train=train,
        evals={
            "edit": train,
            "paraphrase": fact_examples(world, edits, world.paraphrase_templates),
            "retain_same": fact_examples(world, same, range(4)),
            "retain_other": fact_examples(world, other, range(4)),
        },
        details={
            "edited_relations": edited,
            "edits": [
                {"entity": e.entity, "relation": e.relation, "old": o.value, "new": e.value}
                for e, o in zip(edits, chosen)
            ],
        },
    )


def domain_task(world: World, seed: int) -> Task:
    """Teach the relations the base never saw, for every country; ``seed`` is unused (the task is fixed)."""
    new = [r for r, rel in world.relations.items() if not rel.pretrained]
    facts = [f for r in new for f in world.facts_of(r)]
    train = fact_examples(world, facts, world.train_templates)
    return Task(
        name="domain",
        train=train,
        evals={
            "domain": train,
            "paraphrase": fact_examples(world, facts, world.paraphrase_templates),
            "retain": world_eval(world),
        },
        details={"relations": new},
    )


def file_task(
    name: str, examples: list[Example], world: World | None, seed: int, eval_fraction: float = 0.1
) -> Task:
    """A user's examples: a seeded tenth (at least one) held out;
    world retention when the base has a world."""
    if not examples:
        raise LorascopeError(f"task file {name} has no examples (no non-empty lines).")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(eval_fraction * len(examples))) if len(examples) > 1 else 0
    held = [examples[i] for i in sorted(order[:n_eval])]
    train = [examples[i] for i in sorted(order[n_eval:])]
    evals = {"heldout": held or train}
    if world is not None:
        evals["retain"] = world_eval(world)
    return Task(
        name=name, train=train, evals=evals, details={"n_examples": len(examples), "n_heldout": len(held)}
    )


def examples_from_lines(lines: list[str], jsonl: bool, source: str) -> list[Example]:
    """One example per non-empty line.

    Text lines are whole examples (loss on every token). JSONL lines are objects with ``text``, or with
    ``prompt`` and ``completion`` (loss on the completion only).
    """
    out, problems = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(Example("", line.strip()))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {no}: not valid JSON ({exc.msg})")
            continue
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            out.append(Example("", obj["text"]))
        elif (
            isinstance(obj, dict)
            and isinstance(obj.get("prompt"), str)
            and isinstance(obj.get("completion"), str)
        ):
            out.append(Example(obj["prompt"], obj["completion"]))
        else:
            problems.append(f"line {no}: expected an object with 'text', or with 'prompt' and 'completion'")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise LorascopeError(f"task file {source} has lines lorascope cannot read: {shown}.")
    return out


# name -> builder(world, argument, seed); "edit:20" calls TASKS["edit"](world, "20", seed)
TASKS: dict[str, Callable[[World, str | None, int], Task]] = {
    "edit": lambda world, arg, seed: edit_task(world, _count(arg), seed),
    "domain": lambda world, arg, seed: domain_task(world, seed),
}


def _count(arg: str | None) -> int:
    if arg is None or not arg.isdigit():
        raise LorascopeError(f"task edit needs a number of edits, as edit:20; got edit:{arg or ''}.")
    return int(arg)


def world_task(spec: str, world: World | None, seed: int) -> Task:
    """The registered task ``spec`` names (``edit:K``, ``domain``) on ``world``."""
    name, _, arg = spec.partition(":")
    if name not in TASKS:
        raise LorascopeError(
            f"unknown task {spec!r}: expected one of edit:K (change K facts), domain (a relation the base "
            "never saw), or the path of a .txt or .jsonl file with one example per line."
        )
    if world is None:
        raise LorascopeError(
            f"task {spec!r} is about lorascope's synthetic facts world, but the base model has no world "
            "(it is not a MiniGPT saved by lorascope); give a .txt or .jsonl task file instead."
        )
    return TASKS[name](world, arg or None, seed)


@dataclass
class Encoded:
    """Right-padded token ids and labels (IGNORE on prompt and padding), (N, T) each."""

    ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]


def encode(examples: list[Example], tok: Tokenizer, max_len: int) -> tuple[Encoded, int]:
    """Token ids of prompt + completion, labels on the completion;
    returns the number of truncated examples."""
    rows, truncated = [], 0
    for ex in examples:
        prompt = ([tok.bos_id] if tok.bos_id is not None else []) + (
            tok.encode(ex.prompt) if ex.prompt else []
        )
        completion = tok.encode((" " if ex.prompt else "") + ex.completion)
        ids = prompt + completion
        labels = [IGNORE] * len(prompt) + completion
        if len(ids) > max_len:
            ids, labels, truncated = ids[:max_len], labels[:max_len], truncated + 1
        rows.append((ids, labels))
    width = max((len(i) for i, _ in rows), default=1)
    ids_t = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    labels_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for n, (i, lab) in enumerate(rows):
        ids_t[n, : len(i)] = torch.tensor(i, dtype=torch.long)
        labels_t[n, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return Encoded(ids_t, labels_t), truncated
