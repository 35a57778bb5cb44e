"""Limits on what a file may claim, checked before any memory is allocated for it.

Every size read from a file — a safetensors header length, a tensor's shape × dtype, a JSON or YAML file's
length and nesting, a config's layer or expert count, a list's length — is compared here with the file's
own size and with a sane bound, so a hostile or damaged file ends as a ``LorascopeError`` naming the file,
key and value instead of an allocation that grows without bound. The bounds are far above every real
checkpoint (the largest public models have under 200 layers, widths under 2¹⁸ and configs of a few KB).

``read_limit()`` is the largest tensor read whole into memory (``LORASCOPE_MAX_READ`` bytes, e.g. ``8G``;
default half the machine's available memory); ``TensorStore.get_rows`` reads larger matrices in row blocks.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import LorascopeError
from .units import human_bytes, parse_bytes

MAX_SAFETENSORS_HEADER = 100_000_000  # bytes; the safetensors library's own MAX_HEADER_SIZE
MAX_JSON_BYTES = 64 * 1024 * 1024  # config.json, adapter_config.json, shard indexes (real ones: < 1 MB)
MAX_YAML_NODES = 100_000  # nodes of a claims file after alias expansion (a real one: a few hundred)
MAX_LIST = 1_000_000  # entries of any list or mapping read from a config (target_modules, rank_pattern, …)
MAX_LAYERS = 10_000  # num_hidden_layers and its aliases
MAX_DIM = 1 << 24  # hidden, intermediate and vocabulary sizes, head counts, expert counts
MAX_SHARDS = 100_000  # files one index may name

# config keys that are counts or sizes: key -> bound
CONFIG_COUNTS: dict[str, int] = {
    **dict.fromkeys(
        (
            "num_hidden_layers",
            "n_layer",
            "n_layers",
            "num_layers",
            "num_decoder_layers",
            "num_encoder_layers",
            "encoder_layers",
            "decoder_layers",
        ),
        MAX_LAYERS,
    ),
    **dict.fromkeys(
        (
            "hidden_size",
            "n_embd",
            "d_model",
            "dim",
            "intermediate_size",
            "n_inner",
            "ffn_dim",
            "hidden_dim",
            "vocab_size",
            "max_position_embeddings",
            "n_positions",
            "num_attention_heads",
            "n_head",
            "n_heads",
            "num_key_value_heads",
            "head_dim",
            "num_local_experts",
            "num_experts",
            "n_routed_experts",
            "moe_intermediate_size",
            "num_labels",
        ),
        MAX_DIM,
    ),
}


def _available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux, else total physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def read_limit() -> int:
    """The largest tensor, in bytes, read whole into memory (``LORASCOPE_MAX_READ``, default half the
    available)."""
    env = os.environ.get("LORASCOPE_MAX_READ")
    if env:
        try:
            return parse_bytes(env, "LORASCOPE_MAX_READ")
        except ValueError as exc:
            raise LorascopeError(str(exc)) from None
    return max(_available_memory() // 2, 64 << 20)


def check_read(nbytes: int, what: str) -> None:
    """Refuse to read ``nbytes`` whole when it exceeds ``read_limit()``, naming the tensor and the numbers."""
    limit = read_limit()
    if nbytes > limit:
        raise LorascopeError(
            f"{what} is {human_bytes(nbytes)} ({nbytes} bytes); reading it whole needs more than the "
            f"{human_bytes(limit)} allowed (LORASCOPE_MAX_READ, default half the available memory). Raise "
            "LORASCOPE_MAX_READ if the machine has the memory, or read it in row blocks "
            "(TensorStore.get_rows)."
        )


# ---- JSON ------------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(text: str | bytes, where: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity literals; nesting deeper than Python's recursion limit
    (about 1000 levels; real files nest under 6) is refused, not a crash.

    Raises:
        LorascopeError: naming ``where`` and what is wrong.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LorascopeError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _Duplicate as exc:
        raise LorascopeError(
            f"{where} gives the key {exc.key!r} twice; JSON readers disagree on which one "
            "counts, "
            "so the file is refused. Remove one of them."
        ) from None
    except RecursionError:
        raise LorascopeError(
            f"{where} nests JSON objects or arrays too deep to read (over ~1000 levels); "
            "no real "
            "config, index or header does. The file is damaged or hostile."
        ) from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise LorascopeError(f"{where} is not valid JSON ({' '.join(str(exc).split())[:200]}).") from None


def read_json(path: Path, what: str = "", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file read with the limits of ``loads_json`` and at most ``max_bytes`` long (``read_text``).

    Raises:
        LorascopeError: missing, a folder, unreadable, too long, not UTF-8 or not strict JSON.
    """
    return loads_json(read_text(path, what or "a JSON file", max_bytes), str(path))


