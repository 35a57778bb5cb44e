"""Intruder dimensions: top singular directions of W_tuned that no direction of W_base resembles.

Shuttleworth et al. 2024 ("LoRA vs Full Fine-tuning: An Illusion of Equivalence"), Algorithm 1: take the
SVD of W_base and of W_tuned = W_base + ΔW; the j-th left singular vector y_j of W_tuned (j ≤ k) is an
intruder when max_i |cos(y_j, x_i)| < ε over the left singular vectors x_i of W_base (docs/METRICS.md
'intruder dimensions'; default k = 10, ε = 0.5: ``intruder_k`` and ``epsilon``). The count depends strongly
on ε, so every top-k vector's max |cos| is kept and the count is swept over ε.

Which base vectors: all of them, because a large cosine can sit on any x_i. When m ≤ n and W_base has full
rank, the x_i are an orthonormal basis of R^m and max_i |cos(y_j, x_i)| is the largest coordinate of y_j in
that basis. When m > n (or W_base is rank-deficient) the thin SVD has only rank(W) vectors; directions
outside W's column space have no defined singular vectors (any basis of the complement would do, and the
max would depend on that arbitrary choice), so they are left out and a y_j outside W's column space counts
towards intrusion — it is a direction W does not use. Pure functions of tensors; no file access.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..linalg import SVD_METHODS, Dense, svd
from ..metrics import numerical_rank

EPSILONS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10, 0.15, …, 0.90


@dataclass(frozen=True)
class IntruderOptions:
    """Algorithm 1's k and ε, the ε sweep, and how W_tuned's top-k is computed."""

    intruder_k: int = 10  # Algorithm 1's k: Shuttleworth et al. look at the top 10 singular vectors
    epsilon: float = 0.5  # the threshold reported per module; the sweep covers the rest
    epsilons: tuple[float, ...] = EPSILONS
    # W_tuned's top-k: the exact SVD, or a randomized range finder (faster; its vectors drift where
    # σ_k ≈ σ_{k+1}, which moves max |cos| only for those nearly tied directions); linalg.SVD_METHODS
    svd: str = "exact"

    def __post_init__(self) -> None:
        if self.intruder_k < 1:
            raise ValueError(f"intruder_k must be a positive integer, got {self.intruder_k}")
        for eps in (self.epsilon, *self.epsilons):
            if not 0.0 < eps <= 1.0:
                raise ValueError(f"epsilon must lie in (0, 1], got {eps}")
        if self.svd not in SVD_METHODS:
            raise ValueError(f"svd must be one of {', '.join(SVD_METHODS)}, got {self.svd!r}")


def base_directions(w: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(σ, U) of W_base: every left singular vector with a non-zero singular value (see the module docstring).

    Returns:
        σ (p,) float64 descending and U (m, p) on the CPU, p = numerical rank ≤ min(m, n).
    """
    full = svd(Dense(w), compute_uv=True)
    s = np.asarray(full.s, np.float64)
    p = numerical_rank(s, tuple(w.shape))
    return s[:p], full.u[:, :p]


def max_cosines(base_u: torch.Tensor, tuned_u: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """max_i |cos(y_j, x_i)| and its argmax i (0-based) for each column y_j of ``tuned_u``.

    Args:
        base_u: (m, p) orthonormal base directions x_i.
        tuned_u: (m, k) unit tuned directions y_j.
    """
    cos = base_u.to(torch.float64).T @ tuned_u.to(torch.float64)  # (p, m) @ (m, k) -> (p, k)
    best, index = cos.abs().max(dim=0)
    return best.numpy(), index.numpy()


def find_intruders(
    w_tuned: torch.Tensor,
    base_u: torch.Tensor,
    base_s: np.ndarray,
    opts: IntruderOptions = IntruderOptions(),
    seed: int = 0,
) -> pd.DataFrame:
    """Shuttleworth et al. 2024, Algorithm 1, for one matrix, with every top-k vector's score kept.

    Args:
        w_tuned: (m, n) W_base + ΔW.
        base_u: (m, p) left singular vectors of W_base (``base_directions``).
        base_s: (p,) their singular values.
        opts: k, ε and the SVD used for W_tuned.

    Returns:
        One row per j ≤ k: j (1-based rank in W_tuned), sigma (σ_j(W_tuned)), max_cos, base_index (1-based
        rank of the closest base direction), base_sigma (its σ), intruder (max_cos < ε).
    """
    k = min(opts.intruder_k, min(w_tuned.shape))
    top = svd(Dense(w_tuned), compute_uv=True, k=k, method=opts.svd, seed=seed)
    tuned_u = torch.as_tensor(top.u)[:, :k].cpu()
    best, index = max_cosines(base_u.cpu(), tuned_u)
    return pd.DataFrame(
        {
            "j": np.arange(1, k + 1),
            "sigma": np.asarray(top.s, np.float64)[:k],
            "max_cos": best,
            "base_index": index + 1,
            "base_sigma": np.asarray(base_s, np.float64)[index],
            "intruder": best < opts.epsilon,
        }
    )


def count_intruders(max_cos: np.ndarray, epsilon: float) -> int:
    """#{j : max_i |cos(y_j, x_i)| < ε}."""
    return int((np.asarray(max_cos) < epsilon).sum())


def intruder_sweep(
    table: pd.DataFrame, epsilons: tuple[float, ...] = EPSILONS, by: str = "update"
) -> pd.DataFrame:
    """Intruder counts summed over modules at each ε, per value of ``by``.

    Args:
        table: rows of ``find_intruders`` with ``name`` and ``by`` columns added.

    Returns:
        Columns ``by``, epsilon, intruders (summed over modules), modules_with_intruders, modules.
    """
    rows = []
    for key, group in table.groupby(by, sort=False):
        per_module = group.groupby("name", sort=False)["max_cos"]
        for eps in epsilons:
            counts = per_module.apply(lambda s, e=eps: count_intruders(s.to_numpy(), e))
            rows.append(
                {
                    by: key,
                    "epsilon": eps,
                    "intruders": int(counts.sum()),
                    "modules_with_intruders": int((counts > 0).sum()),
                    "modules": int(counts.size),
                }
            )
    return pd.DataFrame(rows, columns=[by, "epsilon", "intruders", "modules_with_intruders", "modules"])


def intruder_counts(table: pd.DataFrame, epsilon: float, by: str = "update") -> pd.DataFrame:
    """Per module and value of ``by``: the intruder count at ε and the smallest max |cos| among the top-k.

    Args:
        table: rows of ``find_intruders`` with ``name``, ``layer``, ``module`` and ``by`` columns added.
    """
    keys = ["name", "layer", "module", by]
    grouped = table.groupby(keys, sort=False, dropna=False)["max_cos"]
    out = grouped.agg(
        intruder_k="size",
        intruders=lambda s: count_intruders(s.to_numpy(), epsilon),
        min_max_cos="min",
    ).reset_index()
    out.insert(len(keys), "epsilon", epsilon)
    return out
