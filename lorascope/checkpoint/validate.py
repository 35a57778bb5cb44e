"""Scales, ranks and alphas a file declares: finite and positive, or a LorascopeError naming the file and key.

A LoRA update is s·B@A with s = alpha / r (or alpha / √r); an alpha of Infinity or NaN, or a rank of 0, gives
NaN spectra or a division by zero, so such values are refused where they are read, not discovered later.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import LorascopeError


def positive_finite(value: Any, key: str, where: str, integer: bool = False) -> Any:
    """``value`` when it is a finite number > 0 (a whole number when ``integer``), else a LorascopeError.

    Args:
        value: the value read from the file.
        key: its key in the file (``lora_alpha``, ``rank_pattern['q_proj']``, a tensor name).
        where: the file.
        integer: require an int (JSON ``8``, not ``8.0`` or ``true``).

    Returns:
        ``value`` unchanged.
    """
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer and not isinstance(value, int):
        is_number = False
    if not is_number or not math.isfinite(value) or value <= 0:
        kind = "a positive whole number" if integer else "a finite positive number"
        raise LorascopeError(f"{where}: {key} is {value!r}; it must be {kind} (a LoRA scale is alpha / r, "
                             "so a zero, negative, infinite or NaN value has no meaning). Fix the value in "
                             "the file.")
    return value


def alpha_tensor(values: Any, key: str, where: str, rank: int) -> float:
    """A kohya / diffusers ``.alpha`` tensor's value: exactly one finite number ≥ 0.

    An alpha of 0 means alpha = r (scale 1), as sd-scripts' ``LoRAModule`` reads it
    (``alpha = lora_dim if alpha is None or alpha == 0``).
    """
    flat = values.reshape(-1)
    if flat.size != 1:
        raise LorascopeError(f"{where}: {key} holds {flat.size} values; a LoRA alpha is one number.")
    alpha = float(flat[0])
    if alpha == 0:
        return float(rank)
    return float(positive_finite(alpha, key, where))


def metadata_alpha(text: str | None, where: str) -> float | None:
    """``ss_network_alpha`` from a file's metadata: None when absent or not a number; refused when not finite
    and positive."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return float(positive_finite(value, "metadata ss_network_alpha", where))
