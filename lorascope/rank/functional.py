"""Functional sweeps: replace every ΔW by its rank-k truncation inside the model and measure the loss.

For each k of the grid the model's targeted weights are set to W0 + U_k S_k V_kᵀ, then evaluated; the
base (k = 0) and the untruncated update W0 + ΔW are evaluated too. ``pick_rank`` names the smallest k
whose loss is within a relative tolerance of the untruncated loss.

The singular vectors are computed one module at a time (``truncate.py``) and only the top k_max of
them are kept (k_max = the largest grid rank below a module's full rank), as U·S (m, k_max) and Vᵀ
(k_max, n) in float32, beside a copy of the module's base weight: memory is the model plus its targeted
weights plus Σ k_max(m + n).

Evaluation is a callable ``model -> {metric: value}`` with an ``eval_loss`` (``rank.evaluation``: a Hugging
Face model folder and a text/JSONL file, or a trainer run folder); its names stay importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..delta import Delta, Plan
from ..errors import LorascopeError
from ..names import NameIndex
from ..progress import progress_bar
from .evaluation import (
    LOSS,
    RUN_METRICS,
    EvalOptions,
    Evaluate,
    TrainerRun,
    hf_evaluation,
    is_trainer_run,
    load_causal_lm,
    read_examples,
    trainer_evaluation,
    trainer_run,
)
from .truncate import TruncateOptions, full_update, top_k

__all__ = [  # the sweep, and the evaluation names importable from here as they always were
    "LOSS",
    "RUN_METRICS",
    "EvalOptions",
    "Evaluate",
    "Slot",
    "TrainerRun",
    "functional_sweep",
    "hf_evaluation",
    "is_trainer_run",
    "load_causal_lm",
    "model_slots",
    "pick_rank",
    "read_examples",
    "trainer_evaluation",
    "trainer_run",
    "vector_slots",
]

if TYPE_CHECKING:
    import torch


# ---- pure: the table and the pick ---------------------------------------------------------------------


def pick_rank(table: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """The smallest k whose loss is within ``tolerance`` of the untruncated loss, measured in units of the
    fine-tune's own loss change: loss_k − loss_full ≤ tolerance · |loss_base − loss_full|.

    A relative tolerance on the loss itself would depend on its scale (a memorized edit set ends near 0 nats);
    a share of the fine-tune's change does not: tolerance 0.05 asks for 95 % of the change the update made.

    Args:
        table: a functional sweep (columns point ∈ {base, truncated, full}, k, loss; the base row may be
            absent, then the tolerance is taken relative to the untruncated loss itself).
        tolerance: the share of the fine-tune's loss change a truncation may give up.

    Returns:
        k, its loss, the untruncated and base losses, the tolerance, whether some k qualified (``within``;
        else the largest k is named) and ``recovered`` = (base − loss_k) / (base − full).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    full = table.loc[table["point"] == "full", "loss"]
    base = table.loc[table["point"] == "base", "loss"]
    trunc = table[table["point"] == "truncated"].sort_values("k")
    if full.empty or trunc.empty:
        raise LorascopeError("a functional sweep table needs a 'full' row and at least one 'truncated' row")
    full_loss = float(full.iat[0])
    base_loss = float(base.iat[0]) if not base.empty else math.nan
    change = abs(base_loss - full_loss) if np.isfinite(base_loss) else abs(full_loss)
    ok = trunc[trunc["loss"] <= full_loss + tolerance * change]
    row = ok.iloc[0] if not ok.empty else trunc.iloc[-1]
    loss = float(row["loss"])
    gain = base_loss - full_loss
    return {
        "k": int(row["k"]),
        "loss": loss,
        "full_loss": full_loss,
        "base_loss": base_loss,
        "tolerance": tolerance,
        "within": not ok.empty,
        "metric": str(table.attrs.get("loss_metric", LOSS)),
        "recovered": float((base_loss - loss) / gain) if np.isfinite(gain) and gain != 0 else math.nan,
    }


# ---- the model's weights ----------------------------------------------------------------------------


@dataclass
class Slot:
    """Where one ΔW (m, n) goes in the model: its parameter, the base copy, and the stored orientation."""

    name: str
    param: Any  # torch.nn.Parameter
    base: Any  # torch.Tensor, the parameter's initial (base) value
    orient: str  # 'as_is' | 'transpose' (GPT-2 Conv1D) | 'reshape' (conv kernels)

    def set(self, delta: torch.Tensor) -> None:
        """param ← W0 + ΔW, ΔW (m, n) put in the stored layout."""
        if self.orient == "transpose":
            delta = delta.T
        elif self.orient == "reshape":
            delta = delta.reshape(self.param.shape)
        self.param.data.copy_(self.base + delta.to(self.base.dtype))


def model_slots(model: Any, plan: Plan) -> list[Slot]:
    """One slot per update, found by name among the model's parameters (prefixes may differ)."""
    params = dict(model.named_parameters())
    index = NameIndex([k.removesuffix(".weight") for k in params])
    slots, problems = [], []
    for d in plan.deltas:
        hit = index.find(d.name)
        param = params.get(f"{hit}.weight") if hit is not None else None
        if param is None:
            problems.append(f"{d.name}: no parameter of that name in the model")
            continue
        m, n = d.shape
        shape = tuple(param.shape)
        orient = (
            "as_is"
            if shape == (m, n)
            else "transpose"
            if shape == (n, m)
            else "reshape"
            if param.numel() == m * n and shape[0] == m
            else None
        )
        if orient is None:
            problems.append(f"{d.name}: ΔW is {m}×{n} but the model's weight is {list(shape)}")
            continue
        slots.append(Slot(d.name, param, param.detach().clone(), orient))
    if problems:
        raise LorascopeError(
            "the model does not hold every updated module:\n" + "\n".join(f"  - {p}" for p in problems[:20])
        )
    return slots


