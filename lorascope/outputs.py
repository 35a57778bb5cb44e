"""Output folders as transactions: every command that writes a folder writes it through ``writing``.

A run writes a *stage* folder beside ``--out``, which replaces the folder only when complete, in one atomic
step (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames and a journal the next run finishes). So:

- a failed or interrupted run leaves the previous results as they were, and says so; staged files are fsynced
  before the swap, so this holds across a power loss too (``LORASCOPE_FSYNC=0`` skips that);
- a lock (``filelock``, ``.<name>.lorascope-lock`` beside the folder) makes a second run into the same folder
  wait ``LORASCOPE_WAIT`` seconds (default 0) and then refuse, naming the folder;
- lorascope knows its files from a manifest in the folder (``.lorascope-manifest.json``: each file's size and
  sha256), never from names. It writes only into a new or empty folder or one holding its manifest. A file it
  did not write is never deleted or overwritten: it is carried into the new folder as a hard link, and a run
  that would write a file of its name is refused before anything changes; so is a run into a folder where a
  file of ours was edited since (``manifest.edited_message``);
- files of ours that the new run does not write are dropped unless the command keeps them (``keep``, or
  ``mode="update"`` for commands that add to a folder, such as a sweep beside spectrum results).

A killed run leaves at most a stage folder or a journal, which the next run into the folder removes or ends
first. Single files beside other people's files (``--out page.html``) are replaced by ``atomic_file``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import LorascopeError, note
from .filesystem import atomic_file as atomic_file  # re-exported: single files beside others' files
from .filesystem import durable, fsync, glob_escape, link_or_copy
from .filesystem import remove_stage_tree, wait_seconds, write_journal
from .filesystem import cleanup_old as _cleanup_old  # looked up here when a transaction commits (a test
from .filesystem import exchange as _exchange  # replaces them to stop a run between the two steps)
from .manifest import HASH_LIMIT, INTERNAL, MANIFEST, edited_message, file_sha256, read_manifest, under, walk
from .manifest import written_files
from .manifest import verify as verify  # re-exported: results check their files against the manifest

# in update mode, files of ours this large are hard-linked into the stage, not copied
LINK_AT = 16 * 1024 * 1024
_ACTIVE: dict[Path, Path] = {}  # stage -> final folder, for paths shown to users while a stage is written
_INPUT_KEYS: dict[Path, list[str]] = {}  # default output folder -> the inputs it was chosen for


def default_folder(base: Path, inputs: Iterable[str | Path]) -> Path:
    """``base``, or ``base-<hash of the inputs>`` when ``base`` already holds results of other inputs.

    Default output folders are named after their inputs' names; two different inputs of one name (two
    ``adapter/`` folders) would share it, so the resolved input paths are recorded in the manifest and a
    folder of other inputs (or one lorascope did not write) is never reused.
    """
    key = [str(Path(p).expanduser().resolve()) for p in inputs]
    chosen = base
    manifest = read_manifest(base) if base.is_dir() else None
    empty = base.is_dir() and not any(INTERNAL not in p.name for p in base.iterdir())
    if base.exists() and not empty and (manifest is None or manifest.get("inputs") != key):
        chosen = base.with_name(f"{base.name}-{hashlib.sha256(chr(0).join(key).encode()).hexdigest()[:8]}")
    _INPUT_KEYS[Path(os.path.abspath(chosen))] = key
    return chosen


def shown(path: str | Path) -> Path:
    """``path`` as the user will find it: a path inside an open stage is mapped to its final folder."""
    p = Path(path)
    for stage, final in _ACTIVE.items():
        if p == stage or stage in p.parents:
            return final / p.relative_to(stage)
    return p


# ---- the transaction ---------------------------------------------------------------------------------------


class Output:
    """One write of one folder. Use through ``writing``; write every file under ``stage``."""

    def __init__(
        self,
        out: str | Path,
        command: str,
        mode: str = "replace",
        keep: Iterable[str] = (),
        drop: Iterable[str] = (),
        inputs: Iterable[str] = (),
        link: bool = False,
        wait: float | None = None,
    ):
        if mode not in ("replace", "update"):
            raise ValueError(f"mode must be 'replace' or 'update', got {mode!r}")
        out = Path(out).expanduser()
        if out.is_symlink() and out.is_dir():
            out = out.resolve()
        self.path = Path(os.path.abspath(out))
        self.parent = self.path.parent
        self.command, self.mode, self.link = command, mode, link
        self.keep, self.dropped = list(keep), list(drop)
        self.inputs = _INPUT_KEYS.get(self.path) or [str(i) for i in inputs]
        self.wait = wait_seconds() if wait is None else wait
        self.generation = uuid.uuid4().hex
        self.stage = self.parent / f".{self.path.name}{INTERNAL}stage-{self.generation[:12]}"
        self.journal = self.parent / f".{self.path.name}{INTERNAL}journal.json"
        self.lock_path = self.parent / f".{self.path.name}{INTERNAL}lock"
        self._lock: Any = None
        self.notes: list[str] = []

    # -- public helpers for writers
    def file(self, name: str) -> Path:
        """A fresh path in the stage for the file ``name`` (parents created, any staged copy removed
        first)."""
        path = self.stage / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() or path.is_symlink():
            path.unlink()
        return path

    def drop(self, *names: str) -> None:
        """Files or folders of ours to leave out of the new folder (removed from the stage now)."""
        for name in names:
            self.dropped.append(name)
            self.fresh(name)

    def fresh(self, name: str) -> None:
        """Remove ``name`` (a file or folder) from the stage, so a writer starts it from nothing."""
        target = self.stage / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            remove_stage_tree(target)

    # -- lifecycle
    def open(self) -> Output:
        if self.path.exists() and not self.path.is_dir():
            raise LorascopeError(f"--out {self.path} is an existing file; give a folder path.")
        if (
            self.path.is_dir()
            and read_manifest(self.path) is None
            and any(INTERNAL not in p.name for p in self.path.iterdir())
        ):
            raise LorascopeError(
                f"--out {self.path} holds files which lorascope did not write (it has no {MANIFEST}); "
                "refusing to write into it so nothing there is overwritten. Give a new or empty folder."
            )
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LorascopeError(
                f"cannot create the folder {self.parent} for --out: {exc.strerror or exc}."
            ) from None
        self._acquire()
        try:
            self._recover()
            if self.path.is_dir() and (
                edited := edited_message(self.path)
            ):  # a file of ours the user changed
                raise LorascopeError(edited)
            self._prepare()
        except BaseException:
            self._discard()
            self._release()
            raise
        _ACTIVE[self.stage] = self.path
        return self

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        self._lock = FileLock(str(self.lock_path), timeout=self.wait)
        try:
            self._lock.acquire()
        except Timeout:
            raise LorascopeError(
                f"another lorascope run is writing {self.path} (it holds {self.lock_path}); wait for it to "
                "finish, "
                "set LORASCOPE_WAIT=SECONDS to wait for it, or give another --out."
            ) from None
        except OSError as exc:
            raise LorascopeError(
                f"cannot lock {self.path} for writing ({exc.strerror or exc}); is its parent folder writable?"
            ) from None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def keep_files(self, names: Iterable[str]) -> None:
        """Carry these files or folders of ours into the new folder too (decided after the stage was
        opened)."""
        self.keep = list(names)
        self._stage_ours()

    def _prepare(self) -> None:
        self.stage.mkdir()
        self._stage_ours()

    def _stage_ours(self) -> None:
        if not self.path.is_dir():
            return
        ours = written_files(self.path)
        keep = [f for f in ours if self.mode == "update" or under(f, self.keep)]
        for name in keep:
            if under(name, self.dropped):
                continue
            src = self.path / name
            if not (src.is_file() or src.is_symlink()):
                continue
            dst = self.stage / name
            if dst.exists() or dst.is_symlink():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if self.link or src.stat().st_size >= LINK_AT:
                link_or_copy(src, dst)
            else:
                shutil.copy2(src, dst)

    def commit(self) -> None:
        """Make the stage the folder: check for clashes with files lorascope did not write, carry those files
        over, write the manifest, swap, and clean up the previous folder."""
        old_manifest = read_manifest(self.path) if self.path.is_dir() else None
        ours_old = set(old_manifest["files"]) if old_manifest else set()
        staged, _ = walk(self.stage)
        foreign: list[str] = []
        if self.path.is_dir():
            present, _ = walk(self.path)
            foreign = [f for f in present if f not in ours_old and f != MANIFEST]
        clashes = [
            f
            for f in staged
            if f in foreign or any(g.startswith(f + "/") or f.startswith(g + "/") for g in foreign)
        ]
        if clashes:
            raise LorascopeError(
                f"{self.path} holds {', '.join(clashes[:4])}{' …' if len(clashes) > 4 else ''}, which "
                f"lorascope did not write (it is not in {MANIFEST}); this run would overwrite it, so nothing "
                "was written. Move "
                "it away, or give another --out."
            )
        for name in foreign:
            link_or_copy(self.path / name, self.stage / name)
        entries = {}
        old_entries = old_manifest["files"] if old_manifest else {}
        for name in staged:
            path = self.stage / name
            if path.is_symlink():
                continue
            size = path.stat().st_size
            previous = old_entries.get(name)
            twin = self.path / name
            if previous and previous.get("bytes") == size and twin.is_file() and path.samefile(twin):
                entries[name] = previous  # hard-linked, unchanged
                continue
            entries[name] = {"bytes": size, "sha256": file_sha256(path) if size <= HASH_LIMIT else None}
            fsync(path)
        manifest = {
            "lorascope": __version__,
            "command": self.command,
            "generation": self.generation,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": self.inputs,
            "files": dict(sorted(entries.items())),
        }
        with open(self.stage / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            if durable():
                os.fsync(fh.fileno())
        fsync(self.stage, directory=True)
        self._swap()

    def _swap(self) -> None:
        if not self.path.exists():
            os.rename(self.stage, self.path)
            fsync(self.parent, directory=True)
            return
        old = self.parent / f".{self.path.name}{INTERNAL}old-{self.generation[:12]}"
        write_journal(
            self.journal, {"stage": str(self.stage), "old": str(old), "generation": self.generation}
        )
        if _exchange(self.stage, self.path):
            os.rename(self.stage, old)  # the stage's name now holds the previous folder
        else:
            os.rename(self.path, old)
            os.rename(self.stage, self.path)
        fsync(self.parent, directory=True)
        left = _cleanup_old(old, self.path)
        if left:
            self.notes.append(f"files that appeared in {self.path} while it was written are kept in {old}")
        self.journal.unlink(missing_ok=True)

    def _discard(self) -> None:
        _ACTIVE.pop(self.stage, None)
        if self.stage.exists():
            remove_stage_tree(self.stage)

    def _recover(self) -> None:
        """Finish or undo what a killed run left beside the folder (under the lock, before this run
        starts)."""
        if self.journal.is_file():
            try:
                j = json.loads(self.journal.read_text(encoding="utf-8"))
                stage, old, gen = Path(j["stage"]), Path(j["old"]), j["generation"]
            except (OSError, ValueError, KeyError, TypeError):
                raise LorascopeError(
                    f"{self.journal} (left by an interrupted lorascope run) is unreadable; "
                    f"look at {self.path} and the .{self.path.name}{INTERNAL}* folders "
                    "beside it, then remove the journal."
                ) from None
            current = read_manifest(self.path) if self.path.is_dir() else None
            # swapped: the previous folder is leftover
            if current is not None and current.get("generation") == gen:
                prev = stage if stage.is_dir() else old
                if stage.is_dir() and not old.exists():
                    os.rename(stage, old)
                    prev = old
                if prev.is_dir():
                    _cleanup_old(prev, self.path)
            elif not self.path.exists() and old.is_dir():  # between the two renames of the fallback
                if (read_manifest(stage) or {}).get("generation") == gen:
                    os.rename(stage, self.path)
                    _cleanup_old(old, self.path)
                else:
                    os.rename(old, self.path)
            self.journal.unlink(missing_ok=True)
        prefix = f".{self.path.name}{INTERNAL}stage-"
        for stale in self.parent.glob(f"{glob_escape(prefix)}*"):
            if stale.is_dir() and stale != self.stage:
                remove_stage_tree(stale)


@contextlib.contextmanager
def writing(out: str | Path, command: str, **options: Any) -> Iterator[Output]:
    """Write the folder ``out`` as one transaction: yields an ``Output`` whose ``stage`` receives every file.

    Args:
        out: the folder.
        command: what writes it (recorded in the manifest).
        **options: mode ('replace': files of ours not written now are dropped, except under ``keep``;
            'update': they are kept, except under ``drop``), keep, drop, inputs (recorded), link (stage
            files of ours as hard links; the writer must ``fresh`` what it rewrites), wait (seconds).

    Raises:
        LorascopeError: ``out`` is a file, locked by another run, or the run would overwrite a file lorascope
            did not write. Any exception inside the block leaves ``out`` as it was, with a note saying so.
    """
    tx = Output(out, command, **options).open()
    try:
        yield tx
        tx.commit()
    except BaseException as exc:
        tx._discard()
        existed = tx.path.is_dir()
        how = " (no file in it changed)" if existed else " (not created)"
        note(exc, f"{tx.path} was left as it was{how}.")
        tx._release()
        raise
    _ACTIVE.pop(tx.stage, None)
    tx._release()
    for text in tx.notes:
        print(f"note: {text}", file=sys.stderr)


def remove_written(out: str | Path, remove_folder: bool = False) -> None:
    """Undo a folder lorascope wrote: remove the files its manifest lists, the manifest and the folders left
    empty — never a file lorascope did not write — and the folder itself when ``remove_folder`` and empty."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    with writing_lock(out):
        for name in sorted(written_files(out), key=lambda n: n.count("/"), reverse=True):
            target = out / name
            if target.is_file() or target.is_symlink():
                target.unlink()
            parent = target.parent
            while parent != out:
                with contextlib.suppress(OSError):
                    parent.rmdir()
                parent = parent.parent
        (out / MANIFEST).unlink(missing_ok=True)
        if remove_folder:
            with contextlib.suppress(OSError):
                out.rmdir()


@contextlib.contextmanager
def writing_lock(out: Path) -> Iterator[None]:
    """The lock of ``out`` alone, for changes that are not a transaction (``remove_written``)."""
    tx = Output(out, "lock")
    tx._acquire()
    try:
        yield
    finally:
        tx._release()
