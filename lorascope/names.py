"""Module names: normalization and the (layer, module) split that every table joins on (DESIGN.md 'Names').

A module is named by its path without the parameter suffix and without adapter prefixes, e.g.
``model.layers.3.self_attn.q_proj``; ``layer`` is its first integer component (3) and ``module`` the
path after it (``self_attn.q_proj``). Names without an integer component (``lm_head``) have no layer
and are their own module.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

ADAPTER_PREFIXES = ("base_model.model.",)
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


class NameIndex:
    """Finds the name in a collection that a query refers to, tolerating differing leading prefixes.

    ``model.layers.0.mlp.up_proj`` finds ``layers.0.mlp.up_proj`` and the other way round, when the
    match is unique. ``sep`` is the component separator ('.' for dotted names, '_' for kohya names).
    """

    def __init__(self, names: Iterable[str], sep: str = "."):
        self.sep = sep
        self.names = set(names)
        self._by_suffix: dict[str, set[str]] = defaultdict(set)
        for name in self.names:
            parts = name.split(sep)
            for i in range(len(parts)):
                self._by_suffix[sep.join(parts[i:])].add(name)

    def find(self, query: str) -> str | None:
        if query in self.names:
            return query
        parts = query.split(self.sep)
        # Leading components may be dropped, but never the layer index or anything after it.
        first_int = next((i for i, part in enumerate(parts) if _INT.match(part)), len(parts) - 1)
        for i in range(first_int + 1):
            hits = self._by_suffix.get(self.sep.join(parts[i:]), set())
            if len(hits) == 1:
                return next(iter(hits))
            if len(hits) > 1:
                return None  # ambiguous: refuse rather than guess
        return None
