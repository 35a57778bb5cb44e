"""The sections of a one-analysis report, registered in ``SECTIONS`` in page order.

Each builder turns a ``RunContext`` (saved results, read once) into blocks: facts, tables, notes
and deferred figures. Computing is in ``data.py``, drawing in ``figures.py``, HTML in ``html.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from ..results import MODULE_COLUMNS, Results
from . import data
from . import figures as fg
from .blocks import Block, CardsBlock, FactsBlock, FigureBlock, NoteBlock, TableBlock
from .formatting import counted, human_bytes, human_count, plain, seconds
from .registry import SectionRegistry, folder_has

KIND_TEXT = {
    "adapter": "a LoRA adapter alone: ΔW = s·B@A",
    "adapter+base": (
        "an adapter on its base model: ΔW = s·B@A (DoRA: the exact merged update), with base norms"
    ),
    "full-diff": "a base and a fine-tuned checkpoint: ΔW = W_tuned − W_base",
}
HEATMAP_METRICS = {  # column -> (panel title, colour-bar label with units)
    "entropy_rank": ("entropy_rank", "entropy rank (directions)"),
    "rank_90": ("rank_90", "rank_90 (directions for 90 % energy)"),
    "relative_update": ("relative_update", data.SIZE_UNITS["relative_update"]),
    "fro_norm": ("fro_norm", data.SIZE_UNITS["fro_norm"]),
    "stable_rank": ("stable_rank", "stable rank Σσ²/σ₁²"),
}


@dataclass
class RunContext:
    """One results folder as the sections see it, with the derived tables each section shares."""

    results: Results

    def has_file(self, name: str) -> bool:
        return folder_has(self.results.path, name)

    @property
    def summary(self) -> dict[str, Any]:
        return self.results.summary or {}

    @cached_property
    def all_modules(self) -> pd.DataFrame:
        """Every analyzed module, with its type."""
        return data.with_types(self.results.modules)

    @cached_property
    def modules(self) -> pd.DataFrame:
        """What the statistics and figures summarize: the modules whose ΔW is not exactly zero."""
        return data.updated(self.all_modules)

    @cached_property
    def zeros(self) -> pd.DataFrame:
        """Modules whose ΔW is exactly zero (not trained): named on the page, left out of its statistics."""
        return data.zero_updates(self.all_modules)

    @cached_property
    def types(self) -> list[str]:
        return data.type_order(self.modules if len(self.modules) else self.all_modules)

    @cached_property
    def labels(self) -> dict[str, str]:
        return data.short_labels(self.types)

    @cached_property
    def size(self) -> str:
        return data.size_column(self.modules)

    @cached_property
    def is_adapter(self) -> bool:
        return bool(self.modules["lora_rank"].notna().any())


SECTIONS: SectionRegistry[RunContext] = SectionRegistry()


# ---- 1. inputs and run -------------------------------------------------------------------------


@SECTIONS.register("inputs", "Inputs and run", order=10)
def inputs_section(ctx: RunContext) -> list[Block]:
    s = ctx.summary
    blocks: list[Block] = []
    kind = s.get("kind")
    if kind:
        blocks.append(NoteBlock(f"This analysis read {KIND_TEXT.get(kind, kind)}."))
    inputs = s.get("inputs") or []
    if inputs:
        blocks.append(TableBlock(inputs_table(inputs), caption="Inputs"))
    blocks.append(FactsBlock(run_facts(s, len(ctx.all_modules)), title="Run"))
    if s.get("options"):
        blocks.append(FactsBlock([(k, plain(v)) for k, v in s["options"].items()], title="Options"))
    if s.get("versions"):
        blocks.append(FactsBlock([(k, plain(v)) for k, v in s["versions"].items()], title="Library versions"))
    blocks.extend(warning_blocks(s.get("warnings") or []))
    return blocks


def inputs_table(inputs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for i in inputs:
        sha = i.get("sha256")
        rows.append(
            {
                "role": i.get("role", ""),
                "path": i.get("path", ""),
                "format": i.get("format", ""),
                "size": human_bytes(i.get("bytes")),
                "tensors": i.get("n_tensors"),
                "sha256": f"{sha[:16]}…" if sha else "not computed",
            }
        )
    return pd.DataFrame(rows)


def run_facts(s: dict[str, Any], n_modules: int) -> list[tuple[str, str]]:
    totals, timing = s.get("totals") or {}, s.get("timing") or {}
    facts = [
        ("created", plain(s.get("created"))),
        ("lorascope", plain(s.get("lorascope_version"))),
        ("time taken", seconds(timing.get("total_seconds"))),
        ("modules analyzed", str(totals.get("modules", n_modules))),
        ("1-D tensors (biases, norms)", plain(totals.get("vectors"))),
        ("skipped or unpaired tensors", plain(totals.get("skipped", len(s.get("warnings") or [])))),
        ("ΔW parameters", human_count(totals.get("delta_parameters"))),
    ]
    if totals.get("adapter_parameters"):
        facts.append(("adapter parameters", human_count(totals["adapter_parameters"])))
    if "gpu" in timing:
        facts.append(("GPU", plain(timing["gpu"])))
    return facts


def warning_blocks(warnings: list[dict[str, Any]]) -> list[Block]:
    if not warnings:
        return [NoteBlock("No warnings: every tensor was paired and analyzed.")]
    table = pd.DataFrame([{"name": w.get("name", ""), "reason": w.get("reason", "")} for w in warnings])
    return [
        NoteBlock(
            f"{counted(len(warnings), 'tensor')} {'was' if len(warnings) == 1 else 'were'} skipped or "
            "left unpaired; the reasons are below.",
            level="warn",
        ),
        TableBlock(table, caption=f"Warnings ({len(warnings)})", collapsed=len(warnings) > 12),
    ]


# ---- 2. headline numbers -----------------------------------------------------------------------


@SECTIONS.register("headline", "Headline numbers", order=20)
def headline_section(ctx: RunContext) -> list[Block] | None:
    m = ctx.modules
    if ctx.all_modules.empty:
        return [NoteBlock("No module was analyzed: the results hold no matrix update.", level="warn")]
    if m.empty:
        return [
            NoteBlock(
                f"Every one of the {len(ctx.all_modules)} modules has ΔW = 0 exactly: the "
                "fine-tune changed no matrix.",
                level="warn",
            )
        ]
    blocks: list[Block] = [CardsBlock(headline_cards(ctx))]
    if len(ctx.zeros):
        blocks.append(
            NoteBlock(
                f"{len(ctx.zeros)} of {len(ctx.all_modules)} modules have ΔW = 0 exactly (not trained): "
                f"{data.name_list(list(ctx.zeros['name']))}. Their ranks are 0 by definition, so the "
                "numbers, heatmaps and figures of this page leave them out; the modules table lists them.",
                level="warn",
            )
        )
    blocks.append(
        TableBlock(
            data.type_summary(m, ctx.types),
            caption="Per module type: median and range (min–max) of the effective ranks",
        )
    )
    blocks.append(TableBlock(data.largest(m, ctx.size, 10), caption=f"Largest updates by {ctx.size}"))
    if ctx.is_adapter:
        blocks.append(
            TableBlock(
                data.rank_use(m, ctx.types),
                caption="Nominal adapter rank r beside the rank the updates actually use (medians per module "
                "type): rank_99 / r near 1 means the adapter uses all of its rank",
            )
        )
    return blocks


def headline_cards(ctx: RunContext) -> list[tuple[str, str, str]]:
    m = ctx.modules
    n_layers = int(m["layer"].dropna().nunique())
    cards = [
        (
            "modules analyzed",
            str(len(ctx.all_modules)),
            f"{len(ctx.types)} module types, {n_layers} layers"
            + (f", {len(ctx.zeros)} with ΔW = 0" if len(ctx.zeros) else ""),
        ),
        ("median entropy_rank", _num(m["entropy_rank"].median()), f"range {_range(m['entropy_rank'])}"),
        ("median rank_90", _num(m["rank_90"].astype("float64").median()), f"range {_range(m['rank_90'])}"),
    ]
    top = data.largest(m, ctx.size, 1)
    if len(top):
        cards.append((f"largest {ctx.size}", _num(top[ctx.size].iloc[0]), str(top["name"].iloc[0])))
    if ctx.is_adapter:
        r = data.ranks_text(m["lora_rank"])
        used = m["rank_99"].astype("float64").median()
        cards.append(("r / median rank_99", f"{r} / {_num(used)}", "nominal rank / rank used"))
    return cards


def _num(v: Any) -> str:
    return "–" if pd.isna(v) else f"{float(v):.3g}"


def _range(s: pd.Series) -> str:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return f"{v.min():.3g}–{v.max():.3g}" if len(v) else "–"


# ---- 3. heatmaps -------------------------------------------------------------------------------


@SECTIONS.register("heatmaps", "Layer × module type", order=30)
def heatmap_section(ctx: RunContext) -> list[Block] | None:
    m = ctx.modules
    blocks: list[Block] = []
    if m["layer"].notna().any():
        metrics = ["entropy_rank", "rank_90", ctx.size, "stable_rank"]
        grids = [
            data.layer_grid(m, c, [t for t in ctx.types if t in set(data.layered(m)["type"])])
            for c in metrics
        ]
        panels = [
            fg.HeatPanel(HEATMAP_METRICS[c][0], g, HEATMAP_METRICS[c][1], log=c == ctx.size)
            for c, g in zip(metrics, grids)
        ]
        blocks.append(
            FigureBlock(
                "heatmaps",
                "Each row is a layer (first at the top) and each column a module type; the colour is the "
                "metric named above the panel (light = high), grey means no module there.",
                functools.partial(fg.heatmaps, panels, ctx.labels),
            )
        )
        averaged = grids[0].averaged_cells
        if averaged:
            blocks.append(
                NoteBlock(
                    f"{averaged} cell(s) hold several modules of one type at one layer (blocks sharing a "
                    "layer index, experts); they show the mean."
                )
            )
        if ctx.size == "fro_norm":
            blocks.append(
                NoteBlock(
                    "No base model was given, so magnitudes are Frobenius norms ‖ΔW‖ (fro_norm) rather than "
                    "relative updates."
                )
            )
    off = data.unlayered(m)
    if len(off):
        cols = ["name", "rows", "cols", "entropy_rank", "rank_90", ctx.size, "stable_rank"]
        blocks.append(
            TableBlock(
                off[cols],
                caption=f"Modules outside the layer stack ({len(off)}): no layer index, "
                "so they are not in the heatmaps",
            )
        )
    return blocks


# ---- 4. spectra, 5. energy ---------------------------------------------------------------------


@SECTIONS.register("spectra", "Singular value spectra", order=40)
def spectra_section(ctx: RunContext) -> list[Block] | None:
    curves = data.spectra_by_type(ctx.modules, ctx.results.spectra, ctx.types)
    if not any(curves.values()):
        return None
    ranks = data.nominal_ranks(ctx.modules, ctx.types)
    caption = (
        "Each line is one module's singular values σᵢ in descending order (log scale), coloured by its layer "
        "(grey: no layer); a steep drop means few directions carry the update"
    )
    caption += ", and the dashed line marks the adapter rank r." if any(ranks.values()) else "."
    return [FigureBlock("spectra", caption, functools.partial(fg.spectra, curves, ranks, ctx.labels))]


@SECTIONS.register("energy", "Cumulative energy", order=50)
def energy_section(ctx: RunContext) -> list[Block] | None:
    curves = data.energy_by_type(ctx.modules, ctx.results.spectra, ctx.types)
    if not any(curves.values()):
        return None
    ranks = data.nominal_ranks(ctx.modules, ctx.types)
    blocks: list[Block] = [
        FigureBlock(
            "energy",
            "Each line shows the share of a module's squared Frobenius norm ‖ΔW‖² kept by its top k singular "
            "values; where a line crosses the dotted 90 / 95 / 99 % guides is its rank_90 / rank_95 / "
            "rank_99.",
            functools.partial(fg.energy_curves, curves, ranks, ctx.labels),
        )
    ]
    return blocks


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
        grid = data.layer_grid(m, ctx.size, [t for t in ctx.types if t in set(data.layered(m)["type"])])
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
    ranks = sorted({r for rs in data.nominal_ranks(ctx.modules, ctx.types).values() for r in rs})
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


# Sections of later analyses, imported only where their files are in the results folder (so a plain
# spectrum report imports neither of them; the comparison module pulls in torch).
SECTIONS.plugin("lorascope.report.rank_figures", ("sweep_frontier.csv", "functional.csv", "selection.csv"))
SECTIONS.plugin("lorascope.report.compare_figures", ("compare_summary.json",))
SECTIONS.plugin("lorascope.report.training_figures", ("training_spectra.csv",))
