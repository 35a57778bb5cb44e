"""Singular values of an update by the cheapest exact route: the one place a route is chosen.

``svd(form)`` dispatches on the update's form (``lorascope.linalg.forms``) and on what the caller needs:

- ``LowRank`` s·L@R: R factors of L and Rᵀ (CholeskyQR2, Householder where ill-conditioned), SVD of the k×k
  core (``factored_svd``), float64; cost O((m + n)k² + k³)
- ``Kronecker`` s·A⊗B: the SVDs of A and B, products of their singular values (``kronecker_svd``); cost that
  of A and B
- ``Blocks`` (streamed), p ≥ ``GRAM_MIN``: float64 Gram matrix accumulated over row blocks, its eigenvalues
  (``gram_svd``); cost mn·p + (4/3)p³, memory 8p² bytes
- ``Dense``, float64 on the CPU, values only, p ≥ ``GRAM_MIN``: the same Gram route on the matrix in memory
  (``gram_svd_dense``); cost mn·p + (4/3)p³
- ``Dense``, otherwise: all σ by LAPACK (``exact_svd``), or the top-k by a randomized range finder
  (``randomized_svd``); cost O(mn·p)

p = min(m, n). Every result carries its absolute error bound (``SVD.floor``, docs/METRICS.md 'The numerical
floor'). No other module picks a route; callers say what they need (vectors or not, a top-k or all) and, for
a dense top-k, which method the user asked for (``SVD_METHODS``): 'exact' (every value), 'randomized' (the
top k by a randomized range finder, Halko, Martinsson & Tropp 2011, Alg. 4.4), or 'auto' (randomized when
k ≤ ``RANDOMIZED_BELOW``·p, where it is markedly faster, exact otherwise). The option is spelled ``svd`` /
``--svd`` and the count ``top_k`` / ``--top-k`` in every command that takes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .forms import Blocks, Dense, Form, Kronecker, LowRank, cosine, fro_norm, inner, khatri_rao, merged
from .common import (
    EPS64,
    PRECISIONS,
    SVD,
    eps_of,
    one_thread,
    resolve_device,
    sum_squares,
    svd_flip,
    torch_dtype,
)
from .gram import gram_floor, gram_svd, gram_svd_dense, gram_update
from .routes import (
    exact_floor,
    exact_svd,
    factored_floor,
    factored_svd,
    kronecker_svd,
    randomized_params,
    randomized_svd,
)

__all__ = [
    "Blocks",
    "Dense",
    "EPS64",
    "Form",
    "GRAM_MIN",
    "Kronecker",
    "LowRank",
    "PRECISIONS",
    "RANDOMIZED_BELOW",
    "SVD",
    "SVD_METHODS",
    "cosine",
    "eps_of",
    "exact_floor",
    "exact_svd",
    "factored_floor",
    "factored_svd",
    "fro_norm",
    "gram_floor",
    "gram_svd",
    "gram_svd_dense",
    "gram_update",
    "inner",
    "khatri_rao",
    "kronecker_svd",
    "merged",
    "one_thread",
    "randomized_params",
    "randomized_svd",
    "resolve_device",
    "sum_squares",
    "svd",
    "svd_flip",
    "torch_dtype",
]

# Below this short side a dense SVD costs milliseconds and LAPACK's tighter bound (ε·max(m, n)·σ₁ instead of
# the Gram route's √δ) comes for free, so small matrices take the exact route.
GRAM_MIN = 256
# How a dense top-k is computed (``svd(method=...)``); 'auto' takes the randomized route when k is at most
# this fraction of min(m, n): there a range finder of k + oversampling columns is several times faster than
# LAPACK.
SVD_METHODS = ("auto", "exact", "randomized")
RANDOMIZED_BELOW = 0.1


def _lowrank(form: LowRank, compute_uv: bool, k: int | None, method: str, seed: int) -> SVD:
    return factored_svd(
        form.left, form.right, form.scale, compute_uv
    )  # exact and cheap: every value, k unused


def _kronecker(form: Kronecker, compute_uv: bool, k: int | None, method: str, seed: int) -> SVD:
    a = svd(form.a, compute_uv=compute_uv, method="exact", seed=seed)
    b = svd(form.b, compute_uv=compute_uv, method="exact", seed=seed)
    return kronecker_svd(a, b, form.scale, compute_uv, k)


def _gram_suits(matrix: Any) -> bool:
    """float64, on the CPU, and large enough that the Gram route's speed matters."""
    dtype = str(matrix.dtype).removeprefix("torch.")
    on_cpu = not hasattr(matrix, "device") or getattr(matrix.device, "type", "cpu") == "cpu"
    return dtype == "float64" and on_cpu and min(matrix.shape) >= GRAM_MIN


