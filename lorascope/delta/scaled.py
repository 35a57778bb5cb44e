"""Updates that rescale the base weight: IA3 (Liu et al. 2022, (IA)³). ΔW is dense and needs the base.

Part ``scale`` holds the learned vector l, one value per input feature (``params['axis'] == 'in'``: PEFT's
feedforward modules, stored (1, in)) or per output feature ('out': stored (out, 1)). PEFT stores the
multiplier itself, W' = l ⊙ W, so ΔW = (l − 1) ⊙ W0 (``params['stored'] == 'multiplier'``); a format that
stores the increment, W' = (1 + l) ⊙ W, declares 'increment' (LyCORIS ``IA3Module``: ``weight`` with
``on_input`` saying the axis, merged as W · (1 + l), ``_ia3_weight``). A conv layer's input scale repeats over the
kernel: ΔW's columns are in·kh·kw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LorascopeError
from ..linalg import Dense
from ..linalg.forms import is_torch
from .family import Family, Tensors, register


def ia3_update(w0: Any, scale: Any, axis: str, stored: str, where: str = "IA3 module") -> Any:
    """ΔW (m, n) = diag(v) W0 (axis 'out') or W0 diag(v) (axis 'in'), v = l − 1 or l by ``stored``.

    Raises:
        LorascopeError: l's length fits neither the rows nor (per kernel element) the columns of W0.
    """
    v = scale.reshape(-1)
    if stored == "multiplier":
        v = v - 1
    m, n = w0.shape
    if axis == "out":
        if v.shape[0] != m:
            raise LorascopeError(f"{where}: the IA3 vector has {v.shape[0]} entries, the weight {m} output features")
        return v.reshape(-1, 1) * w0
    if n % v.shape[0] != 0:
        raise LorascopeError(f"{where}: the IA3 vector has {v.shape[0]} entries, the weight {n} input columns")
    per = n // v.shape[0]  # kernel elements per input channel (1 for a linear layer)
    if per > 1:
        v = v.repeat_interleave(per) if is_torch(v) else np.repeat(v, per)
    return w0 * v.reshape(1, -1)


def _ia3(d, t: Tensors) -> Dense:
    p = d.module.params
    return Dense(ia3_update(t["base"], t["scale"], p.get("axis", "out"), p.get("stored", "multiplier"), d.name))


def _ia3_params(d) -> int:
    return d.parts["scale"].store.info(d.parts["scale"].key).numel


IA3 = register(Family(
    name="ia3",
    parts=("scale",),
    formula="(l − 1) ⊙ W0, l scaling each output row or (feedforward) each input column",
    reference="Liu et al. 2022, (IA)³, §3.3; PEFT IA3Layer.merge; LyCORIS ia3.py (increment)",
    needs_base=True,
    form="Dense",
    build=_ia3,
    numpy=False,
    params=_ia3_params,
    layouts=(frozenset({"scale"}),),
))
