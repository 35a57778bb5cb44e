"""The grammar of kohya's flattened stems: a vocabulary entry (a module path with indexed components) and
every way a stem's '_'-separated tokens split into its components.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

Components = tuple[str, ...]
Target = Callable[[Components], "str | None"]


@dataclass(frozen=True)
class Entry:
    """One module path of the vocabulary: its components (alternatives, or None for an integer index) and
    how a parse becomes the resolved name (None: the parse itself, dotted, after the family's prefix)."""

    parts: tuple[tuple[str, ...] | None, ...]
    target: Target | None = None


def path(spec: str, target: Target | str | None = None) -> Entry:
    """'down_blocks.{i}.(attn1|attn2).to_q' -> an Entry; a str target is formatted with the parse's
    integers ({0}, {1}, …)."""
    parts = tuple(None if c == "{i}" else tuple(c.strip("()").split("|")) for c in spec.split("."))
    return Entry(parts, _formatter(target) if isinstance(target, str) else target)


def _formatter(fmt: str) -> Target:
    return lambda parse: fmt.format(*[c for c in parse if c.isdigit()])


def keep(parse: Components) -> str:
    """The parse itself, dotted, without a pipeline component: BFL / SAI module names."""
    return ".".join(parse)


def parses(tokens: list[str], parts: tuple[tuple[str, ...] | None, ...]) -> Iterator[Components]:
    """Every way the tokens split into the entry's components, in order, using all tokens."""
    if not parts:
        if not tokens:
            yield ()
        return
    head, rest = parts[0], parts[1:]
    if head is None:
        if tokens and tokens[0].isdigit():
            for tail in parses(tokens[1:], rest):
                yield (tokens[0], *tail)
        return
    for alternative in head:
        words = alternative.split("_")
        if tokens[: len(words)] == words:
            for tail in parses(tokens[len(words) :], rest):
                yield (alternative, *tail)
