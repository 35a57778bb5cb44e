"""The manifest of a folder lorascope wrote: which files are its own, their size and sha256, checked on
reading.

``.lorascope-manifest.json`` lists every file a transaction wrote (``lorascope.outputs``), so lorascope knows
its files from the manifest, never from their names, and ``verify`` tells a file changed since.
``file_sha256`` is the one file hash lorascope computes (the manifest's, and the input hashes summary.json
records).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = ".lorascope-manifest.json"
INTERNAL = ".lorascope-"  # lock files, stages, journals and leftovers carry this in their names
HASH_LIMIT = 64 * 1024 * 1024  # files up to this size get a sha256 in the manifest; larger ones their size


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a folder lorascope wrote, or None (no manifest, or one that is not lorascope's)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def written_files(folder: Path) -> set[str]:
    """Paths (relative, '/'-separated) of the files lorascope wrote in ``folder``, from its manifest."""
    manifest = read_manifest(folder)
    return set(manifest["files"]) if manifest else set()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path, names: Iterable[str]) -> list[str]:
    """Which of ``names`` differ from what the folder's manifest recorded (empty without a manifest)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return []
    bad = []
    for name in names:
        entry = manifest["files"].get(name)
        path = Path(folder) / name
        if entry is None or not path.is_file():
            bad.append(name)
        elif entry.get("sha256") and (
            path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry["sha256"]
        ):
            bad.append(name)
    return bad


def edited_message(folder: Path) -> str | None:
    """Why a run may not write ``folder``: files the manifest lists whose bytes changed since lorascope wrote
    them are the user's now, and a run would replace or remove them. None when there are none."""
    edited = [n for n in verify(folder, written_files(folder)) if (Path(folder) / n).is_file()]
    if not edited:
        return None
    names = ", ".join(edited[:5]) + (f" and {len(edited) - 5} more" if len(edited) > 5 else "")
    it = "it" if len(edited) == 1 else "them"
    return (
        f"--out {folder}: {names} changed since lorascope wrote {it} (the bytes differ from {MANIFEST}); "
        f"this run would replace or remove {it}. Move the edited file(s) out of the folder, or give another "
        "--out."
    )


def walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files and symlinks, folders) under ``folder`` as relative '/'-paths, internal names left out — except
    the manifest of a subfolder written by a transaction of its own (a demo's runs/), which travels with
    it."""
    files, dirs = [], []
    for root, subdirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        subdirs[:] = [d for d in subdirs if INTERNAL not in d and not os.path.islink(os.path.join(root, d))]
        for d in subdirs:
            dirs.append((rel / d).as_posix())
        for name in names:
            if INTERNAL in name and not (name == MANIFEST and rel != Path(".")):
                continue
            files.append((rel / name).as_posix())
        for d in os.listdir(root):
            full = os.path.join(root, d)
            if os.path.islink(full) and os.path.isdir(full) and INTERNAL not in d:
                files.append((rel / d).as_posix())
    return files, dirs


def under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes)
