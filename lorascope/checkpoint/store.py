"""Opening tensor files: the format from a file's first bytes, paths kept inside their folder, shard indexes.

``open_file`` sniffs a file's content (not its extension) and returns its store (``safetensors_file``,
``torch_file``, or ``MultiFileStore`` over the shards an index names); ``member`` keeps every file a
checkpoint names inside the checkpoint's own folder; ``FOLDER_WEIGHTS`` is the order in which a model
folder's weight files are looked for. The store classes are importable from here, as they always were.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from ..limits import MAX_SAFETENSORS_HEADER, MAX_SHARDS, read_json
from ..manifest import file_sha256
from .dtypes import (
    DTYPE_BITS,
    FLOAT_DTYPES,
    NUMPY_DTYPES,
    NUMPY_NATIVE_TORCH,
    OTHER_SAFETENSORS_DTYPES,
    SAFETENSORS_DTYPES,
    TensorInfo,
    bytes_to_numpy,
)
from .safetensors_file import SafetensorsFile, library_check, read_safetensors_header
from .tensor_store import MultiFileStore, TensorStore
from .torch_file import TorchFile, load_torch_state

__all__ = [
    "DTYPE_BITS",
    "FLOAT_DTYPES",
    "FOLDER_WEIGHTS",
    "MultiFileStore",
    "NUMPY_DTYPES",
    "NUMPY_NATIVE_TORCH",
    "OTHER_SAFETENSORS_DTYPES",
    "SAFETENSORS_DTYPES",
    "SafetensorsFile",
    "TensorInfo",
    "TensorStore",
    "TorchFile",
    "bytes_to_numpy",
    "file_sha256",
    "file_size",
    "library_check",
    "load_torch_state",
    "member",
    "open_file",
    "open_index",
    "read_safetensors_header",
    "sniff",
]

# Weight files looked for in a model folder, in order. Globs pick up every match (unindexed shards).
FOLDER_WEIGHTS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "*.safetensors.index.json",
    "*.safetensors",
    "*.bin.index.json",
    "*.bin",
    "*.pt",
    "*.pth",
)
_MAX_HEADER = MAX_SAFETENSORS_HEADER


# ---- opening files -------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: Path) -> str:
    """'safetensors', 'torch', 'index' or 'unknown' from a file's first bytes, not its extension."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    # safetensors first: a header length whose low byte is 0x80 looks like a pickle's protocol opcode
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 1 < n <= _MAX_HEADER and head[8:].lstrip()[:1] in (b"{", b"") and 8 + n <= path.stat().st_size:
            return "safetensors"
    if head.startswith(ZIP_MAGIC) or head[:1] == b"\x80":
        return "torch"
    if head.lstrip()[:1] == b"{":
        return "index"
    return "unknown"


def open_file(path: Path) -> TensorStore:
    kind = sniff(path)
    if kind == "safetensors":
        return SafetensorsFile(path)
    if kind == "torch":
        return TorchFile(path)
    if kind == "index":
        return open_index(path)
    raise LorascopeError(
        f"{path} is neither a safetensors file, a torch checkpoint nor a sharded index "
        "(recognized from the file's first bytes, not its name)."
    )


def member(folder: Path, name: Any, what: str) -> Path:
    """The file ``name`` inside ``folder``: a relative path that resolves, after symlinks, inside the folder.

    A Hugging Face hub cache snapshot (``…/snapshots/<revision>/``) is the one documented exception: its files
    are symlinks into the repository's ``…/blobs/`` folder, and may resolve there.

    Raises:
        LorascopeError: an absolute path, a path with '..', a name that is not text, or one that resolves
            outside the folder.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise LorascopeError(f"{what} names a file {name!r}; expected a file name inside {folder}.")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
        raise LorascopeError(
            f"{what} names {name!r}, which is outside its folder {folder}; every file a "
            "checkpoint names must lie in the checkpoint's own folder."
        )
    root = folder.resolve()
    target = (folder / rel).resolve()
    if not (target == root or root in target.parents or _hub_blob(root, target)):
        raise LorascopeError(
            f"{what} names {name!r}, which resolves (after symlinks) to {target}, outside "
            f"its folder {root}; every file a checkpoint names must lie in the checkpoint's "
            "own folder."
        )
    return folder / rel


def _hub_blob(root: Path, target: Path) -> bool:
    """Whether ``target`` is a blob of the Hugging Face hub cache repository whose snapshot folder is
    ``root``."""
    return root.parent.name == "snapshots" and target.parent == root.parent.parent / "blobs"


def open_index(path: Path) -> MultiFileStore:
    """A sharded checkpoint from its ``*.index.json`` (model.safetensors.index.json,
    pytorch_model.bin.index.json).

    Every shard must be a tensor file inside the index's folder (``member``); an index naming itself or
    another
    index is refused, so no index can lead to a cycle.
    """
    index = read_json(path, "a sharded-checkpoint index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise LorascopeError(
            f"{path} is not a sharded-checkpoint index: expected a JSON object with a 'weight_map' "
            "mapping tensor names to shard file names."
        )
    names = sorted(set(weight_map.values()))
    if len(names) > MAX_SHARDS:
        raise LorascopeError(f"{path} names {len(names):,} shard files; at most {MAX_SHARDS:,} are read.")
    shards = [member(path.parent, n, f"{path} (weight_map)") for n in names]
    missing = [n for n, f in zip(names, shards) if not f.is_file()]
    if missing:
        raise LorascopeError(f"{path} names shard files that are not there: {', '.join(missing[:5])}")
    me = path.resolve()
    for name, shard in zip(names, shards):
        if shard.resolve() == me:
            raise LorascopeError(f"{path} names itself ({name!r}) as a shard; a shard must be a tensor file.")
        if sniff(shard) == "index":
            raise LorascopeError(
                f"{path} names {name!r} as a shard, but that is an index too; indexes do "
                "not nest "
                "(a shard must be a safetensors or torch file)."
            )
    parts = [open_file(f) for f in shards]
    return MultiFileStore(path, parts, weight_map)


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
