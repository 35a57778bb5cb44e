"""Exact singular values of an update by the cheapest exact route: the one place a route is chosen.

``svd(form)`` dispatches on the update's form (``lorascope.linalg.forms``):

| form | route | cost |
| --- | --- | --- |
| ``LowRank`` s·L@R | QR of L and Rᵀ, SVD of the k×k core (``factored_svd``), float64 | O((m + n)k² + k³) |
| ``Kronecker`` s·A⊗B | the SVDs of A and B, products of their singular values (``kronecker_svd``) | that of A and B |
| ``Dense`` | all σ by LAPACK (``exact_svd``), or the top-k by a randomized range finder (``randomized_svd``) | O(mn·min(m, n)) |

No other module picks a route; callers say what they need (vectors or not, a top-k or all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .forms import Dense, Form, Kronecker, LowRank, cosine, fro_norm, inner, khatri_rao, merged
from .routes import (
    PRECISIONS,
    SVD,
    exact_svd,
    factored_svd,
    kronecker_svd,
    randomized_params,
    randomized_svd,
    resolve_device,
    svd_flip,
    torch_dtype,
)

__all__ = [
    "Dense", "Form", "Kronecker", "LowRank", "PRECISIONS", "SVD", "cosine", "exact_svd", "factored_svd", "fro_norm",
    "inner", "khatri_rao", "kronecker_svd", "merged", "randomized_params", "randomized_svd", "resolve_device", "svd",
    "svd_flip", "torch_dtype",
]


def _lowrank(form: LowRank, compute_uv: bool, k: int | None, seed: int) -> SVD:
    return factored_svd(form.left, form.right, form.scale, compute_uv)  # exact and cheap: every value, k unused


def _kronecker(form: Kronecker, compute_uv: bool, k: int | None, seed: int) -> SVD:
    a = svd(form.a, compute_uv=compute_uv, seed=seed)
    b = svd(form.b, compute_uv=compute_uv, seed=seed)
    return kronecker_svd(a, b, form.scale, compute_uv, k)


def _dense(form: Dense, compute_uv: bool, k: int | None, seed: int) -> SVD:
    if k is not None and k < min(form.shape):
        import torch

        return randomized_svd(torch.as_tensor(form.matrix), k, seed=seed, compute_uv=compute_uv)
    return exact_svd(form.matrix, compute_uv)  # numpy arrays stay in numpy (no torch import)


# form type -> route
ROUTES: dict[type, Callable[[Any, bool, int | None, int], SVD]] = {
    LowRank: _lowrank,
    Kronecker: _kronecker,
    Dense: _dense,
}


def svd(form: Form, *, compute_uv: bool = False, k: int | None = None, seed: int = 0) -> SVD:
    """Singular values of ΔW (and vectors with ``compute_uv``) by the cheapest exact route for its form.

    Args:
        form: the update as its family stores it.
        compute_uv: also return U (m, ·) and V (n, ·) with deterministic signs.
        k: for a dense form, the top-k by the randomized route when k < min(m, n) (``complete`` is then
            False); for factored forms every value is exact anyway and ``k`` only limits the vectors formed.
        seed: of the randomized route's test matrix.

    Returns:
        An ``SVD``: values descending; ``fro_norm`` exact from the entries or factors.
    """
    return ROUTES[type(form)](form, compute_uv, k, seed)
