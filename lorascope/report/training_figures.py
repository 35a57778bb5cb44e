"""The report's training section: effective rank, energy and magnitude of every adapter module against step.

It appears when a results folder holds ``training_spectra.csv`` (written by ``lorascope.callbacks`` during
training). One line per module type — the median over its modules at each recorded step — with the band from
the 25th to the 75th percentile, so the figure reads the same at 10 modules as at 500. The figure is a pure
function (a table in, a matplotlib ``Figure`` out); the section builder reads the CSV.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..names import module_type
from ..results import TRAINING_CSV
from . import data
from . import figures as fg
from .blocks import Block, FigureBlock, NoteBlock, TableBlock
from .sections import SECTIONS, RunContext

PANELS = {  # column -> (panel title, y label); linear axes from 0: a run starts from ΔW = 0
    "entropy_rank": ("effective rank", "entropy_rank (directions)"),
    "rank_90": ("energy", "rank_90: directions holding 90 % of ‖ΔW‖²"),
    "fro_norm": ("magnitude", "‖ΔW‖_F (fro_norm)"),
}
BAND = (0.25, 0.75)


def trajectories(table: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """Per module type: the median and the 25–75 % band of ``column`` over its modules at each step.

    Returns:
        type -> DataFrame indexed by step with columns median, low, high.
    """
    t = table.assign(
        type=table["module"].astype(str).map(module_type), value=pd.to_numeric(table[column], errors="coerce")
    )
    out = {}
    for kind, group in t.groupby("type", sort=False):
        by_step = group.groupby("step")["value"]
        out[str(kind)] = pd.DataFrame(
            {"median": by_step.median(), "low": by_step.quantile(BAND[0]), "high": by_step.quantile(BAND[1])}
        ).sort_index()
    return out


@fg.styled
def training_figure(table: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Effective rank, energy (rank_90) and magnitude against step: one line per module type, 25–75 % band."""
    fig = Figure(figsize=(fg.FULL_WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    types = data.type_order(table)
    labels = labels or data.short_labels(types)
    many_steps = table["step"].nunique() > 40
    for ax, (column, (title, ylabel)) in zip(axes, PANELS.items()):
        curves = trajectories(table, column)
        for i, kind in enumerate(types):
            c = curves.get(kind)
            if c is None or c["median"].isna().all():
                continue
            style = fg.category_style(i)
            x = c.index.to_numpy(dtype=np.float64)
            ax.fill_between(x, c["low"], c["high"], color=style["color"], alpha=0.15, linewidth=0)
            ax.plot(
                x,
                c["median"],
                linewidth=1.5,
                marker=None if many_steps else "o",
                markersize=2.8,
                label=labels.get(kind, kind),
                **style,
            )
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ncol = 1 if len(types) <= 10 else 2
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside right upper",
        ncol=ncol,
        frameon=False,
        title="module type",
    )
    return fig


def step_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per module type, the medians at the first and the last recorded step."""
    first, last = int(table["step"].min()), int(table["step"].max())
    rows = []
    for kind, group in table.assign(type=table["module"].astype(str).map(module_type)).groupby(
        "type", sort=True
    ):
        row = {"module type": kind, "modules": int(group["name"].nunique())}
        for step in (first, last):
            at = group[group["step"] == step]
            for col in PANELS:
                row[f"{col} @ {step}"] = float(pd.to_numeric(at[col], errors="coerce").median())
        rows.append(row)
    return pd.DataFrame(rows)


@SECTIONS.register("during-training", "During training", order=25, needs=(TRAINING_CSV,))
def training_section(ctx: RunContext) -> list[Block] | None:
    from ..training_record import read_training

    table = read_training(ctx.results.path)
    if table is None or table.empty:
        return None
    steps = sorted(table["step"].unique())
    per_step = table.groupby("step")["seconds"].sum()
    blocks: list[Block] = [
        NoteBlock(
            f"{table['name'].nunique()} adapter modules recorded at {len(steps)} steps ({steps[0]} to "
            f"{steps[-1]}) while training; computing the spectra took {per_step.median():.3g} s per recorded "
            "step (median). The rest of this page shows the adapter at the last recorded step."
        ),
        FigureBlock(
            "training_spectra",
            "Each line follows one module type through training: the median over its modules "
            "at each recorded step, the shaded band the middle half of them. Left: entropy "
            "rank; middle: directions that hold 90 % of the update's energy; right: ‖ΔW‖_F.",
            functools.partial(training_figure, table),
        ),
        TableBlock(
            step_table(table), caption="Medians per module type at the first and the last recorded step"
        ),
    ]
    return blocks
