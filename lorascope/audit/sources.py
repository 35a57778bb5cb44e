"""The audit's loading layer: what a SOURCE path is, and reading it — config.json files, checkpoint headers,
PEFT adapter folders and, for the adapter audit, the values of adapter tensors. All file access of the audit
happens here; the rest of lorascope/audit is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import Adapter, open_store
from ..checkpoint.base import TensorRef
from ..checkpoint.peft import is_peft_folder, open_peft
from ..errors import LorascopeError
from .headers import checkpoint_shapes
from .layout import ModelShapes
from .shapes import rule_shapes

SOURCE_KINDS = ("config", "checkpoint", "adapter")
SHAPES_FROM = ("auto", "hf", "rules")


def source_kind(path: str | Path) -> str:
    """'adapter' (a PEFT folder), 'config' (a .json file or a folder with config.json) or 'checkpoint'.

    Raises:
        LorascopeError: the path does not exist.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise LorascopeError(f"{p} does not exist; give a config.json, a model folder, a checkpoint or a PEFT adapter folder.")
    if is_peft_folder(p):
        return "adapter"
    if p.is_file() and p.suffix == ".json" and not p.name.endswith(".index.json"):
        return "config"
    if p.is_dir() and (p / "config.json").is_file():
        return "config"
    return "checkpoint"


def read_config(path: str | Path) -> dict[str, Any]:
    """A config.json (or a model folder's) as a dict.

    Raises:
        LorascopeError: unreadable, not JSON, or not a JSON object.
    """
    p = Path(path).expanduser()
    p = p / "config.json" if p.is_dir() else p
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise LorascopeError(f"{p} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LorascopeError(f"{p} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise LorascopeError(f"{p} must hold a JSON object (a model config), found {type(data).__name__}.")
    return data


def _hf(config: dict[str, Any], head: str | None, where: str) -> ModelShapes:
    from .hf_shapes import available, hf_shapes

    if not available():
        raise LorascopeError("--shapes hf needs transformers: pip install 'lorascope[hf]' (or use --shapes rules).")
    return hf_shapes(config, head, where)


def _auto(config: dict[str, Any], head: str | None, where: str) -> ModelShapes:
    """transformers when installed and it knows the architecture; lorascope's own rules otherwise."""
    from .hf_shapes import available

    if available():
        try:
            return _hf(config, head, where)
        except LorascopeError as hf_error:
            try:
                return rule_shapes(config, head, where)
            except LorascopeError:
                raise hf_error from None
    return rule_shapes(config, head, where)


SHAPE_SOURCES: dict[str, Callable[[dict[str, Any], str | None, str], ModelShapes]] = {
    "auto": _auto,
    "hf": _hf,
    "rules": rule_shapes,
}


def shapes_from_config(config: dict[str, Any], shapes: str = "auto", head: str | None = None,
                       where: str = "config.json") -> ModelShapes:
    """Module shapes of the model a config describes; ``shapes`` picks transformers ('hf') or our rules."""
    if shapes not in SHAPE_SOURCES:
        raise LorascopeError(f"--shapes {shapes!r} is not known; expected one of: {', '.join(SHAPE_SOURCES)}.")
    return SHAPE_SOURCES[shapes](config, head, where)


def load_model(path: str | Path, shapes: str = "auto", head: str | None = None) -> ModelShapes:
    """Module shapes from a config.json, a model folder (its config.json) or a checkpoint's headers.

    Raises:
        LorascopeError: a missing or unreadable source, an adapter folder given as a model, an unknown architecture.
    """
    kind = source_kind(path)
    if kind == "adapter":
        raise LorascopeError(f"{path} is a PEFT adapter folder; give the base model's config.json or folder here.")
    if kind == "config":
        p = Path(path).expanduser()
        return shapes_from_config(read_config(p), shapes, head, str(p / "config.json" if p.is_dir() else p))
    store = open_store(path)
    infos = {k: (tuple(store.info(k).shape), store.info(k).is_float) for k in store.keys()}
    return checkpoint_shapes(infos)


def load_adapter(path: str | Path) -> Adapter:
    """A PEFT LoRA or DoRA adapter folder, opened lazily (headers only).

    Raises:
        LorascopeError: the adapter holds modules of another family (the audit counts LoRA factors).
    """
    adapter = open_peft(Path(path).expanduser())
    other = [f for f in adapter.families if f not in ("lora", "dora")]
    if other:
        families = ", ".join(adapter.families)
        raise LorascopeError(f"{adapter.path} is a {families} adapter; the parameter audit counts LoRA and DoRA "
                             "adapters only (lorascope spectrum reads the other families).")
    return adapter


@dataclass(frozen=True)
class TensorStats:
    """What the adapter audit needs from a tensor's values."""

    numel: int
    all_zero: bool
    nan: int
    inf: int


def tensor_stats(ref: TensorRef) -> TensorStats:
    values = ref.load_numpy(np.float32, finite=False)  # counted here, not refused
    return TensorStats(int(values.size), bool(not values.any()), int(np.isnan(values).sum()), int(np.isinf(values).sum()))


def scan_adapter(adapter: Adapter) -> dict[str, TensorStats]:
    """Values of every adapter tensor (LoRA factors, DoRA magnitudes, saved modules, vectors), by stored key."""
    refs: dict[str, TensorRef] = {}
    for m in adapter.modules:
        for ref in (m.left, m.right, m.magnitude):
            if ref is not None:
                refs[ref.key] = ref
    for ref in (*adapter.dense.values(), *adapter.vectors.values()):
        refs[ref.key] = ref
    return {key: tensor_stats(ref) for key, ref in refs.items()}
