"""The one exception type for bad input: a message a user can act on, shown by the CLI without a traceback."""

from __future__ import annotations


class LorascopeError(Exception):
    """Bad input: the message names the file, key or value, what was expected, and how to fix it."""


def raise_collected(problems: list[str], intro: str) -> None:
    """Raise one LorascopeError listing every problem found, or return when there is none."""
    if not problems:
        return
    shown = problems[:40]
    more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise LorascopeError(intro + "\n" + "\n".join(f"  - {p}" for p in shown) + more)
