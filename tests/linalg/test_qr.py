"""lorascope/linalg/qr.py: R factors of tall matrices — CholeskyQR2 with its triangular solve, Householder
where CholeskyQR2 is not backward stable."""

import numpy as np
import pytest

from lorascope.linalg import qr
from lorascope.linalg.qr import cholqr2_r, r_factor, solve_right_upper


def test_cholqr2_r_factor_equals_householder_up_to_signs():
    x = np.random.default_rng(17).standard_normal((2000, 16)) * np.geomspace(1, 1e-4, 16)
    r = cholqr2_r(x)
    h = np.linalg.qr(x, mode="r")
    np.testing.assert_allclose(np.abs(r), np.abs(h), rtol=1e-9, atol=1e-13 * np.abs(h).max())


@pytest.mark.parametrize("order", ["C", "F"])
def test_solve_right_upper_by_blas_trsm_equals_substitution_in_either_memory_order(order):
    """Q·R = X solved in X's own memory order by the loaded BLAS's trsm, against row-by-row substitution
    and against the residual of the float64 product; X is left untouched."""
    rng = np.random.default_rng(23)
    x = np.array(rng.standard_normal((3000, 12)) * np.geomspace(1, 1e-4, 12), order=order)
    keep = x.copy()
    r = np.linalg.cholesky(x.T @ x).T
    q = solve_right_upper(x, r)
    by_rows = qr._forward_substitution(r, np.ascontiguousarray(x.T)).T
    assert np.array_equal(x, keep)
    assert np.abs(q @ r - x).max() <= 16 * np.finfo(float).eps * np.abs(x).max()
    np.testing.assert_allclose(q, by_rows, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-9)  # Q₁ of CholeskyQR: orthonormal to κ²ε


def test_cholqr2_without_a_blas_trsm_gives_the_same_r(monkeypatch):
    """Where the BLAS library exports no cblas_dtrsm, the numpy substitution serves; R agrees to rounding."""
    x = np.random.default_rng(24).standard_normal((2000, 16)) * np.geomspace(1, 1e-4, 16)
    with_blas = cholqr2_r(x)
    monkeypatch.setattr(qr, "_trsm", lambda: None)
    without = cholqr2_r(x)
    np.testing.assert_allclose(without, with_blas, rtol=1e-12, atol=1e-15 * np.abs(with_blas).max())


def test_r_factor_of_a_wide_or_ill_conditioned_matrix_is_householders():
    """r_factor: CholeskyQR2 only for tall matrices it can factor stably; otherwise LAPACK's Householder R."""
    rng = np.random.default_rng(25)
    wide = rng.standard_normal((5, 9))
    np.testing.assert_array_equal(r_factor(wide), np.linalg.qr(wide, mode="r"))
    q, _ = np.linalg.qr(rng.standard_normal((400, 6)))
    ill = q * np.array([1.0, 1e-2, 1e-4, 1e-6, 1e-9, 1e-13])  # κ = 1e13: CholeskyQR2's condition fails
    assert cholqr2_r(ill) is None
    np.testing.assert_array_equal(r_factor(ill), np.linalg.qr(ill, mode="r"))
