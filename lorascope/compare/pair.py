"""Everything measured between the two updates of one module, and for each against its base weight.

``compare_pair`` composes the pure pieces — cosine (``updates``), φ (``subspace``), Table 7 and the
amplification factor (``amplification``), intruder dimensions (``intruders``) — on tensors already loaded;
the streaming driver (``run``) reads them one module at a time. No file access, no printing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..linalg import PRECISIONS, SVD, SVD_METHODS, Dense, Form, cosine, merged, svd
from ..metrics import numerical_rank
from .amplification import table7, top_singular_values
from .intruders import IntruderOptions, base_directions, find_intruders
from .subspace import GridOptions, similarity_grid, similarity_summary

Update = Form


@dataclass(frozen=True)
class PairOptions:
    """How one module is measured; φ's grid and the intruder settings have their own options."""

    grid: GridOptions = field(default_factory=GridOptions)
    # None: skip them (the dense SVDs of W and W + ΔW dominate the time)
    intruders: IntruderOptions | None = field(default_factory=IntruderOptions)
    # Table 7's r: None = each LoRA update's own rank; a dense update takes the other update's rank when
    # that one is low-rank (so both are projected on equally many directions), else grid.cap
    amp_rank: int | None = None
    precision: str = "float32"  # dense SVDs (W, W + ΔW, dense ΔW); factors and projections are float64
    # a dense ΔW's SVD (linalg.SVD_METHODS): 'exact', or the randomized top max(cap, amp_rank); the intruders'
    # W_tuned takes the same option (IntruderOptions.svd: one ``svd`` for every dense top-k of a comparison)
    svd: str = "exact"
    seed: int = 0  # random directions of Table 7 and randomized SVDs

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.svd not in SVD_METHODS:
            raise ValueError(f"svd must be one of {', '.join(SVD_METHODS)}, got {self.svd!r}")
        if self.amp_rank is not None and self.amp_rank < 1:
            raise ValueError(f"amp_rank must be a positive integer, got {self.amp_rank}")


@dataclass
class PairResult:
    """One module's share of every table: its compare_modules row, φ grid, Table 7 rows and intruder rows."""

    row: dict[str, Any]
    similarity: pd.DataFrame
    amplification: list[dict[str, Any]] = field(default_factory=list)
    intruders: list[pd.DataFrame] = field(default_factory=list)


def update_svd(a: Update, k: int | None = None, seed: int = 0, method: str = "exact") -> SVD:
    """Singular values and vectors of ΔW, cut to its numerical rank so no vector spans a zero direction.

    Factored forms: exact (every non-zero direction). Dense forms: the top ``k`` (all without one) by
    ``method`` — the route is ``lorascope.linalg.svd``'s.

    Returns:
        An ``SVD`` with float64 CPU tensors ``s`` (k,), ``u`` (m, k), ``v`` (n, k).
    """
    k = min(a.shape) if k is None else k
    full = svd(a, compute_uv=True, k=k, method=method, seed=seed)
    s = torch.as_tensor(np.asarray(full.s, np.float64))
    keep = min(numerical_rank(s.numpy(), a.shape), k)
    return SVD(
        s[:keep],
        full.fro_norm,
        full.method,
        full.complete,
        torch.as_tensor(full.u)[:, :keep].to(torch.float64),
        torch.as_tensor(full.v)[:, :keep].to(torch.float64),
    )


def svd_of(a: Update, opts: PairOptions) -> SVD:
    """ΔW's singular vectors: factored for low-rank, exact (or randomized top-k) for dense."""
    k = None if opts.svd == "exact" else max(opts.grid.cap, opts.amp_rank or 0)
    return update_svd(a, k, opts.seed, opts.svd)


def vectors(svd: SVD, side: str) -> np.ndarray:
    return (svd.u if side == "left" else svd.v).numpy()


def amp_rank(svd: SVD, a: Update, partner: Update | None, partner_svd: SVD | None, opts: PairOptions) -> int:
    """r for Table 7 (see ``PairOptions.amp_rank``), never above ΔW's numerical rank."""
    if opts.amp_rank is not None:
        want = opts.amp_rank
    elif not isinstance(a, Dense):  # a factored form: its own exact rank
        want = len(svd.s)
    elif partner is not None and not isinstance(partner, Dense) and partner_svd is not None:
        want = len(partner_svd.s)
    else:
        want = opts.grid.cap
    return min(want, len(svd.s))


