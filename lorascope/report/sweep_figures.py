"""The report's rank-sweep figures: truncation error against rank, and energy kept against the
parameters spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from .data import ENERGY_LEVELS
from .figure_layout import new_figure
from .figure_style import HALF_WIDTH, OKABE_ITO, index_axis, lay_out, log_ticks, mark_ranks, styled


def _energy_error_guides(ax, levels: Sequence[float]) -> None:
    for level in levels:
        err = math.sqrt(1 - level)
        ax.axhline(err, color="0.35", linewidth=0.7, linestyle=":")
        ax.annotate(
            f"{level:.0%} energy",
            (1.0, err),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
        )


@styled
def sweep_error(
    table: pd.DataFrame, ranks: Sequence[int], k_limit: int | None, levels: Sequence[float] = ENERGY_LEVELS
) -> Figure:
    """Aggregate relative Frobenius error of a uniform rank-k truncation against k."""
    fig = new_figure(HALF_WIDTH, 3.6)
    ax = fig.add_subplot()
    k = table["k"].to_numpy()
    ax.plot(
        k,
        table["error"],
        color=OKABE_ITO[0],
        linewidth=1.8,
        marker="o" if len(k) <= 40 else None,
        markersize=3,
    )
    index_axis(ax, int(k.max()), log=k.max() > 64)
    _energy_error_guides(ax, levels)
    mark_ranks(ax, ranks)
    ax.set_ylim(0, max(1.0, float(table["error"].max())) * 1.03)
    ax.set_xlabel("uniform rank k (every module truncated to k)")
    ax.set_ylabel("relative error  ‖ΔW − ΔWₖ‖ / ‖ΔW‖ (Frobenius)\n(all modules together)")
    if k_limit:
        ax.set_title(f"stops at k = {k_limit}: spectra beyond it were not computed", fontsize=8, color="0.3")
    lay_out(fig, [ax])
    return fig


@styled
def sweep_energy_params(
    table: pd.DataFrame, actual_params: int | None, levels: Sequence[float] = ENERGY_LEVELS
) -> Figure:
    """Retained energy against the adapter parameters a uniform rank k costs, ranks k labelled."""
    fig = new_figure(HALF_WIDTH, 3.6)
    ax = fig.add_subplot()
    x, y, k = table["adapter_parameters"].to_numpy(), table["energy"].to_numpy(), table["k"].to_numpy()
    ax.plot(x, y, color=OKABE_ITO[2], linewidth=1.8)
    pow2 = [i for i, kk in enumerate(k) if kk & (kk - 1) == 0]
    ax.scatter(x[pow2], y[pow2], s=14, color=OKABE_ITO[2], zorder=3)
    low, high = min(0.0, float(y.min())), 1.03
    for n, i in enumerate(pow2[:: max(1, math.ceil(len(pow2) / 10))]):
        room_below = (y[i] - low) / (high - low) > 0.1  # else a label below would sit on the tick labels
        ax.annotate(
            f"k={k[i]}",
            (x[i], y[i]),
            xytext=(5, -11 if n % 2 == 0 and room_below else 5),
            textcoords="offset points",
            fontsize=7,
            color="0.25",
        )
    for level in levels:
        ax.axhline(level, color="0.35", linewidth=0.7, linestyle=":")
        ax.annotate(
            f"{level:.0%}",
            (0.0, level),
            xycoords=("axes fraction", "data"),
            xytext=(2, 1),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
            va="bottom",
        )
    if actual_params:
        ax.axvline(actual_params, color=OKABE_ITO[3], linestyle="--", linewidth=1.1)
        ax.annotate(
            f"this adapter\n{_si(actual_params)} parameters",
            (actual_params, 0.03),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 0),
            textcoords="offset points",
            fontsize=7,
            color=OKABE_ITO[3],
            ha="right",
        )
    ax.set_xscale("log")
    ax.set_ylim(low, high)
    ax.autoscale_view()
    log_ticks(ax.xaxis, _si)  # '20 M', '50 M', '100 M': within two decades the 2× and 5× ticks are labelled
    ax.set_xlabel("adapter parameters at uniform rank k  Σ k·(rows + cols)")
    ax.set_ylabel("energy kept (all modules together)")
    lay_out(fig, [ax])
    return fig


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f}"
