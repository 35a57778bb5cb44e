"""Open any supported checkpoint lazily: names, shapes and dtypes without reading tensor data.

``open_checkpoint(path)`` detects the format from content (not file extension) and returns dense
``Weights`` or a LoRA ``Adapter``; ``format=`` forces one of ``FORMATS``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from . import hub
from .base import Adapter, AdapterModule, TensorRef, Weights
from .configs import model_config
from .gguf import GGUFFile, is_gguf, open_gguf
from .lora_files import FILE_FORMATS, detect_format, open_lora_file, refuse_unsupported
from .peft import is_peft_folder, open_peft
from .store import (
    FOLDER_WEIGHTS,
    MultiFileStore,
    TensorInfo,
    TensorStore,
    file_sha256,
    file_size,
    member,
    open_file,
    open_index,
    sniff,
)

__all__ = [
    "Adapter",
    "AdapterModule",
    "TensorInfo",
    "TensorRef",
    "TensorStore",
    "Weights",
    "FORMATS",
    "open_checkpoint",
    "open_store",
    "describe_input",
    "sniff",
]


def open_store(path: str | Path) -> TensorStore:
    """The tensors of a file or folder as one lazily-read store."""
    path = _existing(path)
    if path.is_file():
        return GGUFFile(path) if is_gguf(path) else open_file(path)
    for pattern in FOLDER_WEIGHTS:
        found = sorted(h for h in path.glob(pattern) if h.is_file())
        hits = [member(path, h.name, f"the checkpoint folder {path}") for h in found]
        if not hits:
            continue
        if pattern.endswith(".json"):
            return open_index(hits[0])
        if len(hits) == 1:
            return open_file(hits[0])
        return MultiFileStore(path, [open_file(h) for h in hits])
    raise LorascopeError(
        f"{path} is a folder without weights: expected model.safetensors (or a sharded "
        "model.safetensors.index.json), pytorch_model.bin, or an adapter_config.json with adapter weights."
    )


def _existing(path: str | Path, revision: str | None = None) -> Path:
    """An existing local path, absolute; a Hugging Face Hub id becomes its snapshot folder in the cache
    (``hub.resolve``: a local path that reads like an id wins, with a ``HubNotice`` saying so)."""
    found = hub.resolve(path, revision)
    if found.note:
        warnings.warn(found.note, hub.HubNotice, stacklevel=3)
    return found.path.resolve()  # absolute: worker processes and Ray tasks read the same files


def _open_weights(path: Path) -> Weights:
    store = open_store(path)
    fmt = "hf" if path.is_dir() and (path / "config.json").is_file() else store.format
    return Weights(path, fmt, store, model_config(path))


def _open_auto(path: Path) -> Weights | Adapter:
    if is_peft_folder(path):
        return open_peft(path)
    store = open_store(path)
    if isinstance(store, GGUFFile):
        return open_gguf(path, store)
    refuse_unsupported(path, store.keys())
    if detect_format(store.keys()) is not None:
        return open_lora_file(path, store)
    fmt = "hf" if path.is_dir() and (path / "config.json").is_file() else store.format
    return Weights(path, fmt, store, model_config(path))


def _forced_lora(fmt: str) -> Callable[[Path], Adapter]:
    def opener(path: Path) -> Adapter:
        store = open_store(path)
        adapter = open_lora_file(path, store, fmt)
        if not adapter.modules:
            raise LorascopeError(
                f"{path} was given as {fmt} but holds no {fmt} LoRA factors (found tensors such as "
                f"{', '.join(store.keys()[:3])}); leave --format out to detect the format from the content."
            )
        return adapter

    return opener


def _forced_gguf(path: Path) -> Weights | Adapter:
    if not (path.is_file() and is_gguf(path)):
        raise LorascopeError(
            f"{path} was given as gguf but does not start with the GGUF magic bytes; leave --format out to "
            "detect the format from the content."
        )
    return open_gguf(path)


def _forced_peft(path: Path) -> Adapter:
    if not is_peft_folder(path):
        raise LorascopeError(
            f"{path} was given as peft but is not a PEFT adapter folder: expected a folder holding "
            "adapter_config.json and adapter_model.safetensors (or adapter_model.bin); leave --format out to "
            "detect the format."
        )
    return open_peft(path)


FORMATS: dict[str, Callable[[Path], Weights | Adapter]] = {
    "auto": _open_auto,
    "safetensors": _open_weights,
    "torch": _open_weights,
    "hf": _open_weights,
    "peft": _forced_peft,
    "gguf": _forced_gguf,
    **{name: _forced_lora(name) for name in FILE_FORMATS},
}


def open_checkpoint(
    path: str | Path, format: str | None = None, revision: str | None = None
) -> Weights | Adapter:
    """Open a checkpoint or adapter; the format is detected from content unless given.

    Args:
        path: a file or folder, or a Hugging Face Hub id (``org/name``, ``hf://org/name``) read through the
            local Hub cache, fetching only the config and weight files a format needs (``checkpoint.hub``).
        format: one of ``FORMATS`` (default: detected).
        revision: the Hub revision (branch, tag or commit) of a Hub id.

    Raises:
        LorascopeError: the path is missing, unreadable, or not in a supported format; a Hub id that cannot be
            resolved (not found, gated, not cached while offline).
    """
    path = _existing(path, revision)
    fmt = format or "auto"
    if fmt not in FORMATS:
        raise LorascopeError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    opened = FORMATS[fmt](path)
    if fmt in ("safetensors", "torch") and not opened.store.format.startswith(fmt):
        raise LorascopeError(f"{path} was given as {fmt} but its content is {opened.store.format}.")
    mismatched = [
        m.params["config_rank"] for m in getattr(opened, "modules", ()) if "config_rank" in m.params
    ]
    if mismatched:
        raise LorascopeError(
            f"{path}: {len(mismatched)} module(s) hold factors of another rank than the config gives (e.g. "
            f"{mismatched[0]}); PEFT cannot load them and the scale α/r is ambiguous. Correct r or "
            "rank_pattern in adapter_config.json or in the lora_adapter_metadata header (lorascope audit "
            "ADAPTER lists every such module of a PEFT folder)."
        )
    return opened


def describe_input(role: str, ckpt: Weights | Adapter, hash_limit: int = 64 * 1024 * 1024) -> dict[str, Any]:
    """The summary.json entry of one input: path, format, sizes and sha256 of small files."""
    files = ckpt.store.files()
    entry: dict[str, Any] = {
        "role": role,
        "path": str(ckpt.path),
        "format": ckpt.format,
        "bytes": sum(file_size(f) for f in files),
        "n_tensors": len(ckpt.store.keys()),
        "files": [],
    }
    for f in files:
        item: dict[str, Any] = {"path": str(f), "bytes": file_size(f), "sha256": None}
        if item["bytes"] <= hash_limit:
            item["sha256"] = file_sha256(f)
        entry["files"].append(item)
    entry["sha256"] = entry["files"][0]["sha256"] if len(files) == 1 else None
    from_hub = hub.origin(ckpt.path)
    if from_hub is not None:
        entry["hub"] = from_hub  # repo id and commit of a Hugging Face Hub snapshot
    if isinstance(ckpt, Adapter):
        entry["modules"] = len(ckpt.modules)
        if ckpt.format == "peft":
            cfg = ckpt.config
            entry["config"] = {
                k: cfg.get(k)
                for k in (
                    "r",
                    "lora_alpha",
                    "use_rslora",
                    "use_dora",
                    "target_modules",
                    "fan_in_fan_out",
                    "base_model_name_or_path",
                )
                if k in cfg
            }
        elif ckpt.format == "gguf":
            entry["config"] = dict(
                ckpt.config
            )  # general.type, adapter.type, adapter.lora.alpha, architecture
    return entry
