"""lorascope/metrics.py against hand-worked values, numpy float64 references and Gaussian sanity values."""

import math

import numpy as np
import pytest
from refs import planted, ref_metrics, ref_sigma

from lorascope import metrics


def test_hand_worked_spectrum():
    # σ = [3, 1]: energy = [0.9, 1.0]; stable rank 10/9; p = [0.75, 0.25]
    s = np.array([3.0, 1.0])
    assert metrics.energy(s).tolist() == pytest.approx([0.9, 1.0])
    assert metrics.rank_at_energy(s, 0.90) == 1  # exactly on the level: not pushed past it by rounding
    assert metrics.rank_at_energy(s, 0.95) == 2
    assert metrics.stable_rank(s) == pytest.approx(10 / 9)
    assert metrics.entropy_rank(s) == pytest.approx(
        math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    )
    assert metrics.entropy_rank(np.ones(7)) == pytest.approx(7.0)  # flat spectrum: all directions count


def test_all_zero_update():
    row = metrics.module_metrics(np.zeros(4), (4, 6), 0.0)
    assert row["rank_90"] == 0 and row["entropy_rank"] == 0.0 and row["stable_rank"] == 0.0
    assert row["numerical_rank"] == 0


@pytest.mark.parametrize("shape", [(40, 40), (64, 24), (24, 64)])
def test_module_metrics_match_numpy_reference(shape):
    m, n = shape
    rng = np.random.default_rng(1)
    dw = planted(m, n, np.geomspace(5.0, 0.01, min(m, n)), seed=2) + 1e-3 * rng.standard_normal((m, n))
    base = rng.standard_normal((m, n))
    ref = ref_metrics(dw, base)
    got = metrics.module_metrics(ref_sigma(dw), shape, ref["fro_norm"], True, ref["base_fro_norm"])
    for key, want in ref.items():
        assert got[key] == pytest.approx(want, rel=1e-9), key


def test_gaussian_sanity_values():
    """docs/METRICS.md: n×n i.i.d. Gaussian → rank_90 ≈ 0.51n, entropy_rank ≈ 0.805n, stable_rank ≈ n/4."""
    n = 400
    g = np.random.default_rng(0).standard_normal((n, n))
    s = ref_sigma(g)
    row = metrics.module_metrics(s, (n, n), float(np.linalg.norm(g)))
    assert row["rank_90"] / n == pytest.approx(0.51, abs=0.02)
    assert row["entropy_rank"] / n == pytest.approx(0.805, abs=0.01)
    assert row["stable_rank"] / n == pytest.approx(0.25, abs=0.03)
    assert row["gd_rank"] == 0  # pure noise: nothing above the Gavish–Donoho threshold


def test_gd_rank_recovers_planted_signal_in_noise():
    m, n, r = 300, 200, 6
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((m, n)) / math.sqrt(n)
    signal = planted(m, n, np.linspace(12, 6, r), seed=4)
    assert metrics.gd_rank(ref_sigma(signal + noise), (m, n)) == r


def test_gd_rank_of_exact_low_rank_counts_every_nonzero_value():
    # r non-zero values padded with exact zeros: the median is 0, so every non-zero value is signal
    assert metrics.gd_rank(np.array([3.0, 2.0, 1.0]), (50, 40), complete=True) == 3
    assert metrics.gd_rank(np.array([3.0, 2.0, 1.0]), (50, 40), complete=False) is None


def _lambda_star(beta: float) -> float:
    """Gavish & Donoho 2014, Eq. (11): the optimal threshold with known noise, in units of sqrt(n)·σ."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + math.sqrt(beta**2 + 14 * beta + 1)))


def _marchenko_pastur_median(beta: float) -> float:
    """The median μ_β of the Marchenko–Pastur law of ratio β (variance 1), from its density
    sqrt((β₊ − t)(t − β₋)) / (2πβt) on [β₋, β₊], β± = (1 ± √β)², by quadrature and root finding."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    density = lambda t: math.sqrt(max((hi - t) * (t - lo), 0.0)) / (2 * math.pi * beta * t)  # noqa: E731
    return brentq(lambda x: quad(density, lo, x, limit=200)[0] - 0.5, lo, hi, xtol=1e-13)


def test_gd_omega_is_the_papers_coefficient():
    """ω(β) = λ*(β) / sqrt(μ_β) (Gavish & Donoho 2014, Eq. (5) and its definition), computed here from the
    paper's λ* and a numerical Marchenko–Pastur median: the paper's values (λ*(1) = 4/√3, ω(1) ≈ 2.858) come
    out, and ``gd_omega``, the paper's cubic approximation, stays within 0.5 % of the exact coefficient."""
    assert _lambda_star(1.0) == pytest.approx(4 / math.sqrt(3), rel=1e-12)
    exact = {
        b: _lambda_star(b) / math.sqrt(_marchenko_pastur_median(b)) for b in (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
    }
    assert exact[1.0] == pytest.approx(2.858, abs=5e-4)  # the paper's "2.858 · y_med" for square matrices
    for beta, want in exact.items():
        assert metrics.gd_omega(beta) == pytest.approx(want, rel=5e-3), beta


def test_top_k_marks_ranks_beyond_k_instead_of_guessing():
    s = np.array([3.0, 2.0, 1.0])  # top-3 of a matrix whose ‖ΔW‖_F² = 100
    row = metrics.module_metrics(s, (100, 100), 10.0, complete=False)
    assert row["rank_90"] is None and row["rank_beyond_k"]
    assert row["entropy_rank"] is None and row["gd_rank"] is None
    assert row["stable_rank"] == pytest.approx(100 / 9)  # exact from ‖ΔW‖_F
    # ‖ΔW‖_F² = 14 / 0.999: energies 0.642, 0.928, 0.999, all levels reached within the top 3
    row = metrics.module_metrics(s, (100, 100), math.sqrt(14.0 / 0.999), complete=False)
    assert (row["rank_90"], row["rank_95"], row["rank_99"]) == (2, 3, 3)
    assert row["rank_beyond_k"] is False


def test_numerical_rank_uses_float32_tolerance():
    s = np.array([1.0, 1e-3, 1e-6])  # tolerance 1 · 100 · 1.19e-7 ≈ 1.2e-5
    assert metrics.numerical_rank(s, (100, 50)) == 2


def test_unsorted_sigma_is_rejected():
    with pytest.raises(ValueError):
        metrics.module_metrics([1.0, 2.0], (2, 2), 3.0)