def randomized(method: str, k: int | None, shape: tuple[int, int]) -> bool:
    """Whether a dense top-``k`` of an (m, n) matrix takes the randomized route under ``method``."""
    if k is None or k >= min(shape):
        return False
    return method == "randomized" or (method == "auto" and k <= RANDOMIZED_BELOW * min(shape))


def _dense(form: Dense, compute_uv: bool, k: int | None, method: str, seed: int) -> SVD:
    if randomized(method, k, form.shape):
        import torch

        matrix = form.matrix if hasattr(form.matrix, "device") else torch.as_tensor(form.matrix)
        return randomized_svd(matrix, k, seed=seed, compute_uv=compute_uv)
    if not compute_uv and _gram_suits(form.matrix):
        return gram_svd_dense(form.matrix)
    return exact_svd(form.matrix, compute_uv)  # numpy arrays stay in numpy (no torch import)


def _blocks(form: Blocks, compute_uv: bool, k: int | None, method: str, seed: int) -> SVD:
    if compute_uv or k is not None:
        raise ValueError("a streamed update gives singular values only; read it whole for vectors or a top-k")
    if min(form.shape) < GRAM_MIN:  # small: read whole (a few MiB at most) for LAPACK's tighter bound
        return exact_svd(form.to_dense())
    return gram_svd(form.blocks(), max(form.shape), min(form.shape))


# form type -> route
ROUTES: dict[type, Callable[[Any, bool, int | None, str, int], SVD]] = {
    LowRank: _lowrank,
    Kronecker: _kronecker,
    Dense: _dense,
    Blocks: _blocks,
}


def svd(
    form: Form, *, compute_uv: bool = False, k: int | None = None, method: str = "auto", seed: int = 0
) -> SVD:
    """Singular values of ΔW (and vectors with ``compute_uv``) by the cheapest exact route for its form.

    Args:
        form: the update as its family stores it (or as row blocks read from its files).
        compute_uv: also return U (m, ·) and V (n, ·) with deterministic signs.
        k: the top-k wanted, or None for every value. For a dense form, ``method`` says how the top-k is
            found: by the randomized route (``complete`` is then False) or exactly (every value, the caller
            keeps the first k); for factored forms every value is exact anyway and ``k`` only limits the
            vectors formed.
        method: 'exact', 'randomized' or 'auto' (module docstring); it matters only for a dense top-k.
        seed: of the randomized route's test matrix.

    Returns:
        An ``SVD``: values descending; ``fro_norm`` exact from the entries or factors; ``floor`` the route's
        absolute error bound on every value.

    Raises:
        ValueError: an unknown method, a 'randomized' top-k without k, or vectors or a top-k asked of a
            streamed form.
    """
    if method not in SVD_METHODS:
        raise ValueError(f"svd method must be one of {', '.join(SVD_METHODS)}, got {method!r}")
    if method == "randomized" and k is None:
        raise ValueError("the randomized SVD finds a top-k: give k")
    return ROUTES[type(form)](form, compute_uv, k, method, seed)
