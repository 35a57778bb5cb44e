"""PEFT adapter folders (adapter_config.json + adapter_model.safetensors or .bin), read by ``peft_type``.

``PEFT_TYPES`` maps each peft_type to its reader; this file holds the folder and config handling, the key
grammar shared by every type, and the LoRA reader (with DoRA, grouped convolutions and LoRA on fused MoE
experts through ``target_parameters``); ``peft_types.py`` holds the other types. Each reader groups the
saved tensors into ``AdapterModule``s of one ``lorascope.delta`` family, with the scale PEFT applies.

LoRA scale s = lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora``; ``rank_pattern`` and
``alpha_pattern`` override r and alpha per module, their keys matched as PEFT's ``get_pattern_key``
does: the first key k for which ``(.*\\.)?(k)$`` matches the module's name in the model.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import LorascopeError, raise_collected
from ..limits import read_json
from ..names import strip_adapter_prefix
from .base import Adapter, AdapterModule, TensorRef
from .store import TensorStore, member, open_file

CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")

# <module>.<part>[.<adapter name>][.weight|.bias]
_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[^.]+?))??(?:\.(?P<param>weight|bias))?$"
)
ADAPTER_PARTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}

Reader = Callable[[Path, TensorStore, dict[str, Any]], Adapter]
Check = Callable[[dict[str, Any], Path], Any]
# peft_type -> reader of a folder of that type; LORA here, the others in peft_types.py
PEFT_TYPES: dict[str, Reader] = {}
# peft_type -> its config check, run before the weights are opened (raises LorascopeError)
CONFIG_CHECKS: dict[str, Check] = {}
# every tensor part name some PEFT type stores, by type: a part of another type is claimed by no module here
PARTS_BY_TYPE: dict[str, frozenset[str]] = {"LORA": frozenset(ADAPTER_PARTS)}


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


def is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(path: Path) -> dict[str, Any]:
    """The folder's adapter_config.json, checked to be an object of a peft_type lorascope reads.

    Raises:
        LorascopeError: invalid JSON, not an object, or a peft_type without a ΔW (prompt tuning …).
    """
    cfg_path = path / CONFIG
    cfg = read_json(cfg_path, "a PEFT adapter config")
    if not isinstance(cfg, dict):
        raise LorascopeError(f"{cfg_path} must hold a JSON object, found {type(cfg).__name__}.")
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind not in PEFT_TYPES:
        raise LorascopeError(
            f"{cfg_path} describes an adapter of type {kind} (peft_type={cfg.get('peft_type')!r}). lorascope "
            "reads the PEFT types whose update is a weight change ΔW: "
            f"{', '.join(sorted(PEFT_TYPES))}; an adapter of "
            f"type {kind} has no ΔW to take a spectrum of. Merge it into the base model and compare base and "
            "merged checkpoints instead (lorascope spectrum BASE MERGED)."
        )
    return cfg


def positive(cfg: dict[str, Any], field: str, where: Path, integer: bool = False, default: Any = None) -> Any:
    """cfg[field] (or ``default`` when absent) checked finite and positive (an integer where asked).

    Raises:
        LorascopeError: naming the file, the key and the value.
    """
    value = cfg.get(field, default)
    kinds = (int,) if integer else (int, float)
    if value is None and default is None and field not in cfg:
        raise LorascopeError(f"{where / CONFIG}: '{field}' is missing.")
    if not _positive(value, kinds):
        kind = "integer" if integer else "number"
        raise LorascopeError(f"{where / CONFIG}: '{field}' must be a positive {kind}, found {value!r}.")
    return value


def _positive(value: Any, kinds: tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value) and value > 0


def patterns(cfg: dict[str, Any], where: Path, integer: dict[str, bool]) -> None:
    """rank_pattern / alpha_pattern (as named in ``integer``): objects of positive numbers, valid regexes.

    Raises:
        LorascopeError: naming the key and the value.
    """
    problems = []
    for field, whole in integer.items():
        table = cfg.get(field)
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(f"'{field}' must be a JSON object mapping name patterns to numbers, "
                            f"found {table!r}")
            continue
        for key, value in table.items():
            kinds = (int,) if whole else (int, float)
            if not _positive(value, kinds):
                problems.append(f"'{field}' entry {key!r} must be a positive "
                                f"{'integer' if whole else 'number'}, found {value!r}")
    raise_collected(problems, f"{where / CONFIG} is not a usable config:")


def pattern_key(patterns: dict[str, Any], name: str) -> str | None:
    """The first pattern key matching ``name`` the way PEFT's get_pattern_key matches it, or None."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return key
        except re.error as exc:
            raise LorascopeError(f"rank_pattern/alpha_pattern key {key!r} is not a valid regular expression: "
                                 f"{exc}") from None
    return None