def read_text(path: Path, what: str, max_bytes: int, kind: str = "JSON config or index") -> str:
    """A UTF-8 text file at most ``max_bytes`` long (a ``kind`` of file, for messages; ``what`` says what the
    file should be).

    Raises:
        LorascopeError: missing, not a regular file, unreadable, too long or not UTF-8, naming the file.
    """
    path = Path(path)
    label = str(path)  # messages read "<path> is not valid JSON …"; ``what`` says what the file should be
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise LorascopeError(f"{label} is not a regular file; expected {what}.")
        if size > max_bytes:
            raise LorascopeError(
                f"{label} is {human_bytes(size)}, more than the {human_bytes(max_bytes)} a {kind} may be; it "
                f"is not {what} lorascope can read safely."
            )
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise LorascopeError(f"{label} does not exist.") from None
    except OSError as exc:
        raise LorascopeError(f"{label} could not be read: {exc.strerror or exc}.") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LorascopeError(f"{label} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None


# ---- numbers from configs --------------------------------------------------------------------------------


def check_count(value: Any, key: str, where: str, limit: int) -> None:
    """Refuse a count or size that is not an integer in [0, limit] (JSON 1e12 is a float, and refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > limit:
        raise LorascopeError(
            f"{where}: {key!r} is {value!r}; expected a whole number from 0 to {limit:,}. "
            "No real model has more; the config is damaged or hostile."
        )


def check_config_sizes(config: dict[str, Any], where: str) -> None:
    """Every count or size a model config gives (``CONFIG_COUNTS``), and every list's length, within bounds.

    Nested configs (``text_config``, ``vision_config``) are checked too.
    """
    for key, value in config.items():
        if key in CONFIG_COUNTS and value is not None:
            check_count(value, key, where, CONFIG_COUNTS[key])
        elif isinstance(value, dict):
            if len(value) > MAX_LIST:
                raise LorascopeError(
                    f"{where}: {key!r} has {len(value):,} entries; at most {MAX_LIST:,} are read."
                )
            check_config_sizes(value, f"{where} ({key})")
        elif isinstance(value, list) and len(value) > MAX_LIST:
            raise LorascopeError(
                f"{where}: {key!r} has {len(value):,} entries; at most {MAX_LIST:,} are read."
            )


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- YAML ------------------------------------------------------------------------------------------------


def _refuse_duplicate_keys(node: Any, where: str) -> None:
    """A mapping that gives one key twice is ambiguous (PyYAML keeps the last value silently): refused,
    naming the key and both lines. Merge keys (``<<``) may repeat."""
    seen: dict[str, int] = {}
    for k, _ in node.value:
        if not hasattr(k, "style") or k.tag == "tag:yaml.org,2002:merge":  # a scalar key only
            continue
        line = k.start_mark.line + 1
        if k.value in seen:
            raise LorascopeError(
                f"{where} gives the key {k.value!r} twice in one mapping (lines {seen[k.value]} and {line}); "
                "YAML readers would silently keep one of them. Keep the one you mean and delete the other."
            )
        seen[k.value] = line


def load_yaml(text: str, where: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """``yaml.safe_load`` of ``text`` after counting its nodes with every alias expanded.

    Aliases let a few bytes stand for exponentially many nodes ("billion laughs"); the node graph is composed
    first (aliases share nodes, so this is small) and its expanded size counted with memoization, so a file
    that expands past ``max_nodes`` — or refers to itself — is refused before anything is built from it.

    Raises:
        LorascopeError: too many nodes after expansion, a recursive alias, a key given twice in one mapping,
            or invalid YAML.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise LorascopeError(f"{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise LorascopeError(
            f"{where} nests YAML too deep to read; the file is damaged or hostile."
        ) from None
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise LorascopeError(
                f"{where} holds a YAML alias that refers to itself (a recursive structure); "
                "a claims file is a plain list of mappings."
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(node, where)
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        if total > max_nodes:
            raise LorascopeError(
                f"{where} expands to more than {max_nodes:,} YAML nodes once its aliases "
                "(*name) "
                "are expanded; a claims file needs a few hundred. The file is refused."
            )
        return total

    if root is not None:
        try:
            size(root)
        except RecursionError:
            raise LorascopeError(
                f"{where} nests YAML too deep to read; the file is damaged or hostile."
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LorascopeError(f"{where} is not valid YAML: {exc}") from None