def amplification_row(
    w: torch.Tensor, svd: SVD, r: int, base_sigma: np.ndarray, rng: np.random.Generator, w_fro: float
) -> dict[str, Any]:
    """Table 7 for one update on its top-r directions, plus the share of ΔW's energy they hold."""
    s = np.asarray(svd.s, np.float64)
    if r == 0:  # a zero update has no directions to project on
        nan = float("nan")
        return {
            "rank": 0,
            "proj_delta": nan,
            "proj_w": nan,
            "proj_random": nan,
            "random_expected": nan,
            "base_fro_norm": w_fro,
            "amplification": nan,
            "delta_fro": svd.fro_norm,
            "energy_r": nan,
        }
    energy = float(np.sum(s[:r] ** 2) / svd.fro_norm**2) if svd.fro_norm > 0 else float("nan")
    out = table7(w, svd.u[:, :r], svd.v[:, :r], svd.fro_norm, base_sigma, rng, w_fro)
    return {**out, "delta_fro": svd.fro_norm, "energy_r": energy}


def intruder_rows(
    w: torch.Tensor, a: Update, base_dirs: tuple[np.ndarray, torch.Tensor], opts: IntruderOptions, seed: int
) -> pd.DataFrame:
    """Algorithm 1 of Shuttleworth et al. 2024 on W_tuned = W + ΔW."""
    base_s, base_u = base_dirs
    return find_intruders(merged(w, a), base_u, base_s, opts, seed)


def compare_pair(
    x: Update,
    y: Update,
    w: torch.Tensor | None = None,
    opts: PairOptions = PairOptions(),
    labels: tuple[str, str] = ("x", "y"),
    rng: np.random.Generator | None = None,
) -> PairResult:
    """Cosine, φ and (with the base weight ``w``) Table 7 and intruder dimensions of two updates of one
    matrix.

    Args:
        x: ΔW₁ (m, n), factors or dense.
        y: ΔW₂ (m, n).
        w: (m, n) the base weight both updates apply to (in the dense precision), or None.
        opts: what to compute and how.
        labels: names of the two updates in the long tables.
        rng: draws Table 7's random directions (default: seeded by ``opts.seed``).

    Returns:
        A ``PairResult``; its row holds cosine, ranks, norms, the φ summary and, with a base, amplification
        and intruder counts per update (columns suffixed _x and _y).
    """
    start = time.perf_counter()
    rng = rng or np.random.default_rng(opts.seed)
    svd_x, svd_y = svd_of(x, opts), svd_of(y, opts)
    side = opts.grid.side
    vx, vy = vectors(svd_x, side), vectors(svd_y, side)
    row: dict[str, Any] = {
        "rank_x": len(svd_x.s),
        "rank_y": len(svd_y.s),
        "fro_x": svd_x.fro_norm,
        "fro_y": svd_y.fro_norm,
        "cosine": cosine(x, y),
        "side": side,
        **similarity_summary(vx, vy, opts.grid.cap),
    }
    result = PairResult(row, similarity_grid(vx, vy, opts.grid))
    if w is None:
        row["seconds"] = time.perf_counter() - start
        return result
    w_fro = float(torch.linalg.vector_norm(w, dtype=torch.float64).cpu())
    ranks = {"x": amp_rank(svd_x, x, y, svd_y, opts), "y": amp_rank(svd_y, y, x, svd_x, opts)}
    base_dirs = base_directions(w) if opts.intruders is not None else None
    base_sigma = (
        base_dirs[0] if base_dirs is not None else top_singular_values(w, max(1, *ranks.values()), opts.seed)
    )
    row["base_fro_norm"] = w_fro
    for key, label, a, a_svd in (("x", labels[0], x, svd_x), ("y", labels[1], y, svd_y)):
        amp = {"update": label, **amplification_row(w, a_svd, ranks[key], base_sigma, rng, w_fro)}
        result.amplification.append(amp)
        row[f"amplification_{key}"] = amp["amplification"]
        if base_dirs is not None:
            table = intruder_rows(w, a, base_dirs, opts.intruders, opts.seed)
            result.intruders.append(table.assign(update=label))
            row[f"intruders_{key}"] = int(table["intruder"].sum())
    row["seconds"] = time.perf_counter() - start
    return result


def single_intruders(w: torch.Tensor, a: Update, opts: IntruderOptions, seed: int = 0) -> pd.DataFrame:
    """Intruder rows of one update on its base (``lorascope intruders``)."""
    return intruder_rows(w, a, base_directions(w), opts, seed)
