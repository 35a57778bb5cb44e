"""adapter_config.json: its numbers checked, PEFT's pattern rules and scale, and the PEFT adapter folder
written.

Reading: ``positive`` and ``patterns`` check what a config declares (finite, positive; valid regexes);
``pattern_key``/``pattern_values``/``module_scale`` apply PEFT's ``rank_pattern`` and ``alpha_pattern`` as its
``get_pattern_key`` does: the first key k for which ``(.*\\.)?(k)$`` matches the module's name in the model.
LoRA scale s = lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora`` (Kalajdzievski 2023).

Writing: ``lora_config`` is the one LoRA ``adapter_config.json`` lorascope writes (``LoraConfig``'s fields),
and ``write_adapter`` the one writer of a PEFT adapter folder — ``adapter_config.json`` and
``adapter_model.safetensors`` — used by the export (``lorascope.rank.export``) and the trainer
(``lorascope.train.runs``). The readers of every ``peft_type`` are ``lorascope.checkpoint.peft``'s.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import LorascopeError, raise_collected

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"  # what write_adapter writes; readers take any of WEIGHT_FILES
WEIGHT_FILES = (WEIGHTS, "adapter_model.bin", "adapter_model.pt")


def positive_number(value: Any, what: str, integer: bool = False, why: str = "") -> Any:
    """``value`` when it is a finite number above 0 (an integer where asked; never a bool); else a
    LorascopeError saying "<what> must be a positive integer|number, found <value>" and ``why``.

    The one check of every rank, alpha, scale and count a config or a file declares (PEFT configs, diffusers'
    LoraConfig headers, kohya's ``.alpha`` tensors and ``ss_network_alpha``).
    """
    if not _positive(value, (int,) if integer else (int, float)):
        kind = "integer" if integer else "number"
        raise LorascopeError(f"{what} must be a positive {kind}, found {value!r}{why}")
    return value


def positive(cfg: dict[str, Any], field: str, where: Path, integer: bool = False, default: Any = None) -> Any:
    """cfg[field] (or ``default`` when absent) checked finite and positive (an integer where asked).

    Raises:
        LorascopeError: naming the file, the key and the value.
    """
    value = cfg.get(field, default)
    if value is None and default is None and field not in cfg:
        raise LorascopeError(f"{where / CONFIG}: '{field}' is missing.")
    return positive_number(value, f"{where / CONFIG}: '{field}'", integer, ".")


def _positive(value: Any, kinds: tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value) and value > 0


def pattern_problems(cfg: dict[str, Any], integer: dict[str, bool]) -> list[str]:
    """What is wrong with the pattern tables named in ``integer`` (rank_pattern: integers, alpha_pattern:
    numbers): each must be an object of positive values."""
    problems = []
    for field, whole in integer.items():
        table = cfg.get(field)
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(
                f"'{field}' must be a JSON object mapping name patterns to numbers, found {table!r}"
            )
            continue
        for key, value in table.items():
            if not _positive(value, (int,) if whole else (int, float)):
                problems.append(
                    f"'{field}' entry {key!r} must be a positive "
                    f"{'integer' if whole else 'number'}, found {value!r}"
                )
    return problems


def patterns(cfg: dict[str, Any], where: Path, integer: dict[str, bool]) -> None:
    """rank_pattern / alpha_pattern (as named in ``integer``): objects of positive numbers.

    Raises:
        LorascopeError: naming the key and the value.
    """
    raise_collected(pattern_problems(cfg, integer), f"{where / CONFIG} is not a usable config:")


def pattern_key(patterns: dict[str, Any], name: str) -> str | None:
    """The first pattern key matching ``name`` the way PEFT's get_pattern_key matches it, or None."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return key
        except re.error as exc:
            raise LorascopeError(
                f"rank_pattern/alpha_pattern key {key!r} is not a valid regular expression: {exc}"
            ) from None
    return None


def pattern_values(
    cfg: dict[str, Any],
    name: str,
    r_field: str = "r",
    alpha_field: str = "lora_alpha",
    alpha_default: float = 8,
) -> tuple[int, float]:
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


def lora_config(
    r: int,
    lora_alpha: float,
    target_modules: list[str] | str,
    *,
    fan_in_fan_out: bool = False,
    lora_dropout: float = 0.0,
    use_rslora: bool = False,
    use_dora: bool = False,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """``adapter_config.json`` of a LoRA adapter as PEFT's ``LoraConfig`` reads it (peft_type LORA).

    ``more`` adds fields as they are (``layers_to_transform``, …). Raises ValueError for an r or alpha that
    is not a finite positive number (``positive``'s rule), so no writer emits a config its own reader refuses.
    """
    for field, value, whole in (("r", r, True), ("lora_alpha", lora_alpha, False)):
        if not _positive(value, (int,) if whole else (int, float)):
            raise ValueError(f"{field} must be a positive {'integer' if whole else 'number'}, got {value!r}")
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": target_modules,
        "use_rslora": use_rslora,
        "use_dora": use_dora,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": dict(rank_pattern or {}),
        "alpha_pattern": dict(alpha_pattern or {}),
        **more,
    }


def write_adapter(
    folder: str | Path,
    config: dict[str, Any],
    tensors: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a PEFT adapter folder: ``adapter_config.json`` (indented, sorted as given) and
    ``adapter_model.safetensors`` (torch tensors under PEFT's saved key names, contiguous, on the CPU).

    The safetensors header's metadata is ``{"format": "pt"}`` plus ``metadata``, with its keys sorted, so the
    same tensors give the same bytes (``sort_metadata``). Writes into ``folder`` as it is; a caller that
    needs an atomic write runs this inside a transaction's stage (``lorascope.outputs.writing``).

    Returns:
        ``folder``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", **(metadata or {})})
    sort_metadata(folder / WEIGHTS)
    with open(folder / CONFIG, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return folder


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, so the same tensors give the same bytes.

    safetensors serializes ``__metadata__`` from a hash map whose order changes from process to process; the
    rewritten header holds the same entries and keeps its length (padding spaces), so no data moves.
    """
    import struct

    with open(path, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        if len(header.get("__metadata__") or {}) < 2:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            return
        fh.seek(8)
        fh.write(text + b" " * (n - len(text)))
