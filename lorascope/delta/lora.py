"""The LoRA family and its relatives: every update that is a low-rank product of stored factors.

- ``lora``: ΔW = s·B@A (Hu et al. 2021, Eq. 3). Parts ``up`` (B, m×r) and ``down`` (A, r×n), arranged by the
  reader so ΔW (m, n) = s · up @ down whatever the layer kind (an embedding's factors are transposed; conv
  factors flattened to (out, in·kh·kw)). A grouped convolution (``params['groups']`` = G > 1) stores PEFT's
  grouped lora_B, (out, r/G): output channel o of group g = o // (out/G) reads only rank components
  g·r/G … (g+1)·r/G, so B is the block-diagonal (out, r) matrix of those blocks (PEFT ``lora.Conv2d``).
  A LyCORIS LoCon conv module with a Tucker core adds ``mid`` (r, r, kh, kw) and stores ``down`` as (r, in) (a
  1×1 kernel): ΔW (flattened) = s · up @ (mid ×₂ down), still rank r and kept factored (``tucker_right``).
- ``dora``: DoRA's magnitude-and-direction update (Liu et al. 2024, Eq. 5). ``magnitude``: one value per
  output feature (PEFT's ``lora_magnitude_vector``, ai-toolkit's ``magnitude``, LyCORIS ``dora_scale`` with
  ``wd_on_output=True``) or, where the format says so (``params['dora_axis'] == 'in'``), per input feature —
  per input *channel* of a conv layer, the norm then running over the output rows and the kernel (LyCORIS
  ``dora_scale`` with ``wd_on_output=False``). The update decomposed is LoRA's by default, or that of
  ``params['inner']`` (LoHa, LoKr: LyCORIS ``weight_decompose``).
- ``lora_expert``: one expert of a LoRA on a fused 3-D expert parameter (PEFT ``target_parameters``,
  ``lora.ParamWrapper``). Parts ``lora_A`` (E·r, in) and ``lora_B`` (out, r·E) as stored; expert e uses rows
  e·r … (e+1)·r of A and columns e, e+E, e+2E, … of B (PEFT ``ParamWrapper.get_delta_factors``:
  A.reshape(E, r, in), B.reshape(out, r, E)), ΔW_e = s · B_e @ A_e, (out, in) as PEFT defines them.
- ``adalora``: ΔW = B diag(E) A · α / (ranknum + 1e-5) (Zhang et al. 2023, Eq. 3; PEFT ``SVDLinear``), the
  diagonal folded into the left factor.
- ``vera``: ΔW = Λ_b B[:m] Λ_d A[:, :n] (Kopiczko et al. 2024, Eq. 1; PEFT ``vera.Linear.get_delta_weight``),
  the shared random projections sliced to the layer and the two scaling vectors folded into the factors.

Each but DoRA is a ``linalg.LowRank``; none is formed to take its spectrum.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import LorascopeError
from ..linalg import Dense, LowRank
from ..linalg.forms import is_torch
from .family import FAMILIES, Family, Tensors, register
from .lycoris import tucker_right


def grouped_up(up: Any, groups: int) -> Any:
    """PEFT's grouped lora_B (out, r/G) as the block-diagonal (out, r) factor of the update it applies.

    Output channel o belongs to group g = o // (out/G) and reads rank components g·r/G … (g+1)·r/G only
    (lora_B is a Conv with ``groups=G``), so the other columns of its row are zero.

    Raises:
        LorascopeError: out is not divisible by G.
    """
    out, per = up.shape
    if out % groups:
        raise LorascopeError(f"a grouped lora_B with {out} output channels cannot have {groups} groups")
    rows = out // groups
    shape = (out, per * groups)
    full = up.new_zeros(shape) if is_torch(up) else np.zeros(shape, dtype=up.dtype)
    for g in range(groups):
        full[g * rows : (g + 1) * rows, g * per : (g + 1) * per] = up[g * rows : (g + 1) * rows]  # block g
    return full


def _lora(d, t: Tensors) -> LowRank:
    groups = int(d.module.params.get("groups", 1))
    up = grouped_up(t["up"], groups) if groups > 1 else t["up"]
    right = tucker_right(t["mid"], t["down"]) if "mid" in t else t["down"]  # (r, n)
    return LowRank(up, right, d.module.scale)


def stored_params(d) -> int:
    """Trainable parameters as PEFT counts them: every stored part's entries."""
    return sum(ref.store.info(ref.key).numel for ref in d.parts.values())


def _lora_params(d) -> int:
    if (
        d.module.params.get("groups", 1) > 1 or "mid" in d.parts
    ):  # grouped B, or a Tucker core: what is stored
        return stored_params(d)
    m, n = d.shape
    return d.module.tensor_rank * (m + n)


LORA = register(
    Family(
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
        part_sets=(frozenset({"up", "down"}), frozenset({"up", "down", "mid"})),
        decomposable=True,
    )
)


def weight_decompose(
    w0: Any, update: Any, magnitude: Any, axis: str = "out", where: str = "DoRA module"
) -> Any:
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
            raise LorascopeError(
                f"{where}: the DoRA magnitude has {mag.shape[0]} entries but the weight has "
                f"{m} output features"
            )
        norms = torch.linalg.vector_norm(merged, dim=1, keepdim=True)  # (m, 1)
        return mag.reshape(-1, 1) / norms * merged - w0
    channels = mag.shape[0]
    if channels == 0 or n % channels:
        raise LorascopeError(
            f"{where}: the DoRA magnitude has {channels} entries, which does not divide the "
            f"weight's {n} input columns"
        )
    per = n // channels  # kernel positions per input channel (1 for a linear layer)
    norms = torch.linalg.vector_norm(merged.reshape(m, channels, per), dim=(0, 2))  # (channels,)
    column_scale = (mag / norms).repeat_interleave(per).reshape(1, -1)  # (1, n)
    return column_scale * merged - w0