def pattern_values(cfg: dict[str, Any], name: str, r_field: str = "r", alpha_field: str = "lora_alpha",
                   alpha_default: float = 8) -> tuple[int, float]:
    """(r, alpha) of one module under PEFT's rank_pattern / alpha_pattern rules."""
    rank_pattern = cfg.get("rank_pattern") or {}
    alpha_pattern = cfg.get("alpha_pattern") or {}
    rk = pattern_key(rank_pattern, name)
    ak = pattern_key(alpha_pattern, name)
    r = int(rank_pattern[rk]) if rk is not None else int(cfg[r_field])
    alpha = float(alpha_pattern[ak]) if ak is not None else float(cfg.get(alpha_field, alpha_default))
    return r, alpha


def module_scale(cfg: dict[str, Any], name: str) -> tuple[int, float, float]:
    """(r, alpha, s) for one LoRA module under PEFT's rules."""
    r, alpha = pattern_values(cfg, name)
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return r, alpha, scale


def weight_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return member(path, name, f"the PEFT adapter folder {path}")
    raise LorascopeError(
        f"{path} has an {CONFIG} but no adapter weights: expected one of {', '.join(WEIGHT_FILES)} in the "
        "folder."
    )


def open_peft(path: Path) -> Adapter:
    """Open a PEFT adapter folder of any supported ``peft_type``.

    Raises:
        LorascopeError: the config or the weights are not a usable adapter of the type the config declares.
    """
    path = Path(path)
    cfg = read_config(path)
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind in CONFIG_CHECKS:
        CONFIG_CHECKS[kind](cfg, path)
    store = open_file(weight_file(path))
    return PEFT_TYPES[kind](path, store, cfg)


# ---- the key grammar every type shares ------------------------------------------------------------


def part_pattern(parts: Iterable[str]) -> re.Pattern:
    """``<module>.<part>[.<adapter name>][.weight|.bias]`` for these part names (longest first)."""
    names = "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True))
    return re.compile(rf"^(?P<module>.+?)\.(?P<part>{names})"
                      r"(?:\.(?P<adapter>[^.]+?))??(?:\.(?P<param>weight|bias))?$")


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
            self.warnings.append({"name": name, "reason": f"a part of PEFT type {other} in this {self.kind} "
                                  "adapter: claimed by no module of the adapter's type; skipped"})
        elif "trainable_tokens_" in name:
            self.warnings.append({"name": name, "reason": "rows of an embedding trained through "
                                  "trainable_token_indices; not a weight update lorascope reads, skipped"})
        elif ".base_layer." in f".{name}.":
            self.warnings.append({"name": name, "reason": "copy of a base weight saved with the adapter "
                                  "(PEFT save_embedding_layers); not part of the update, skipped"})
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


