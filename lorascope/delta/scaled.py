"""Updates that rescale the base weight: IA3 (Liu et al. 2022, (IA)³). ΔW is dense and needs the base.

Part ``scale`` holds the learned vector l, one value per input feature (``params['axis'] == 'in'``: PEFT's
feedforward modules, stored (1, in)) or per output feature ('out': stored (out, 1)). PEFT stores the
multiplier itself, W' = l ⊙ W, so ΔW = (l − 1) ⊙ W0 (``params['stored'] == 'multiplier'``); a format that
stores the increment, W' = (1 + l) ⊙ W, declares 'increment' (LyCORIS ``IA3Module``: ``weight`` with
``on_input`` saying the axis, merged as W · (1 + l), ``_ia3_weight``). A conv layer's input scale repeats over
the kernel: ΔW's columns are in·kh·kw. In a grouped conv (``params['groups']`` = G, from the base: l has one
value per input channel, the base weight in/G per group) output channel o of group g scales its kernel's
channels by l[g·in/G … (g+1)·in/G] (PEFT ``ia3._ConvNd._get_ia3_scaling_for_weight``).

ΔW's shape is the base weight's: a module read without its base has 0 for the dimension l does not tell,
and ``fit_base`` completes it (checking l against the axis) once the base is known.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import LorascopeError
from ..linalg import Dense
from ..linalg.forms import is_torch
from .family import Family, Tensors, register


def ia3_update(
    w0: Any, scale: Any, axis: str, stored: str, where: str = "IA3 module", groups: int = 1
) -> Any:
    """ΔW (m, n) = diag(v) W0 (axis 'out') or W0 diag(v) (axis 'in'), v = l − 1 or l by ``stored``.

    With ``groups`` G > 1 (axis 'in' of a grouped conv) W0 is (out, in/G·kernel) and output channel o of
    group g is scaled by v[g·in/G … (g+1)·in/G], each repeated over the kernel.

    Raises:
        LorascopeError: l's length fits neither the rows nor (per kernel element) the columns of W0.
    """
    v = scale.reshape(-1)
    if stored == "multiplier":
        v = v - 1
    m, n = w0.shape
    if axis == "out":
        if v.shape[0] != m:
            raise LorascopeError(
                f"{where}: the IA3 vector has {v.shape[0]} entries, the weight {m} output features"
            )
        return v.reshape(-1, 1) * w0
    if groups > 1:
        return w0 * _grouped_columns(v, groups, m, n)
    if n % v.shape[0] != 0:
        raise LorascopeError(
            f"{where}: the IA3 vector has {v.shape[0]} entries, the weight {n} input columns"
        )
    per = n // v.shape[0]  # kernel elements per input channel (1 for a linear layer)
    if per > 1:
        v = v.repeat_interleave(per) if is_torch(v) else np.repeat(v, per)
    return w0 * v.reshape(1, -1)


def _grouped_columns(v: Any, groups: int, m: int, n: int) -> Any:
    """The (m, n) scaling of a grouped conv: row o holds group o // (m/G)'s slice of v, per kernel element."""
    per_group = v.shape[0] // groups  # input channels per group
    kernel = n // per_group
    v = v.reshape(groups, per_group)  # (G, in/G)
    if is_torch(v):
        cols = v.repeat_interleave(kernel, dim=1)  # (G, in/G·kernel)
        return cols.repeat_interleave(m // groups, dim=0)  # (m, n)
    return np.repeat(np.repeat(v, kernel, axis=1), m // groups, axis=0)


def _ia3(d, t: Tensors) -> Dense:
    p = d.module.params
    axis, stored = p.get("axis", "out"), p.get("stored", "multiplier")
    return Dense(ia3_update(t["base"], t["scale"], axis, stored, d.name, int(p.get("groups", 1))))


def _ia3_fit(m, ref) -> Any:
    """ΔW takes the base weight's shape; l must have one entry per output row, or per input channel."""
    rows, cols = ref.shape
    size = m.parts["scale"].store.info(m.parts["scale"].key).numel
    stored = ref.stored_shape
    if m.params.get("axis", "out") == "out":
        if size != rows:
            return f"the IA3 vector has {size} entries but the base weight has {rows} output features"
        return dataclasses.replace(m, shape=(rows, cols))
    conv = len(stored) > 2
    channels = stored[1] if conv else cols  # a conv's input channels per group, else in
    groups = size // channels if size % channels == 0 else 0
    if groups < 1 or (groups > 1 and (not conv or rows % groups)):
        return (
            f"the IA3 vector has {size} entries but the base weight (stored {list(stored)}) has "
            f"{channels} input channels"
        )
    params = {**m.params, "groups": groups} if groups > 1 else m.params
    return dataclasses.replace(m, shape=(rows, cols), params=params)


def _ia3_params(d) -> int:
    return d.parts["scale"].store.info(d.parts["scale"].key).numel


IA3 = register(
    Family(
        name="ia3",
        parts=("scale",),
        formula="(l − 1) ⊙ W0, l scaling each output row or (feedforward) each input column",
        reference="Liu et al. 2022, (IA)³, §3.3; PEFT IA3Layer.merge; LyCORIS ia3.py (increment)",
        needs_base=True,
        form="Dense",
        build=_ia3,
        numpy=False,
        params=_ia3_params,
        fit_base=_ia3_fit,
        part_sets=(frozenset({"scale"}),),
    )
)
