"""Progress bars for long work: one helper so every command shows progress the same way (on stderr)."""

from __future__ import annotations

import sys
import time
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


LINE_EVERY = 10.0  # seconds between plain progress lines


class _LineTask:
    """Progress as plain lines where stderr is not a terminal (a log file, CI): rich would draw nothing until
    the end. One line at most every LINE_EVERY seconds, and one when the work is done."""

    def __init__(self, total: int | None, description: str):
        self.total, self.description = total, description
        self.done = 0
        self.start = self.last = time.monotonic()
        self.note = ""

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        self.note = note or self.note
        now = time.monotonic()
        if now - self.last >= LINE_EVERY:
            self.last = now
            self.line()

    def line(self, end: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        eta = ""
        if not end and self.total and 0 < self.done < self.total:
            eta = f", eta {elapsed / self.done * (self.total - self.done):.0f} s"
        note = f"  {self.note}" if self.note and not end else ""
        print(
            f"{self.description}: {count} in {elapsed:.0f} s{eta}{' (done)' if end else ''}{note}",
            file=sys.stderr,
            flush=True,
        )


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
    if not console.is_terminal:
        task = _LineTask(total, description)
        yield task
        task.line(end=True)
        return
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