def dora_update(
    w0: Any, up: Any, down: Any, magnitude: Any, scale: float, axis: str = "out", where: str = "DoRA module"
) -> Any:
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


DORA = register(
    Family(
        name="dora",
        parts=("up", "down", "magnitude"),
        formula="m ⊙ (W0 + ΔW′) / ‖W0 + ΔW′‖ − W0, ΔW′ = s·B@A (or LoHa/LoKr), the norm per output row "
        "(PEFT) or input channel",
        reference="Liu et al. 2024, Eq. 5; PEFT DoraLinearLayer; LyCORIS weight_decompose (dora_scale, "
        "wd_on_output); "
        "ai-toolkit DoRAModule (magnitude)",
        needs_base=True,
        form="Dense",
        build=_dora,
        numpy=False,
        params=stored_params,
    )
)


# ---- LoRA on one expert of a fused 3-D expert parameter (PEFT target_parameters) ----------------------


def expert_factors(lora_a: Any, lora_b: Any, expert: int, experts: int) -> tuple[Any, Any]:
    """(B_e (out, r), A_e (r, in)) of expert e from PEFT's ParamWrapper factors A (E·r, in), B (out, r·E).

    PEFT ``ParamWrapper.get_delta_factors``: A.reshape(E, r, in)[e] and B.reshape(out, r, E)[:, :, e].
    """
    rank = lora_a.shape[0] // experts
    return lora_b[:, expert::experts], lora_a[expert * rank : (expert + 1) * rank]  # (out, r), (r, in)


def _lora_expert(d, t: Tensors) -> LowRank:
    p = d.module.params
    up, down = expert_factors(t["lora_A"], t["lora_B"], int(p["expert"]), int(p["experts"]))
    return LowRank(up, down, d.module.scale)


def _lora_expert_params(d) -> int:
    m, n = d.shape
    return int(d.module.rank) * (m + n)


LORA_EXPERT = register(
    Family(
        name="lora_expert",
        parts=("lora_A", "lora_B"),
        formula="s · B[:, e::E] @ A[e·r:(e+1)·r], one expert e of E of a fused expert parameter",
        reference="PEFT lora.ParamWrapper.get_delta_factors / get_delta_weight (target_parameters)",
        needs_base=False,
        form="LowRank",
        build=_lora_expert,
        params=_lora_expert_params,
        shared=("lora_A", "lora_B"),  # every expert of the parameter reads the same two tensors
    )
)


# ---- AdaLoRA ------------------------------------------------------------------------------------------


def _adalora(d, t: Tensors) -> LowRank:
    diag = t["diag"].reshape(1, -1)  # (1, r): E as a row, so B · E scales B's columns
    return LowRank(t["up"] * diag, t["down"], d.module.scale)  # B diag(E) (m, r), A (r, n)


ADALORA = register(
    Family(
        name="adalora",
        parts=("up", "down", "diag"),
        formula="s · B diag(E) A, s = α / (ranknum + 1e-5), ranknum the initial rank init_r",
        reference="Zhang et al. 2023 (AdaLoRA), Eq. 3; PEFT adalora.SVDLinear.get_delta_weight",
        needs_base=False,
        form="LowRank",
        build=_adalora,
        params=stored_params,
    )
)


# ---- VeRA ---------------------------------------------------------------------------------------------


def _vera(d, t: Tensors) -> LowRank:
    left = t["lambda_b"].reshape(-1, 1) * t["vera_B"]  # Λ_b B[:m]: (m, 1) * (m, r)
    right = (t["vera_A"] * t["lambda_d"].reshape(1, -1)).T  # (A[:, :n])ᵀ Λ_d, transposed: (r, n)
    return LowRank(left, right, 1.0)


def _vera_params(d) -> int:
    return sum(d.parts[p].store.info(d.parts[p].key).numel for p in ("lambda_b", "lambda_d"))


def _vera_fit(m, ref) -> Any:
    """VeRA slices the shared projections to the layer: B's rows to m, A's columns to the base's width."""
    rows, cols = ref.shape
    if rows != m.shape[0]:
        return (
            f"vera_lambda_b has {m.shape[0]} entries but the base weight has {rows} output features "
            f"(stored {list(ref.stored_shape)})"
        )
    width = m.parts["vera_A"].stored_shape[1]
    if cols > width:
        return f"the base weight has {cols} input features but the shared vera_A has only {width} columns"
    parts = dict(m.parts)
    parts["vera_A"] = dataclasses.replace(parts["vera_A"], rows=cols)  # Aᵀ[:n] = (A[:, :n])ᵀ
    return dataclasses.replace(m, shape=(rows, cols), parts=parts)


VERA = register(
    Family(
        name="vera",
        parts=("vera_A", "vera_B", "lambda_b", "lambda_d"),
        formula=(
            "Λ_b B[:m] Λ_d A[:, :n]; the shared projections sliced to the layer, n the base's input width"
        ),
        reference="Kopiczko et al. 2024 (VeRA), Eq. 1; PEFT vera.Linear.get_delta_weight",
        needs_base=True,  # for n only: the adapter does not record each layer's input width
        form="LowRank",
        build=_vera,
        params=_vera_params,
        fit_base=_vera_fit,
        shared=("vera_A", "vera_B"),
    )
)
