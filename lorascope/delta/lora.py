"""LoRA and DoRA: ΔW = s·B@A (Hu et al. 2021, Eq. 3) and DoRA's magnitude-and-direction update (Liu et al. 2024, Eq. 5).

Parts: ``up`` (B, m×r) and ``down`` (A, r×n), arranged by the reader so ΔW (m, n) = s · up @ down whatever
the layer kind (an embedding's factors are transposed; conv factors flattened to (out, in·kh·kw)). A LyCORIS
LoCon conv module with a Tucker core adds ``mid`` (r, r, kh, kw) and stores ``down`` as (r, in) (a 1×1
kernel): ΔW (flattened) = s · up @ (mid ×₂ down), still rank r and kept factored (``tucker_right``).

DoRA adds ``magnitude``: one value per output feature (PEFT's ``lora_magnitude_vector``, ai-toolkit's
``magnitude``, LyCORIS ``dora_scale`` with ``wd_on_output=True``) or, where the format says so
(``params['dora_axis'] == 'in'``), per input feature — per input *channel* of a conv layer, the norm then
running over the output rows and the kernel (LyCORIS ``dora_scale`` with ``wd_on_output=False``). The update
decomposed is LoRA's by default, or that of ``params['inner']`` (LoHa, LoKr: LyCORIS ``weight_decompose``).
"""

from __future__ import annotations

from typing import Any

from ..errors import LorascopeError
from ..linalg import Dense, LowRank
from .family import FAMILIES, Family, Tensors, register
from .lycoris import tucker_right


def _lora(d, t: Tensors) -> LowRank:
    right = tucker_right(t["mid"], t["down"]) if "mid" in t else t["down"]  # (r, n)
    return LowRank(t["up"], right, d.module.scale)


def _stored_numel(d) -> int:
    return sum(ref.store.info(ref.key).numel for ref in d.parts.values())


def _lora_params(d) -> int:
    if "mid" in d.parts:  # the Tucker core and a 1×1 down factor: count what is stored
        return _stored_numel(d)
    m, n = d.shape
    return d.module.tensor_rank * (m + n)


LORA = register(Family(
    name="lora",
    parts=("up", "down"),
    optional=("mid",),
    formula="s · B @ A, s = α / r (α / √r with rsLoRA); a conv Tucker core M: s · B @ (M ×₂ A)",
    reference="Hu et al. 2021, Eq. 3; PEFT LoraLayer.get_delta_weight; Kalajdzievski 2023 (rsLoRA); "
    "LyCORIS locon.py (lora_mid, rebuild_tucker)",
    needs_base=False,
    form="LowRank",
    build=_lora,
    params=_lora_params,
    layouts=(frozenset({"up", "down"}), frozenset({"up", "down", "mid"})),
    decomposable=True,
))


def weight_decompose(w0: Any, update: Any, magnitude: Any, axis: str = "out",
                     where: str = "DoRA module") -> Any:
    """ΔW = m ⊙ (W0 + ΔW′) / ‖W0 + ΔW′‖ − W0 (Liu et al. 2024, Eq. 5) for torch tensors, ΔW′ undecomposed.

    Args:
        w0: the base weight (m, n) in ΔW's orientation (conv kernels flattened: n = in·kh·kw).
        update: ΔW′ (m, n), e.g. s·B@A.
        magnitude: one value per output row (``axis`` 'out') or per input channel ('in'), any shape.
        axis: 'out' — the norm of each output row (PEFT, LyCORIS ``wd_on_output=True``); 'in' — the norm over
            the output rows (and, for a conv layer, the kernel positions) of each input channel (LyCORIS
            ``wd_on_output=False``: its columns of the flattened weight are channel-major, kh·kw per channel).

    Raises:
        LorascopeError: the magnitude has not one entry per row (or a whole number of columns per entry).
    """
    import torch

    merged = w0 + update
    m, n = merged.shape
    mag = magnitude.reshape(-1)
    if axis == "out":
        if mag.shape[0] != m:
            raise LorascopeError(f"{where}: the DoRA magnitude has {mag.shape[0]} entries but the weight has "
                                 f"{m} output features")
        norms = torch.linalg.vector_norm(merged, dim=1, keepdim=True)  # (m, 1)
        return mag.reshape(-1, 1) / norms * merged - w0
    channels = mag.shape[0]
    if channels == 0 or n % channels:
        raise LorascopeError(f"{where}: the DoRA magnitude has {channels} entries, which does not divide the "
                             f"weight's {n} input columns")
    per = n // channels  # kernel positions per input channel (1 for a linear layer)
    norms = torch.linalg.vector_norm(merged.reshape(m, channels, per), dim=(0, 2))  # (channels,)
    column_scale = (mag / norms).repeat_interleave(per).reshape(1, -1)  # (1, n)
    return column_scale * merged - w0


def dora_update(w0: Any, up: Any, down: Any, magnitude: Any, scale: float, axis: str = "out",
                where: str = "DoRA module") -> Any:
    """ΔW = m ⊙ (W0 + sBA) / ‖W0 + sBA‖ − W0 (Liu et al. 2024, Eq. 5), torch tensors (``weight_decompose``).

    Raises:
        LorascopeError: the magnitude does not fit the weight (``weight_decompose``).
    """
    return weight_decompose(w0, scale * (up @ down), magnitude, axis, where)  # (m, r) @ (r, n) -> (m, n)


def _inner(d) -> Family:
    return FAMILIES[d.module.params.get("inner", "lora")]


def _dora(d, t: Tensors) -> Dense:
    update = _inner(d).build(d, t).to_dense()  # the undecomposed ΔW′ (m, n), one module at a time
    axis = d.module.params.get("dora_axis", "out")
    return Dense(weight_decompose(t["base"], update, t["magnitude"], axis, d.name))


DORA = register(Family(
    name="dora",
    parts=("up", "down", "magnitude"),
    formula="m ⊙ (W0 + ΔW′) / ‖W0 + ΔW′‖ − W0, ΔW′ = s·B@A (or LoHa/LoKr), the norm per output row (PEFT) or "
    "input channel",
    reference="Liu et al. 2024, Eq. 5; PEFT DoraLinearLayer; LyCORIS weight_decompose (dora_scale, "
    "wd_on_output); "
    "ai-toolkit DoRAModule (magnitude)",
    needs_base=True,
    form="Dense",
    build=_dora,
    numpy=False,
    params=_stored_numel,
))
