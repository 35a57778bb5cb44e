"""The one-analysis page's later sections: update magnitudes, the rank sweep, and the table of all
modules.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from ..tables import MODULE_COLUMNS
from . import data
from . import figures as fg
from .blocks import Block, FigureBlock, NoteBlock, TableBlock
from .run_context import SECTIONS, RunContext


# ---- 6. magnitudes -----------------------------------------------------------------------------


@SECTIONS.register("magnitudes", "Update magnitudes", order=60)
def magnitude_section(ctx: RunContext) -> list[Block] | None:
    m = ctx.modules
    if m.empty:
        return None
    unit = data.SIZE_UNITS[ctx.size]
    values = {
        t: pd.DataFrame(
            {
                "value": pd.to_numeric(m.loc[m["type"] == t, ctx.size], errors="coerce"),
                "layer": data.layer_values(m[m["type"] == t]),
            }
        )
        for t in ctx.types
    }
    boxed = [t for t, v in values.items() if v["value"].notna().sum() >= fg.BOX_MIN_MODULES]
    if len(boxed) == len(values):
        how = (
            "the box spans the middle half of its module type, the orange bar is the median and the "
            "whiskers reach 5 % and 95 %."
        )
    elif boxed:
        how = (
            f"module types with {fg.BOX_MIN_MODULES} or more modules also get a box (middle half, orange "
            "median, whiskers at 5 % and 95 %); fewer are shown as dots alone."
        )
    else:
        how = (
            f"every module type has fewer than {fg.BOX_MIN_MODULES} modules, so each is shown as its dots "
            "alone, without a box."
        )
    blocks: list[Block] = [
        FigureBlock(
            "magnitude_distribution",
            f"Each dot is one module (coloured by layer); {how}",
            functools.partial(fg.magnitude_distribution, values, ctx.labels, unit),
        )
    ]
    if m["layer"].notna().any():
        grid = ctx.layer_grid(ctx.size)
        blocks.append(
            FigureBlock(
                "magnitude_profile",
                "Each line follows one module type through the depth of the model "
                "(mean where several modules share a layer).",
                functools.partial(fg.layer_profile, grid.values, ctx.labels, unit),
            )
        )
    vectors = ctx.results.vectors
    if vectors is not None and len(vectors):
        col = "relative_update" if vectors["relative_update"].notna().any() else "fro_norm"
        top = vectors.assign(**{col: pd.to_numeric(vectors[col], errors="coerce")}).nlargest(
            min(10, len(vectors)), col
        )
        blocks.append(
            TableBlock(
                top[["name", "size", "fro_norm", "relative_update"]],
                caption=f"Largest 1-D updates (biases, norm weights) by {col}, of {len(vectors)}",
            )
        )
    return blocks


# ---- 7. rank sweep -----------------------------------------------------------------------------


@SECTIONS.register("sweep", "Rank sweep", order=70)
def sweep_section(ctx: RunContext) -> list[Block] | None:
    sweep = data.uniform_rank_sweep(ctx.modules, ctx.results.spectra)
    if sweep.table.empty:
        return None
    ranks = sorted({r for rs in ctx.nominal_ranks.values() for r in rs})
    actual = data.actual_adapter_parameters(ctx.modules)
    blocks: list[Block] = [
        FigureBlock(
            "sweep_error",
            "The error left if every module were truncated to the same rank k, over the whole "
            "model: the dotted lines are where 90 / 95 / 99 % of the energy is kept.",
            functools.partial(fg.sweep_error, sweep.table, ranks, sweep.k_limit),
            width="half",
        ),
        FigureBlock(
            "sweep_params",
            "The energy kept against the adapter parameters a uniform rank k would cost; "
            "the curve flattening early means a smaller rank would do.",
            functools.partial(fg.sweep_energy_params, sweep.table, actual),
            width="half",
        ),
    ]
    if sweep.truncated:
        blocks.append(
            NoteBlock(
                f"{len(sweep.truncated)} module(s) have only their top singular values stored (randomized "
                "top-k): the error uses the exact Frobenius norms (fro_norm) from the modules table and "
                f"the sweep stops at k = {sweep.k_limit}.",
                level="warn",
            )
        )
    blocks.append(TableBlock(data.sweep_milestones(sweep), caption="The sweep at powers of two"))
    return blocks


# ---- 8. modules table --------------------------------------------------------------------------


@SECTIONS.register("modules", "All modules", order=80)
def modules_section(ctx: RunContext) -> list[Block]:
    m = ctx.results.modules
    cols = [c for c in MODULE_COLUMNS if c in m.columns] + [c for c in m.columns if c not in MODULE_COLUMNS]
    table = m[cols]
    note = (
        "Click a column header to sort (again to reverse); type in the box to filter by name. "
        "Empty cells are values that could not be determined (a rank beyond a randomized top-k, no base "
        "given)."
    )
    blocks: list[Block] = [
        NoteBlock(note),
        TableBlock(table, caption=f"{len(table)} modules", interactive=True, csv_name="modules.csv"),
    ]
    if np.any(m["rank_beyond_k"].to_numpy(dtype=bool)):
        blocks.insert(
            0,
            NoteBlock(
                "Some spectra are a randomized top-k: ranks beyond the computed k are left empty.",
                level="warn",
            ),
        )
    return blocks
