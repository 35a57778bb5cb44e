"""Independent float64 references for the numbers lorascope prints (docs/METRICS.md), written directly
with numpy."""

from __future__ import annotations

import numpy as np


def ref_sigma(dw: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(dw, dtype=np.float64), compute_uv=False)


def ref_metrics(dw: np.ndarray, base: np.ndarray | None = None) -> dict:
    """Every σ-based column, straight from the definitions, on the dense float64 update."""
    dw = np.asarray(dw, dtype=np.float64)
    m, n = dw.shape
    s = ref_sigma(dw)
    sq = s**2
    total = sq.sum()
    cum = np.cumsum(sq) / total

    def rank_at(tau):
        for k in range(1, len(s) + 1):
            if cum[k - 1] >= tau - 1e-12:
                return k
        return len(s)

    p = s[s > 0] / s.sum()
    beta = min(m, n) / max(m, n)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    out = {
        "fro_norm": float(np.sqrt((dw**2).sum())),
        "spectral_norm": float(s[0]),
        "stable_rank": float(total / s[0] ** 2),
        "entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
        "rank_90": rank_at(0.90),
        "rank_95": rank_at(0.95),
        "rank_99": rank_at(0.99),
        "numerical_rank": int((s > s[0] * max(m, n) * np.finfo(np.float32).eps).sum()),
        "gd_rank": int((s > omega * np.median(s)).sum()),
    }
    if base is not None:
        out["base_fro_norm"] = float(np.sqrt((np.asarray(base, np.float64) ** 2).sum()))
        out["relative_update"] = out["fro_norm"] / out["base_fro_norm"]
    return out


def planted(m: int, n: int, sigmas, seed: int = 0) -> np.ndarray:
    """An (m, n) float64 matrix with exactly the given singular values (random orthonormal U, V)."""
    rng = np.random.default_rng(seed)
    k = len(sigmas)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (u * np.asarray(sigmas, dtype=np.float64)) @ v.T


def planted_factors(m: int, n: int, sigmas, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(B (m, r), A (r, n)) whose product has exactly the given singular values, the factors not
    orthogonal."""
    rng = np.random.default_rng(seed)
    r = len(sigmas)
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    mix = rng.standard_normal((r, r)) + 3 * np.eye(r)  # invertible, not orthogonal
    b = (u * np.asarray(sigmas, dtype=np.float64)) @ mix
    a = np.linalg.solve(mix, v.T)
    return b, a


def assert_sigma_close(got, want, rtol: float, atol_rel: float = 0.0) -> None:
    """|got_i − want_i| ≤ rtol·want_i + atol_rel·σ1 for every i; a value one side lacks counts as 0."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    n = max(len(got), len(want))
    g = np.pad(got, (0, n - len(got)))
    w = np.pad(want, (0, n - len(want)))
    tol = rtol * np.abs(w) + atol_rel * (w[0] if n else 0.0)
    err = np.abs(g - w)
    bad = np.nonzero(err > tol)[0]
    assert bad.size == 0, (
        f"{bad.size} of {n} singular values differ: first at index {bad[0]}: got {g[bad[0]]:.9g}, "
        f"want {w[bad[0]]:.9g} (tolerance {tol[bad[0]]:.3g})"
    )