def finish(path: Path, fmt: str, store: TensorStore, cfg: dict[str, Any], modules: list[AdapterModule],
           leftovers: Leftovers, problems: list[str], warnings: list[dict[str, str]], what: str) -> Adapter:
    """The Adapter, or one error listing every incomplete module, or a refusal when no module was found."""
    raise_collected(problems, f"{store.path}: incomplete or inconsistent {what} modules:")
    if not modules:
        others = " / ".join(sorted(leftovers.other_types))
        hint = (f" Its tensors are parts of PEFT type {others}: the config's peft_type says otherwise; "
                "lorascope reads the type the config declares.") if others else ""
        raise LorascopeError(
            f"{store.path} holds no {what} modules: no tensor names end in the parts a {what} adapter stores "
            f"(found {len(store.keys())} tensors such as {', '.join(store.keys()[:3])}).{hint}"
        )
    warnings = warnings + leftovers.warnings
    return Adapter(path, fmt, store, modules, leftovers.dense, leftovers.vectors, cfg, warnings)


# ---- LoRA (and DoRA, grouped convolutions, fused MoE experts) ---------------------------------------------

# LoRA variants whose update PEFT applies is not s·B@A of the stored factors, by config key.
UNREAD_VARIANTS = {
    "use_qalora": "QALoRA pools the input in groups before lora_A, so its update is not B@A of the factors",
    "use_bdlora": "BD-LoRA stores block-diagonal factors reshaped at merge time",
    "kasa_config": "KaSA also truncates the base weight's smallest singular directions and adds lora_diag",
    "arrow_config": "Arrow routes each token among several adapters, so there is no single ΔW",
    "layer_replication": "layer replication duplicates base layers; module names do not address base weights",
}
# init_lora_weights values after which the adapter applies to a changed base, not the published one.
BASE_CHANGING_INITS = ("pissa", "olora", "corda")


def lora_config_checks(cfg: dict[str, Any], path: Path) -> list[dict[str, str]]:
    """Validate a LoRA config (r, alpha, patterns, variants); warnings about what the adapter applies to.

    Raises:
        LorascopeError: a non-positive or non-finite r, alpha or pattern value, or a variant not read.
    """
    positive(cfg, "r", path, integer=True)
    positive(cfg, "lora_alpha", path, default=8)
    patterns(cfg, path, {"rank_pattern": True, "alpha_pattern": False})
    for field, why in UNREAD_VARIANTS.items():
        if cfg.get(field):
            raise LorascopeError(f"{path / CONFIG} sets {field}={cfg[field]!r}: {why}, which lorascope "
                                 "does not read. Merge the adapter with PEFT and compare base and merged "
                                 "checkpoints instead.")
    warnings = []
    init = str(cfg.get("init_lora_weights", ""))
    if init.lower().startswith(BASE_CHANGING_INITS):
        warnings.append({"name": "*", "reason": f"init_lora_weights={init!r}: the adapter's ΔW is relative "
                         "to the base PEFT changed at initialization (its residual), not the original base"})
    if cfg.get("alora_invocation_tokens"):
        warnings.append({"name": "*", "reason": "aLoRA: PEFT applies ΔW = s·B@A only to tokens after the "
                         "invocation sequence; the spectra are of that ΔW"})
    return warnings