def vector_slots(model: Any, plan: Plan) -> list[tuple[Any, Any]]:
    """(parameter, tuned value) for each 1-D update of the plan (norm weights, biases) the model holds.

    These cannot be truncated; every point but the base carries them untruncated, so the untruncated point
    is exactly the fine-tuned model and the points differ only in the rank of the matrix updates.
    """
    import torch

    from ..delta import vector_update

    params = dict(model.named_parameters())
    out = []
    for v in plan.vectors:
        name = v.name.removesuffix(".lora_B.bias") + ".bias" if v.is_update else v.name
        param = params.get(f"{name}.weight", params.get(name))
        if param is None or param.dim() != 1:
            continue
        delta, _ = vector_update(v)
        if delta.size != param.numel():
            continue
        out.append((param, param.detach().clone() + torch.from_numpy(delta).to(param.dtype)))
    return out


# ---- the sweep -------------------------------------------------------------------------------------------


@dataclass
class _Factors:
    us: Any  # (m, k_max) float32 torch: U·S
    vt: Any  # (k_max, n) float32 torch: Vᵀ
    s2: np.ndarray  # (k_max,) σ², float64
    total: float  # ‖ΔW‖_F²
    unit: int  # m + n


def functional_sweep(
    model: Any,
    plan: Plan,
    ranks: Sequence[int],
    evaluate: Evaluate,
    options: TruncateOptions | None = None,
    progress: bool = False,
    loss_metric: str = LOSS,
) -> pd.DataFrame:
    """Loss (and every metric ``evaluate`` returns) of the base, each rank-k truncation, and the full update.

    Args:
        model: a torch model holding the *base* weights (loaded from the base checkpoint).
        plan: the updates, named like the model's parameters (``delta.plan_deltas``).
        ranks: the grid of k.
        evaluate: model -> metrics with an ``eval_loss``.
        options: the SVD route for dense updates.
        progress: show a progress bar.
        loss_metric: the metric reported as ``loss`` (the one the pick reads), e.g. a task's primary set.

    Returns:
        One row per point: point (base | truncated | full), k (0 for base, NaN for full), params
        (Σ_l min(k, rank_l)(m_l + n_l)), energy (pooled Σ kept / Σ ‖ΔW‖²), loss and the other metrics.
        1-D updates (norms, biases) are applied untruncated at every point but the base (``vector_slots``).
        The model is left holding the untruncated update.
    """
    import torch

    ranks = sorted({int(k) for k in ranks if int(k) >= 1})
    if not ranks:
        raise ValueError("ranks must hold at least one positive integer")
    slots = model_slots(model, plan)
    deltas = {d.name: d for d in plan.deltas}
    rows: list[dict[str, Any]] = []
    steps = len(slots) + len(ranks) + 2
    with progress_bar(steps, "functional sweep", progress) as bar, torch.no_grad():
        factors: dict[str, _Factors] = {}
        for slot in slots:
            d = deltas[slot.name]
            k_max = _k_max(d, ranks)
            tk = top_k(d, k_max, options)
            m, n = d.shape
            factors[slot.name] = _Factors(
                torch.from_numpy(tk.u * tk.s).float(),
                torch.from_numpy(tk.v.T.copy()).float(),
                tk.s**2,
                tk.fro_norm**2,
                m + n,
            )
            bar.advance(note=f"SVD {slot.name}")
        total = sum(f.total for f in factors.values())
        rows.append({"point": "base", "k": 0, "params": 0, "energy": 0.0, **evaluate(model)})
        bar.advance(note="base")
        for param, tuned in vector_slots(model, plan):  # 1-D updates, untruncated from here on
            param.data.copy_(tuned)
        for k in ranks:
            kept, params = 0.0, 0
            for slot in slots:
                f = factors[slot.name]
                r = min(k, f.s2.size)
                slot.set(f.us[:, :r] @ f.vt[:r])  # (m, r) @ (r, n) -> (m, n)
                kept += float(f.s2[:r].sum())
                params += r * f.unit
            rows.append(
                {
                    "point": "truncated",
                    "k": k,
                    "params": params,
                    "energy": min(kept / total, 1.0) if total > 0 else 1.0,
                    **evaluate(model),
                }
            )
            bar.advance(note=f"k={k}")
        del factors
        for slot in slots:
            slot.set(full_update(deltas[slot.name], options))
        rows.append({"point": "full", "k": math.nan, "params": math.nan, "energy": 1.0, **evaluate(model)})
        bar.advance(note="full")
    table = pd.DataFrame(rows)
    if loss_metric not in table.columns:
        raise LorascopeError(
            f"the evaluation returned no {loss_metric!r} (it returned {', '.join(map(str, rows[0]))})"
        )
    table.insert(0, "loss", table[loss_metric])
    table.attrs["loss_metric"] = loss_metric
    table["k"] = table["k"].astype("Int64")  # empty for the untruncated row
    table["params"] = table["params"].astype("Int64")
    front = ["point", "k", "params", "energy", "loss"]
    table = table.loc[:, ~table.columns.duplicated()]
    return table[front + [c for c in table.columns if c not in front]]


def _k_max(d: Delta, ranks: Sequence[int]) -> int:
    """The largest grid rank to keep vectors for: every rank is covered, capped by min(m, n)."""
    return max(1, min(max(ranks), min(d.shape)))
