"""LoRA and DoRA: ΔW = s·B@A (Hu et al. 2021, Eq. 3) and DoRA's magnitude-and-direction update (Liu et al. 2024, Eq. 5).

Parts: ``up`` (B, m×r) and ``down`` (A, r×n), arranged by the reader so ΔW (m, n) = s · up @ down whatever
the layer kind (an embedding's factors are transposed; conv factors flattened to (out, in·kh·kw)); DoRA adds
``magnitude``, one value per output feature (PEFT's ``lora_magnitude_vector``) or, where the format says so,
per input feature (``params['dora_axis'] == 'in'``).
"""

from __future__ import annotations

from typing import Any

from ..errors import LorascopeError
from ..linalg import Dense, LowRank
from .family import Family, Tensors, register


def _lora(d, t: Tensors) -> LowRank:
    return LowRank(t["up"], t["down"], d.module.scale)


def _lora_params(d) -> int:
    m, n = d.shape
    return d.module.tensor_rank * (m + n)


LORA = register(Family(
    name="lora",
    parts=("up", "down"),
    formula="s · B @ A, s = α / r (α / √r with rsLoRA)",
    reference="Hu et al. 2021, Eq. 3; PEFT LoraLayer.get_delta_weight; Kalajdzievski 2023 (rsLoRA)",
    needs_base=False,
    form="LowRank",
    build=_lora,
    params=_lora_params,
))


def dora_update(w0: Any, up: Any, down: Any, magnitude: Any, scale: float, axis: str = "out",
                where: str = "DoRA module") -> Any:
    """ΔW = m ⊙ (W0 + sBA) / ‖W0 + sBA‖ − W0 (Liu et al. 2024, Eq. 5) for torch tensors.

    The norm runs over each output row of the (out, in) weight when ``axis`` is 'out' (PEFT's
    ``lora_magnitude_vector``: one value per output feature, the paper's column norm of the transposed
    layout), over each input column when 'in' (LyCORIS ``dora_scale`` with ``wd_on_output=False``).

    Raises:
        LorascopeError: the magnitude does not have one entry per row (or column).
    """
    import torch

    merged = w0 + scale * (up @ down)  # (m, r) @ (r, n) -> (m, n)
    dim, count = (1, merged.shape[0]) if axis == "out" else (0, merged.shape[1])
    norms = torch.linalg.vector_norm(merged, dim=dim, keepdim=True)  # (m, 1) or (1, n)
    mag = magnitude.reshape(-1)
    if mag.shape[0] != count:
        raise LorascopeError(
            f"{where}: the DoRA magnitude has {mag.shape[0]} entries but the weight has {count} "
            f"{'output' if axis == 'out' else 'input'} features"
        )
    mag = mag.reshape(-1, 1) if axis == "out" else mag.reshape(1, -1)
    return mag / norms * merged - w0


def _dora(d, t: Tensors) -> Dense:
    m = d.module
    delta = dora_update(t["base"], t["up"], t["down"], t["magnitude"], m.scale, m.params.get("dora_axis", "out"),
                        d.name)
    return Dense(delta)


def _dora_params(d) -> int:
    m, n = d.shape
    return _lora_params(d) + (m if d.module.params.get("dora_axis", "out") == "out" else n)


DORA = register(Family(
    name="dora",
    parts=("up", "down", "magnitude"),
    formula="m ⊙ (W0 + s·B@A) / ‖W0 + s·B@A‖ − W0, the norm per output row (PEFT) or input column",
    reference="Liu et al. 2024, Eq. 5; PEFT DoraLinearLayer; LyCORIS dora_scale (wd_on_output)",
    needs_base=True,
    form="Dense",
    build=_dora,
    numpy=False,
    params=_dora_params,
))
