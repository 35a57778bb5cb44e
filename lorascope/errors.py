"""The one exception type for bad input: a message a user can act on, shown by the CLI without a traceback;
and the notes that travel with any exception (what a failed run left as it was)."""

from __future__ import annotations

import contextlib


class LorascopeError(Exception):
    """Bad input: the message names the file, key or value, what was expected, and how to fix it."""


def raise_collected(problems: list[str], intro: str) -> None:
    """Raise one LorascopeError listing every problem found, or return when there is none."""
    if not problems:
        return
    shown = problems[:40]
    more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise LorascopeError(intro + "\n" + "\n".join(f"  - {p}" for p in shown) + more)


def note(exc: BaseException, text: str) -> None:
    """Attach ``text`` to an exception (Python 3.11's ``add_note``; the CLI prints notes after the
    message)."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        with contextlib.suppress(AttributeError, TypeError):
            exc.__notes__ = notes = []  # type: ignore[attr-defined]
    if notes is not None:
        notes.append(text)
