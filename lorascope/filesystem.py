"""The file-system steps output transactions are made of: fsync, hard links, the atomic exchange of two
folders (Linux ``renameat2(RENAME_EXCHANGE)``), journals, removing a stage, clearing the previous folder
after a swap, and replacing one file atomically. ``lorascope.outputs`` puts them together; nothing here takes
a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from .errors import LorascopeError
from .manifest import INTERNAL, MANIFEST, file_sha256, walk, written_files


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def durable() -> bool:
    """Whether staged files are fsynced before the swap (``LORASCOPE_FSYNC``, default 1). The swap is atomic
    either way — a killed process cannot leave a mix — but only fsync makes it survive a power loss."""
    return os.environ.get("LORASCOPE_FSYNC", "1").strip().lower() not in ("0", "false", "no", "off")


def fsync(path: Path, directory: bool = False) -> None:
    if not durable():
        return
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def write_journal(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove_stage_tree(folder: Path) -> None:
    """Remove a stage: every entry in it is a file this run wrote or a link to a file still in the folder."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(folder)


def cleanup_old(old: Path, new: Path) -> list[str]:
    """Remove the previous folder after a swap: its files of ours, and links whose twin is in the new folder.

    A file lorascope did not write and the new folder lacks (one created during the run) is moved into the
    new folder, or — where a file of that name exists there — left in ``old``. Returns what was left.
    """
    ours = written_files(old)
    files, dirs = walk(old)
    left = []
    for name in files:
        src, twin = old / name, new / name
        if name in ours or name == MANIFEST:
            src.unlink()
        elif twin.exists() or twin.is_symlink():
            same = (src.is_symlink() and twin.is_symlink() and os.readlink(src) == os.readlink(twin)) or (
                not src.is_symlink()
                and not twin.is_symlink()
                and twin.is_file()
                and (os.path.samefile(src, twin) or file_sha256(src) == file_sha256(twin))
            )
            if same:
                src.unlink()
            else:
                left.append(name)
        else:
            twin.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, twin)
    with contextlib.suppress(OSError):
        (old / MANIFEST).unlink(missing_ok=True)
    for lock in old.rglob(f"*{INTERNAL}lock"):  # lock files of subfolders' own transactions: empty, not data
        with contextlib.suppress(OSError):
            lock.unlink()
    for name in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            (old / name).rmdir()
    with contextlib.suppress(OSError):
        old.rmdir()
    return left


def atomic_file(path: str | Path, data: bytes) -> Path:
    """Replace one file atomically: written beside it under a temporary name, fsynced, then renamed over
    it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{INTERNAL}tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def wait_seconds() -> float:
    """``LORASCOPE_WAIT``: how many seconds a run waits for another run's lock (default 0: refuse at once)."""
    text = os.environ.get("LORASCOPE_WAIT", "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise LorascopeError(f"LORASCOPE_WAIT={text!r} is not a number of seconds; give e.g. 0 or 600.")
    return value
