"""Module names: normalization and the (layer, module) split that every table joins on (DESIGN.md 'Names').

A module is named by its path without the parameter suffix and without adapter prefixes, e.g.
``model.layers.3.self_attn.q_proj``; ``layer`` is its first integer component (3) and ``module`` the
path after it (``self_attn.q_proj``). Names without an integer component (``lm_head``) have no layer
and are their own module.

Pairing two checkpoints' names (``NameIndex``) follows one documented prefix rule: names are equal, or equal
once leading wrapper prefixes (``WRAPPER_PREFIXES``) are removed. Nothing else — no shared suffix, no
guessed tower — pairs two tensors; an ambiguous match pairs nothing and is reported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before every module name
ADAPTER_PREFIXES = (PEFT_PREFIX,)
# Leading components that wrap a model without renaming its modules, removed before two names are compared:
# PEFT's PeftModel (base_model.model.), the task-head classes of transformers (model. for Llama-style,
# transformer. for GPT-2-style models around their base model), DistributedDataParallel (module.) and
# torch.compile (_orig_mod.).
WRAPPER_PREFIXES = ("base_model.model.", "model.", "transformer.", "module.", "_orig_mod.")
_INT = re.compile(r"^\d+$")


def strip_adapter_prefix(name: str) -> str:
    for prefix in ADAPTER_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def split_name(name: str) -> tuple[int | None, str]:
    """(layer, module) of a normalized name: the first integer component and the path after it."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if _INT.match(part):
            rest = ".".join(parts[i + 1 :])
            return int(part), rest or name
    return None, name


def module_type(module: str) -> str:
    """A module path with its inner integers replaced by '*', so experts or blocks group together."""
    return ".".join("*" if _INT.match(p) else p for p in module.split("."))


@dataclass(frozen=True)
class Match:
    """The outcome of looking a name up: the name found, or None and why (``reason``)."""

    name: str | None
    reason: str = ""
    ambiguous: tuple[str, ...] = ()


def canonical(name: str, sep: str = ".") -> str:
    """``name`` with every leading wrapper prefix (``WRAPPER_PREFIXES``, components joined by ``sep``)
    removed."""
    prefixes = [p.replace(".", sep) for p in WRAPPER_PREFIXES]
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, changed = name[len(prefix) :], True
    return name


class NameIndex:
    """Finds the name in a collection that a query declares, by this module's prefix rules and nothing else.

    A query matches a name when the two are equal, or when they are equal once their leading wrapper prefixes
    (``WRAPPER_PREFIXES``) are removed: ``base_model.model.model.layers.0.mlp.up_proj`` finds
    ``model.layers.0.mlp.up_proj`` and ``layers.0.mlp.up_proj``; ``transformer.h.0.attn.c_attn`` finds
    ``h.0.attn.c_attn``. Any other difference — a different tower (``vision_tower.proj`` against
    ``text_tower.proj``), a shared suffix — is no match. When two names of the collection share one canonical
    form, a query that is neither of them exactly is ambiguous and matches nothing. ``sep`` is the component
    separator ('.' for dotted names, '_' for kohya's flattened names).
    """

    def __init__(self, names: Iterable[str], sep: str = "."):
        self.sep = sep
        self.names = set(names)
        self._by_canonical: dict[str, set[str]] = defaultdict(set)
        for name in self.names:
            self._by_canonical[canonical(name, sep)].add(name)

    def match(self, query: str) -> Match:
        """The name ``query`` refers to, or None with the reason (absent, or ambiguous with the
        candidates)."""
        if query in self.names:
            return Match(query)
        hits = self._by_canonical.get(canonical(query, self.sep), set())
        if len(hits) == 1:
            return Match(next(iter(hits)))
        if hits:
            listed = tuple(sorted(hits))
            return Match(
                None,
                f"ambiguous: {', '.join(listed[:4])} all match it once wrapper prefixes are removed",
                listed,
            )
        prefixes = ", ".join(WRAPPER_PREFIXES)
        return Match(None, f"no name equal to it, with or without the wrapper prefixes {prefixes}")

    def find(self, query: str) -> str | None:
        """The matching name, or None when there is none or it is ambiguous (``match`` says which)."""
        return self.match(query).name
