"""The Gram route: eigenvalues of the float64 Gram matrix MᵀM of the tall orientation M of ΔW, accumulated
over row blocks (a full-diff ΔW streamed from its files) or formed from a matrix in memory; floor √δ,
δ = ε·(rows·‖ΔW‖_F² + p·σ̂₁²) (docs/METRICS.md 'The numerical floor').
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .common import EPS64, SVD, as_numpy, blas_function, like, one_thread


def gram_update(g: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """G + xᵀx for a float64 block x (b, p), upper triangle only (BLAS dsyrk, half the flops of a product).

    ``g`` is (p, p) in Fortran order (updated in place) or None to start.
    """
    from scipy.linalg import blas

    x = np.asarray(x, dtype=np.float64)
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        x = np.ascontiguousarray(x)
    if g is None:
        g = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64, order="F")
    if x.flags.c_contiguous:  # x.T is (p, b) in Fortran order: A·Aᵀ = xᵀx
        return blas.dsyrk(1.0, x.T, beta=1.0, c=g, trans=0, lower=0, overwrite_c=1)
    return blas.dsyrk(1.0, x, beta=1.0, c=g, trans=1, lower=0, overwrite_c=1)  # x (b, p) Fortran: Aᵀ·A


def gram_floor(rows: int, p: int, fro_sq: float, sigma1_sq: float) -> tuple[float, float]:
    """(δ, √δ) for the Gram route: |σ̂ᵢ² − σᵢ²| ≤ δ = ε·(rows·‖ΔW‖_F² + p·σ̂₁²).

    Forming G: |fl(MᵀM) − MᵀM| ≤ γ_rows |M|ᵀ|M| (Higham 2002, §3.5) and ‖|M|ᵀ|M|‖₂ ≤ ‖M‖_F²; the symmetric
    eigensolver: |λ̂ᵢ − λᵢ| ≤ p(n)·ε·‖G‖₂ (LAPACK Users' Guide §4.7), p(n) = n. Hence
    |σ̂ᵢ − σᵢ| = |σ̂ᵢ² − σᵢ²| / (σ̂ᵢ + σᵢ) ≤ min(√δ, δ/σ̂ᵢ): values far above √δ keep nearly all digits.
    """
    delta = EPS64 * (rows * fro_sq + p * sigma1_sq)
    return delta, math.sqrt(delta)


def gram_svd(blocks: Iterable[Any], rows: int, p: int) -> SVD:
    """Singular values of a tall matrix M (rows, p), rows ≥ p, from its float64 Gram matrix MᵀM.

    Args:
        blocks: M's rows in consecutive blocks (b, p) (numpy or CPU torch; cast to float64 here), each read
            once; M is never whole in memory.
        rows, p: M's shape.

    Returns:
        An ``SVD`` (method 'gram', all p values, floor √δ from ``gram_floor``); ‖M‖_F from G's trace.
    """

    g = np.zeros((p, p), dtype=np.float64, order="F")
    seen = 0
    for x in blocks:
        x = as_numpy(x, np.float64)
        seen += x.shape[0]
        g = gram_update(g, x)
    if seen != rows:
        raise ValueError(f"the blocks held {seen} rows, not {rows}")
    return _gram_spectrum(g, rows)


def gram_svd_dense(delta: Any) -> SVD:
    """``gram_svd`` of a float64 matrix in memory: one syrk on its tall orientation (no copy)."""
    a = as_numpy(delta, np.float64)
    m, n = a.shape
    tall = a if m >= n else a.T  # (rows, p)
    g = gram_update(None, tall)
    out = _gram_spectrum(g, tall.shape[0])
    out.s = like(out.s, delta)
    return out


def _gram_spectrum(g: np.ndarray, rows: int) -> SVD:
    p = g.shape[0]
    fro_sq = float(np.trace(g))
    lam = np.clip(eigvalsh_upper(g)[::-1], 0.0, None)
    _, floor = gram_floor(rows, p, fro_sq, float(lam[0]) if p else 0.0)
    return SVD(np.sqrt(lam), math.sqrt(max(fro_sq, 0.0)), "gram", True, floor=floor)


@functools.cache
def _two_stage() -> tuple[Any, Any] | None:
    """LAPACKE's dsyevd_2stage from the loaded BLAS library with its argument types, or None."""
    found = blas_function("LAPACKE_dsyevd_2stage")
    if found is not None:
        import ctypes

        fn, int_t = found
        fn.restype = int_t
        fn.argtypes = [
            ctypes.c_int,
            ctypes.c_char,
            ctypes.c_char,
            int_t,
            ctypes.c_void_p,
            int_t,
            ctypes.c_void_p,
        ]
    return found


def eigvalsh_upper(g: np.ndarray) -> np.ndarray:
    """Eigenvalues, ascending, of the symmetric float64 matrix whose upper triangle ``g`` holds (overwritten).

    LAPACK's two-stage tridiagonal reduction (dsyevd_2stage: BLAS-3 band reduction, then bulge chasing;
    Haidar, Ltaief & Dongarra 2011) where the loaded OpenBLAS exports it: about 1.5× faster than the
    one-stage dsytrd; otherwise scipy's eigvalsh. On one thread either way, since the reductions of both
    round differently on more. Both are backward stable: |λ̂ᵢ − λᵢ| ≤ p(n)·ε·‖G‖₂ (LAPACK Users' Guide §4.7).
    """
    p = g.shape[0]
    two = _two_stage() if p > 1 else None
    if two is not None:
        fn, int_t = two
        a = g if g.flags.f_contiguous and g.dtype == np.float64 else np.asfortranarray(g, dtype=np.float64)
        w = np.empty(p, dtype=np.float64)
        with one_thread():
            info = fn(102, b"N", b"U", int_t(p), a.ctypes.data, int_t(p), w.ctypes.data)  # 102: column major
        if info == 0:
            return w
    from scipy.linalg import eigvalsh

    with one_thread():
        return eigvalsh(g, lower=False, overwrite_a=True, check_finite=False)


# ---- dense: randomized -------------------------------------------------------------------------------
