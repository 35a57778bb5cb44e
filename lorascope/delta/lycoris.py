"""LoHa, LoKr and full: Hadamard and Kronecker products of low-rank factors (LyCORIS; PEFT's LoHa and LoKr
tuners), and LyCORIS's ``full`` algorithm, which stores ΔW itself.

Parts use the names both LyCORIS and PEFT store: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``
(and the Tucker cores ``hada_t1``, ``hada_t2`` of a conv layer), ``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``,
``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b`` (and the Tucker core ``lokr_t2``). Readers hand them over as
stored, except that a conv factor without a Tucker core is flattened to 2-D (its columns are in·kh·kw) — all
but a Conv1d's full 3-D ``lokr_w2`` where the format declares ``params['kron'] == 'peft-conv1d'`` (PEFT's
product is then not W1 ⊗ W2_flat: ``_lokr_conv1d_full``).

Neither update is formed to take its spectrum:

- LoHa, ΔW = s · (W1a W1b) ⊙ (W2a W2b): the Hadamard product of two rank-r updates factors through the
  row-wise and column-wise Khatri–Rao products with inner dimension r₁r₂ (``linalg.khatri_rao``), used while
  r₁r₂ < min(m, n); past that the product is formed (it is then no larger than a dense SVD needs).
- LoKr, ΔW = s · W1 ⊗ W2: σ(ΔW) are the pairwise products σᵢ(W1)σⱼ(W2), each factor itself factored when
  stored as a low-rank pair (``linalg.Kronecker``).

A Tucker (CP) conv factor, W[p, r, k, l] = Σ_ij t[i, j, k, l] wa[i, p] wb[j, r] (LyCORIS / PEFT
``make_weight_cp``), flattened to (out, in·kh·kw) is waᵀ @ M with M[i, (r, k, l)] = Σ_j t[i, j, k, l]
wb[j, r]: rank r again (``tucker_right``); Conv1d and Conv3d cores have one and three kernel dims.

- full, ΔW = diff: LyCORIS ``FullModule`` saves the trained weight minus the original as ``diff`` (and the
  bias difference as ``diff_b``, a 1-D update the reader keeps beside the module). Dense, no base needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..linalg import Dense, Form, Kronecker, LowRank, khatri_rao
from ..linalg.forms import is_torch
from .family import Family, Tensors, register


def _einsum(spec: str, *ops: Any) -> Any:
    if is_torch(ops[0]):
        import torch

        return torch.einsum(spec, *ops)
    return np.einsum(spec, *ops)


def tucker_right(core: Any, wb: Any) -> Any:
    """M = core ×₂ wbᵀ flattened: M[i, (r, k…)] = Σ_j core[i, j, k…] wb[j, r], (r₁, in·k…).

    Args:
        core: t (r₁, r₂, k…) — kernel dims (k,) for Conv1d, (kh, kw) for Conv2d, (kd, kh, kw) for Conv3d.
        wb: (r₂, in), the 2-mode factor (LoCon's 1×1 ``lora_down``, flattened).
    """
    rank = core.shape[0]
    return _einsum("ij...,jr->ir...", core, wb).reshape(rank, -1)  # (r1, r2, k…) · (r2, in) -> (r1, in·k…)


def tucker_factors(core: Any, wa: Any, wb: Any) -> tuple[Any, Any]:
    """(left, right) of a Tucker conv factor: waᵀ (out, r) and ``tucker_right(core, wb)`` (r, in·k…).

    Args:
        core: t (r, r, k…).
        wa: (r, out), the 1-mode factor.
        wb: (r, in), the 2-mode factor.
    """
    return wa.T, tucker_right(core, wb)


def _hada_operand(t: Tensors, i: int) -> tuple[Any, Any]:
    if f"hada_t{i}" in t:
        return tucker_factors(t[f"hada_t{i}"], t[f"hada_w{i}_a"], t[f"hada_w{i}_b"])
    return t[f"hada_w{i}_a"], t[f"hada_w{i}_b"]


def _loha(d, t: Tensors) -> Form:
    (l1, r1), (l2, r2) = _hada_operand(t, 1), _hada_operand(t, 2)
    scale = d.module.scale
    if l1.shape[1] * l2.shape[1] < min(d.shape):
        left, right = khatri_rao(l1, r1, l2, r2)  # (m, r1·r2), (r1·r2, n)
        return LowRank(left, right, scale)
    return Dense(scale * ((l1 @ r1) * (l2 @ r2)))  # r1·r2 ≥ min(m, n): no cheaper exact form


def _stored_params(d) -> int:
    return sum(ref.store.info(ref.key).numel for ref in d.parts.values())


LOHA = register(
    Family(
        name="loha",
        parts=("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
        optional=("hada_t1", "hada_t2"),
        formula="s · (W1a @ W1b) ⊙ (W2a @ W2b), s = α / r",
        reference="Hyeon-Woo et al. 2022 (FedPara), Eq. 2; LyCORIS loha.py; PEFT LoHaLayer.get_delta_weight",
        needs_base=False,
        form="LowRank",
        build=_loha,
        params=_stored_params,
        part_sets=(
            frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}),
            frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}),
        ),
        decomposable=True,
    )
)


def _kron_factor(t: Tensors, i: int) -> Form:
    """W1 or W2 of LoKr as a form: full, a low-rank pair, or (W2 only) a Tucker conv factor."""
    if f"lokr_w{i}" in t:
        return Dense(t[f"lokr_w{i}"])
    if f"lokr_t{i}" in t:
        return LowRank(*tucker_factors(t[f"lokr_t{i}"], t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"]))
    return LowRank(t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"])


def _lokr(d, t: Tensors) -> Form:
    if d.module.params.get("kron") == "peft-conv1d":
        return _lokr_conv1d_full(d, t)
    return Kronecker(_kron_factor(t, 1), _kron_factor(t, 2), d.module.scale)


def _lokr_conv1d_full(d, t: Tensors) -> Dense:
    """A PEFT Conv1d LoKr with a full 3-D W2 (o₂, i₂, k), kept 3-D by the reader: not a Kronecker product.

    PEFT (``make_kron``) unsqueezes W1 only for a 4-D W2, so here ``torch.kron`` pads W1 to (1, o₁, i₁) and
    interleaves: ΔW[j·o₁ + p, q·i₁k + s·k + l] = s · W1[p, s] W2[j, q, l], a row and column permutation of
    W1 ⊗ W2_flat (current LyCORIS pads W1 at the end instead, giving W1 ⊗ W2_flat). Same σ, other singular
    vectors: the exact matrix is formed (it is the conv weight's size).
    """
    w1 = _kron_factor(t, 1).to_dense()
    w2 = t["lokr_w2"]
    if is_torch(w2):
        import torch

        kron = torch.kron(torch.as_tensor(w1)[None], w2)  # (1, o1, i1) ⊗ (o2, i2, k) -> (o2, o1·i2, i1·k)
    else:
        kron = np.kron(np.asarray(w1)[None], w2)
    return Dense(d.module.scale * kron.reshape(w1.shape[0] * w2.shape[0], -1))


LOKR = register(
    Family(
        name="lokr",
        # one of lokr_w1 | lokr_w1_a + lokr_w1_b, and one of lokr_w2 | lokr_w2_a + lokr_w2_b (+ lokr_t2)
        parts=(),
        optional=("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
        formula="s · W1 ⊗ W2, each factor full or a low-rank pair (W2 also a Tucker conv factor)",
        reference=(
            "Yeh et al. 2024 (LyCORIS), §3.3; LyCORIS lokr.py make_kron; PEFT LoKrLayer.get_delta_weight"
        ),
        needs_base=False,
        form="Kronecker",
        build=_lokr,
        params=_stored_params,
        part_sets=tuple(
            frozenset(w1 | w2)
            for w1 in ({"lokr_w1"}, {"lokr_w1_a", "lokr_w1_b"})
            for w2 in ({"lokr_w2"}, {"lokr_w2_a", "lokr_w2_b"}, {"lokr_w2_a", "lokr_w2_b", "lokr_t2"})
        ),
        decomposable=True,
    )
)


def _full(d, t: Tensors) -> Dense:
    return Dense(t.pop("diff"))


FULL = register(
    Family(
        name="full",
        parts=("diff",),
        formula="diff (W_tuned − W_base as the file stores it)",
        reference="LyCORIS full.py (FullModule.custom_state_dict: diff = W − W_org); Yeh et al. 2024, §3",
        needs_base=False,
        form="Dense",
        build=_full,
        numpy=False,  # dense: torch in the working precision, like a full fine-tune's difference
        params=_stored_params,
        part_sets=(frozenset({"diff"}),),
    )
)
