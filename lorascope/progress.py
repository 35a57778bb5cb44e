"""Progress bars for long work: one helper so every command shows progress the same way (on stderr)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Task(Protocol):
    def advance(self, n: int = 1, note: str | None = None) -> None: ...


class _Silent:
    def advance(self, n: int = 1, note: str | None = None) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Any, task_id: Any):
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1, note: str | None = None) -> None:
        if note is not None:
            self._progress.update(self._id, advance=n, note=note)
        else:
            self._progress.update(self._id, advance=n)


@contextmanager
def progress_bar(total: int | None, description: str, enabled: bool = True) -> Iterator[Task]:
    """A progress bar with count, rate and ETA on stderr; a no-op when disabled.

    Usage: ``with progress_bar(n, "modules") as bar: ... bar.advance(note=name)``.
    """
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.fields[note]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total, note="")
        yield _RichTask(progress, task_id)
        progress.update(task_id, note="")
