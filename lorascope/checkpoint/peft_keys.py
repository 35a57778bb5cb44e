"""The key grammar every PEFT type shares, and the registry of readers by ``peft_type``.

A saved key is ``<module>.<part>[.<adapter name>][.weight|.bias]`` (``part_pattern``); ``group_parts`` groups
a file's keys by module, ``Leftovers`` keeps what is no module's part (full tensors saved beside the adapter,
1-D tensors, parts of another type) with a warning each, and ``finish`` builds the ``Adapter`` or raises one
error listing every incomplete module. ``peft_type(name, parts, check)`` registers a reader.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import LorascopeError, raise_collected
from ..names import strip_adapter_prefix
from .base import Adapter, AdapterModule, TensorRef
from .tensor_store import TensorStore

Reader = Callable[[Path, TensorStore, dict[str, Any]], Adapter]
Check = Callable[[dict[str, Any], Path], Any]
# peft_type -> reader of a folder of that type (peft_lora, peft_types, peft_multiplicative)
PEFT_TYPES: dict[str, Reader] = {}
# peft_type -> its config check, run before the weights are opened (raises LorascopeError)
CONFIG_CHECKS: dict[str, Check] = {}
# every tensor part name some PEFT type stores, by type: a part of another type is claimed by no module here
PARTS_BY_TYPE: dict[str, frozenset[str]] = {}


def peft_type(name: str, parts: Iterable[str], check: Check | None = None) -> Callable[[Reader], Reader]:
    """Register ``reader`` for adapters whose config says ``peft_type`` = ``name``, storing these part names;
    ``check`` validates the config before the weights are read."""

    def register(reader: Reader) -> Reader:
        PEFT_TYPES[name] = reader
        PARTS_BY_TYPE[name] = frozenset(parts)
        if check is not None:
            CONFIG_CHECKS[name] = check
        return reader

    return register


def part_pattern(parts: Iterable[str]) -> re.Pattern:
    """``<module>.<part>[.<adapter name>][.weight|.bias]`` for these part names (longest first)."""
    names = "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True))
    return re.compile(
        rf"^(?P<module>.+?)\.(?P<part>{names})"
        r"(?:\.(?P<adapter>[^.]+?))??(?:\.(?P<param>weight|bias))?$"
    )


class Leftovers:
    """Tensors that are no module's part: full tensors saved beside the adapter, 1-D tensors, and warnings."""

    def __init__(self, store: TensorStore, kind: str):
        self.store = store
        self.kind = kind
        self.dense: dict[str, TensorRef] = {}
        self.vectors: dict[str, TensorRef] = {}
        self.warnings: list[dict[str, str]] = []
        self.other_types: set[str] = set()  # PEFT types whose parts were found here

    def add(self, key: str) -> None:
        name = re.sub(r"\.modules_to_save\.[^.]+", "", strip_adapter_prefix(key))
        info = self.store.info(key)
        other = _other_type(name, self.kind)
        if other is not None:
            self.other_types.add(other)
            self.warnings.append(
                {
                    "name": name,
                    "reason": f"a part of PEFT type {other} in this {self.kind} "
                    "adapter: claimed by no module of the adapter's type; skipped",
                }
            )
        elif "trainable_tokens_" in name:
            self.warnings.append(
                {
                    "name": name,
                    "reason": "rows of an embedding trained through "
                    "trainable_token_indices; not a weight update lorascope reads, skipped",
                }
            )
        elif ".base_layer." in f".{name}.":
            self.warnings.append(
                {
                    "name": name,
                    "reason": "copy of a base weight saved with the adapter "
                    "(PEFT save_embedding_layers); not part of the update, skipped",
                }
            )
        elif not info.is_float:
            self.warnings.append({"name": name, "reason": f"non-float tensor ({info.dtype}) skipped"})
        elif len(info.shape) >= 2:
            self.dense[name.removesuffix(".weight")] = TensorRef(self.store, key, "flatten")
        else:
            self.vectors[name] = TensorRef(self.store, key)


def _other_type(name: str, kind: str) -> str | None:
    """The PEFT type whose part name appears in ``name`` when it is not ``kind``'s, else None."""
    pieces = set(name.split("."))
    for other, parts in PARTS_BY_TYPE.items():
        if other != kind and pieces & (parts - PARTS_BY_TYPE.get(kind, frozenset())):
            return other
    return None


def group_parts(store: TensorStore, pattern: re.Pattern, leftovers: Leftovers) -> dict[str, dict[str, str]]:
    """module name -> {part (+ '.bias' for a bias) -> key}; keys the pattern does not match go to leftovers.

    Raises:
        LorascopeError: one module has the same part twice (a file holding several adapters).
    """
    parts: dict[str, dict[str, str]] = defaultdict(dict)
    for key in store.keys():
        m = pattern.match(key)
        if m is None:
            leftovers.add(key)
            continue
        module = strip_adapter_prefix(m["module"])
        part = m["part"] if m["param"] != "bias" else m["part"] + ".bias"
        if part in parts[module]:
            raise LorascopeError(
                f"{store.path}: module {module} has two {part} tensors ({parts[module][part]} and {key}); "
                "the file holds more than one adapter. Save each adapter separately."
            )
        parts[module][part] = key
    return parts


def finish(
    path: Path,
    fmt: str,
    store: TensorStore,
    cfg: dict[str, Any],
    modules: list[AdapterModule],
    leftovers: Leftovers,
    problems: list[str],
    warnings: list[dict[str, str]],
    what: str,
) -> Adapter:
    """The Adapter, or one error listing every incomplete module, or a refusal when no module was found."""
    raise_collected(problems, f"{store.path}: incomplete or inconsistent {what} modules:")
    if not modules:
        others = " / ".join(sorted(leftovers.other_types))
        hint = (
            (
                f" Its tensors are parts of PEFT type {others}: the config's peft_type says otherwise; "
                "lorascope reads the type the config declares."
            )
            if others
            else ""
        )
        raise LorascopeError(
            f"{store.path} holds no {what} modules: no tensor names end in the parts a {what} adapter stores "
            f"(found {len(store.keys())} tensors such as {', '.join(store.keys()[:3])}).{hint}"
        )
    warnings = warnings + leftovers.warnings
    return Adapter(path, fmt, store, modules, leftovers.dense, leftovers.vectors, cfg, warnings)
