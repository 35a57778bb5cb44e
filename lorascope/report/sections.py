"""The sections of a one-analysis report, registered in ``SECTIONS`` in page order.

Each builder turns a ``RunContext`` (saved results, read once) into blocks: facts, tables, notes
and deferred figures. Computing is in ``data.py``, drawing in ``figures.py``, HTML in ``html.py``.
This module holds sections 1–5 (inputs, headline numbers, heatmaps, spectra, energy);
``detail_sections.py`` holds 6–8 and ``run_context.py`` the context and the registry.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from . import data
from . import figures as fg
from .blocks import Block, CardsBlock, FactsBlock, FigureBlock, NoteBlock, TableBlock
from .formatting import counted, human_bytes, human_count, plain, seconds
from .run_context import (
    HEATMAP_METRICS,
    KIND_TEXT,
    SECTIONS,
    RunContext,
)

# The later sections register themselves on import; their builders and the shared state stay importable
# from here.
from .detail_sections import (
    magnitude_section as magnitude_section,
    modules_section as modules_section,
    sweep_section as sweep_section,
)


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
        grids = [ctx.layer_grid(c) for c in metrics]
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
    ranks = ctx.nominal_ranks
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
    ranks = ctx.nominal_ranks
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


# Sections of later analyses, imported only where their files are in the results folder (so a plain
# spectrum report imports neither of them; the comparison module pulls in torch).
SECTIONS.plugin("lorascope.report.rank_figures", ("sweep_frontier.csv", "functional.csv", "selection.csv"))
SECTIONS.plugin("lorascope.report.compare_figures", ("compare_summary.json",))
SECTIONS.plugin("lorascope.report.training_figures", ("training_spectra.csv",))
