"""R factors of tall float64 matrices, for the factored route: CholeskyQR2 where it is backward stable,
Householder QR where a factor is too ill-conditioned for it (``r_factor``), and the triangular solve both
rest on. numpy only (no scipy import for adapter runs); LAPACK calls run under the caller's ``one_thread``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .common import EPS64, blas_function


def _cholesky_upper(g: np.ndarray) -> np.ndarray | None:
    """Upper R with RᵀR = G, or None when G is not numerically positive definite."""
    try:
        return np.linalg.cholesky(g).T  # numpy returns the lower factor L = Rᵀ
    except np.linalg.LinAlgError:
        return None


def cholqr2_r(x: np.ndarray) -> np.ndarray | None:
    """R (k, k) of x = QR (x: (m, k), m ≥ k, float64) by CholeskyQR2, or None where it is not backward stable.

    CholeskyQR2 (Fukaya et al. 2014; Yamamoto, Nakatsukasa, Yanagisawa & Fukaya 2015, ETNA 44, Thm 3.3):
    R₁ = chol(xᵀx), Q₁ = x R₁⁻¹, R₂ = chol(Q₁ᵀQ₁), R = R₂R₁. When 8·κ₂(x)·√(m·k·u + k(k+1)·u) ≤ 1
    (u = ε/2) its Q is orthonormal to 6(m·k·u + k(k+1)·u) and ‖QR − x‖_F ≤ 5k²u‖x‖₂: as accurate as
    Householder QR, in three passes over x instead of k BLAS-2 ones. numpy only (no scipy import for
    adapter runs): xᵀx by matmul, Q₁ by BLAS trsm (``solve_right_upper``).
    """
    m, k = x.shape
    r1 = _cholesky_upper(x.T @ x)  # (k, m) @ (m, k) -> (k, k)
    if r1 is None:
        return None
    sv = np.linalg.svd(r1, compute_uv=False)  # k × k: κ₂(x) = κ₂(R₁) to first order
    u = EPS64 / 2
    if not (sv[-1] > 0 and 8 * (sv[0] / sv[-1]) * math.sqrt(m * k * u + k * (k + 1) * u) <= 1):
        return None
    q1 = solve_right_upper(x, r1)  # Q₁ R₁ = x -> Q₁ (m, k)
    r2 = _cholesky_upper(q1.T @ q1)  # (k, m) @ (m, k) -> (k, k)
    return None if r2 is None else r2 @ r1  # (k, k) @ (k, k)


def solve_right_upper(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Q (m, k) with Q r = x, r upper triangular (k, k) and nonsingular, x (m, k) float64, as a new array.

    By the loaded BLAS library's ``cblas_dtrsm`` in x's own memory order (no transposed copy); row by row
    in numpy where no library exports it. Either way each row is backward stable: qᵢᵀ(r + Δᵢ) = xᵢᵀ with
    |Δᵢ| ≤ γ_k|r| (Higham 2002, Thm 8.5), the property CholeskyQR2's bound rests on.
    """
    trsm = _trsm()
    if trsm is None:
        return _forward_substitution(r, np.ascontiguousarray(x.T)).T
    fn, _ = trsm
    m, k = x.shape
    row_major = not x.flags.f_contiguous
    q = np.array(x, dtype=np.float64, order="C" if row_major else "F")  # a copy: trsm works in place
    a = np.ascontiguousarray(r) if row_major else np.asfortranarray(r)
    order, ldq = (_ROW_MAJOR, k) if row_major else (_COL_MAJOR, m)
    # B·A = alpha·B solved in place for B = Q (m, k), A = r: side Right, Upper, NoTrans, NonUnit
    fn(order, _RIGHT, _UPPER, _NO_TRANS, _NON_UNIT, m, k, 1.0, a.ctypes.data, k, q.ctypes.data, ldq)
    return q


_ROW_MAJOR, _COL_MAJOR, _NO_TRANS, _UPPER, _NON_UNIT, _RIGHT = 101, 102, 111, 121, 131, 142  # CBLAS enums


@functools.cache
def _trsm() -> tuple[Any, Any] | None:
    """The loaded BLAS's cblas_dtrsm(order, side, uplo, trans, diag, m, n, alpha, A, lda, B, ldb), or None."""
    found = blas_function("cblas_dtrsm")
    if found is not None:
        import ctypes

        fn, int_t = found
        fn.restype = None
        ints = [ctypes.c_int] * 5 + [int_t, int_t]
        fn.argtypes = ints + [ctypes.c_double, ctypes.c_void_p, int_t, ctypes.c_void_p, int_t]
    return found


def _forward_substitution(r: np.ndarray, bt: np.ndarray) -> np.ndarray:
    """Y (k, m) with rᵀ Y = bt, r upper triangular (k, k): row by row, each row one BLAS-2 product
    (backward stable, Higham 2002, Thm 8.5: (rᵀ + Δ) y = b with |Δ| ≤ γ_k |rᵀ|, as LAPACK's trsm)."""
    y = np.empty_like(bt)
    for i in range(r.shape[0]):
        y[i] = (bt[i] - r[:i, i] @ y[:i]) / r[i, i]  # (i,) @ (i, m) -> (m,)
    return y


def r_factor(x: np.ndarray) -> np.ndarray:
    """The R factor of a tall (m, k) float64 matrix: CholeskyQR2 where backward stable, else Householder."""
    if x.shape[0] >= x.shape[1]:
        r = cholqr2_r(x)
        if r is not None:
            return r
    return np.linalg.qr(x, mode="r")  # (min(m, k), k); callers hold one_thread()