def open_lora(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT LORA folder: config checked, then its tensors grouped into modules."""
    warnings = lora_config_checks(cfg, path)
    adapter = build_adapter(path, "peft", store, cfg)
    adapter.warnings[:0] = warnings
    return adapter


def build_adapter(path: Path, fmt: str, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """Group PEFT-named tensors (lora_A/lora_B/…) into modules; everything else is a full tensor or vector.

    A module path holding ``.base_layer`` segments, or one that ``target_parameters`` names, is a LoRA on a
    parameter (PEFT ``ParamWrapper``): see ``peft_types.expert_modules``.
    """
    from .peft_types import expert_modules, targets_parameters

    leftovers = Leftovers(store, "LORA")
    parts = group_parts(store, _KEY, leftovers)
    modules: list[AdapterModule] = []
    problems: list[str] = []
    warnings: list[dict[str, str]] = []
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    wrapped: dict[str, dict[int, dict[str, str]]] = defaultdict(dict)
    for name, p in sorted(parts.items()):
        if "lora_B.bias" in p:
            leftovers.vectors[name + ".lora_B.bias"] = TensorRef(store, p["lora_B.bias"])
        depth = name.count(".base_layer")
        if depth or targets_parameters(cfg, name):
            wrapped[name.replace(".base_layer", "")][depth] = p
            continue
        module = _lora_module(name, p, store, cfg, fmt, fan_in_fan_out, problems, warnings)
        if module is not None:
            modules.append(module)
    for name, by_depth in sorted(wrapped.items()):
        modules += expert_modules(name, by_depth, store, cfg, fmt, problems, warnings)
    return finish(path, fmt, store, cfg, modules, leftovers, problems, warnings, "LoRA")


def _lora_module(name: str, p: dict[str, str], store: TensorStore, cfg: dict[str, Any], fmt: str,
                 fan_in_fan_out: bool, problems: list[str],
                 warnings: list[dict[str, str]]) -> AdapterModule | None:
    """One LoRA / DoRA module, or None with the problem recorded."""
    params: dict[str, Any] = {}
    if "lora_A" in p and "lora_B" in p:
        a, b = p["lora_A"], p["lora_B"]
        kind = "conv" if len(store.info(a).shape) > 2 else "linear"
        left, right = TensorRef(store, b, "flatten"), TensorRef(store, a, "flatten")
        if len(left.shape) != 2 or len(right.shape) != 2:
            problems.append(f"{name}: LoRA factors must be matrices (conv kernels flattened), found shapes "
                            f"{list(left.stored_shape)} and {list(right.stored_shape)}")
            return None
        per_group, rank = left.shape[1], right.shape[0]
        if kind == "conv" and 0 < per_group < rank and rank % per_group == 0:
            params["groups"] = rank // per_group  # PEFT's grouped lora_B: (out, r/G, 1, …)
    elif "lora_embedding_A" in p and "lora_embedding_B" in p:
        # PEFT Embedding: A (r, num_embeddings), B (dim, r); ΔW (num, dim) = s·(B @ A)ᵀ = s·Aᵀ @ Bᵀ
        a, b = p["lora_embedding_A"], p["lora_embedding_B"]
        kind = "embedding"
        left, right = TensorRef(store, a, "transpose"), TensorRef(store, b, "transpose")
        if len(left.shape) != 2 or len(right.shape) != 2:
            problems.append(f"{name}: embedding LoRA factors must be matrices, found shapes "
                            f"{list(left.stored_shape)} and {list(right.stored_shape)}")
            return None
    else:
        found = ", ".join(sorted(p))
        problems.append(f"{name}: has {found} but not both LoRA factors (lora_A and lora_B)")
        return None
    rank = right.shape[0]
    if left.shape[1] * params.get("groups", 1) != rank:
        problems.append(f"{name}: factor shapes {left.shape} and {right.shape} do not chain (ranks differ)")
        return None
    if "r" in cfg:
        r, alpha, scale = module_scale(cfg, name)
    else:
        r, alpha, scale = rank, None, 1.0
    if r != rank:  # PEFT builds the layer at the config's r and refuses these factors (size mismatch)
        key = "rank_pattern" if r != cfg.get("r") else "r"
        problems.append(f"{name}: the factors have rank {rank} but adapter_config.json's {key} gives r={r}; "
                        "the scale α/r is ambiguous and PEFT cannot load these factors")
        return None
    parts = {"up": left, "down": right}
    if "lora_magnitude_vector" in p:
        if params.get("groups"):
            problems.append(f"{name}: DoRA on a grouped convolution is not read")
            return None
        parts["magnitude"] = TensorRef(store, p["lora_magnitude_vector"])
    family = "dora" if "magnitude" in parts else "lora"
    shape = (left.shape[0], right.shape[1])
    kernel = tuple(right.stored_shape[2:]) if kind == "conv" else ()
    return AdapterModule(name, family, parts, shape, r, alpha, scale, kind, fmt, fan_in_fan_out, kernel,
                         params)


PEFT_TYPES["LORA"] = open_lora
CONFIG_CHECKS["LORA"] = lora_config_checks

from . import peft_types  # noqa: E402,F401 - registers the other peft_types
