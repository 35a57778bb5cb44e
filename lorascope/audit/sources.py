"""The audit's loading layer: what a SOURCE path is, and reading it — config.json files, checkpoint headers,
PEFT adapter folders and, for the adapter audit, the values of adapter tensors. All file access of the audit
happens here; the rest of lorascope/audit is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import Adapter, open_store
from ..checkpoint.base import TensorRef
from ..checkpoint.peft import is_peft_folder, open_peft
from ..errors import LorascopeError
from ..limits import check_config_sizes, loads_json, read_json
from .headers import bnb_layout, checkpoint_shapes
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
    data = read_json(p, "a model config")
    if not isinstance(data, dict):
        raise LorascopeError(f"{p} must hold a JSON object (a model config), found {type(data).__name__}.")
    check_config_sizes(data, str(p))
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
    bnb = bnb_layout(infos)
    quantized = {w: tuple(infos[w][0]) for w in bnb.eight_bit}
    for weight, state in bnb.four_bit.items():
        shape = quant_state_shape(store, weight, state) if state else None
        if shape is not None:
            quantized[weight] = shape
    return checkpoint_shapes(infos, quantized, bnb, str(path))


QUANT_STATE_BYTES = 4096  # far above any real state (about 200 bytes); anything longer is not one


def quant_state_shape(store, weight: str, state: str) -> tuple[int, int] | None:
    """The logical (out, in) shape a bitsandbytes 4-bit weight's ``quant_state.bitsandbytes__*`` records,
    checked against its packed tensor (two 4-bit codes per byte of the storage dtype), or None when it holds
    none."""
    info = store.info(state)
    if info.dtype != "uint8" or len(info.shape) != 1 or info.numel > QUANT_STATE_BYTES:
        return None
    try:
        data = loads_json(bytes(store.get_numpy(state).tolist()), f"{store.path}: {state}")
    except LorascopeError:
        return None  # not a quant state: the caller refuses the weight with its own message
    shape = data.get("shape") if isinstance(data, dict) else None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d > 0 for d in shape)):
        return None
    packed = store.info(weight)
    per_element = 2 * ITEMSIZE.get(packed.dtype, 1)  # 4-bit codes per stored element (quant_storage)
    if -(-shape[0] * shape[1] // per_element) != packed.numel:
        raise LorascopeError(f"{store.path}: {state} records the shape {shape}, which does not fit the "
                             f"packed tensor {weight} ({packed.dtype} {list(packed.shape)}, {per_element} "
                             "4-bit codes each); the file is damaged or not a bitsandbytes checkpoint.")
    return shape[0], shape[1]


ITEMSIZE = {"uint8": 1, "int8": 1, "float16": 2, "bfloat16": 2, "int16": 2, "float32": 4, "int32": 4,
            "float64": 8, "int64": 8}


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
