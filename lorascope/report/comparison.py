"""The sections of a comparison page: several analyses of one model side by side.

Registered in ``COMPARISON_SECTIONS`` like the one-run sections: runs, headline medians per module
type, overlaid energy curves, heatmaps on shared colour scales and one table joined on module name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from ..results import Results
from . import data
from . import figures as fg
from .blocks import Block, FigureBlock, NoteBlock, Page, TableBlock
from .formatting import human_count
from .registry import SectionRegistry, folder_has
from .sections import HEATMAP_METRICS

JOINED_METRICS = ["lora_rank", "entropy_rank", "rank_90", "rank_99", "stable_rank"]


@dataclass
class ComparisonContext:
    runs: list[Results]
    labels: list[str]

    def has_file(self, name: str) -> bool:
        """A file counts as present when every run has it."""
        return all(folder_has(r.path, name) for r in self.runs)

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {label: data.with_types(r.modules) for label, r in zip(self.labels, self.runs)}

    @cached_property
    def types(self) -> list[str]:
        """Module types of all runs, in model order."""
        return data.type_order(pd.concat(list(self.tables.values()), ignore_index=True))

    @cached_property
    def type_labels(self) -> dict[str, str]:
        return data.short_labels(self.types)

    @cached_property
    def size(self) -> str:
        return data.common_size_column(self.tables)


COMPARISON_SECTIONS: SectionRegistry[ComparisonContext] = SectionRegistry()


def build_comparison_page(runs: list[Results], labels: list[str]) -> Page:
    ctx = ComparisonContext(runs, labels)
    total = sum(len(r.modules) for r in runs)
    subtitle = f"lorascope comparison · {len(runs)} analyses · {total} modules in all"
    title = " vs ".join(labels) if len(labels) <= 4 else f"{len(labels)} analyses, {labels[0]} … {labels[-1]}"
    return Page("Comparison: " + title, subtitle, COMPARISON_SECTIONS.build(ctx))


@COMPARISON_SECTIONS.register("runs", "Analyses compared", order=10)
def runs_section(ctx: ComparisonContext) -> list[Block]:
    rows = []
    for label, r in zip(ctx.labels, ctx.runs):
        s = r.summary or {}
        m = r.modules
        rows.append({
            "run": label, "kind": s.get("kind", ""),
            "inputs": " + ".join(str(i.get("path", "")) for i in s.get("inputs") or []),
            "modules": len(m), "nominal r": data.ranks_text(m["lora_rank"]),
            "adapter parameters": human_count(data.actual_adapter_parameters(m)),
            "warnings": len(s.get("warnings") or []), "created": s.get("created", ""),
            "results folder": str(r.path) if r.path is not None else "",
        })
    blocks: list[Block] = [TableBlock(pd.DataFrame(rows), caption="Runs")]
    names = [set(t["name"]) for t in ctx.tables.values()]
    shared = set.intersection(*names)
    if len(shared) < max(len(n) for n in names):
        blocks.append(NoteBlock(f"{len(shared)} module names are common to all runs; the others appear in only "
                                "some of them (empty cells in the joined table).", level="warn"))
    return blocks


@COMPARISON_SECTIONS.register("headline", "Medians per module type", order=20)
def headline_section(ctx: ComparisonContext) -> list[Block]:
    rows = []
    for t in ctx.types:
        for label, m in ctx.tables.items():
            g = m[m["type"] == t]
            if g.empty:
                continue
            rows.append({
                "module type": t, "run": label, "modules": len(g), "r": data.ranks_text(g["lora_rank"]),
                **{f"{c} median": data.median(g[c])
                   for c in ("entropy_rank", "rank_90", "rank_99", ctx.size)},
            })
    table = pd.DataFrame(rows)
    if len(ctx.runs) <= 4:
        return [TableBlock(table, caption="Median per module type and run")]
    # many runs: one compact table per metric, a row per run and a column per module type
    blocks: list[Block] = []
    for c in ("entropy_rank", "rank_90", ctx.size):
        wide = table.pivot(index="run", columns="module type", values=f"{c} median")
        wide = wide.reindex(index=ctx.labels, columns=[t for t in ctx.types if t in wide.columns])
        wide.columns = [ctx.type_labels.get(t, t) for t in wide.columns]
        blocks.append(TableBlock(wide.reset_index(), caption=f"Median {c} per module type (columns) and run (rows)"))
    return blocks


@COMPARISON_SECTIONS.register("energy", "Cumulative energy, overlaid", order=30)
def energy_section(ctx: ComparisonContext) -> list[Block] | None:
    bands: dict[str, dict[str, fg.Band]] = {t: {} for t in ctx.types}
    curves = {label: data.energy_by_type(ctx.tables[label], r.spectra, ctx.types)
              for label, r in zip(ctx.labels, ctx.runs)}
    for t in ctx.types:
        k_max = max((len(c.y) for label in ctx.labels for c in curves[label][t]), default=0)
        for label, r in zip(ctx.labels, ctx.runs):
            cs = curves[label][t]
            if cs:
                complete = {c.name for c in cs} - set(data.truncated_modules(ctx.tables[label], r.spectra))
                median, low, high = data.energy_band(cs, k_max, complete)
                bands[t][label] = fg.Band(median, low, high, len(cs))
    if not any(bands.values()):
        return None
    return [FigureBlock(
        "compare_energy", "For each module type, each run's line is the median share of ‖ΔW‖² (squared Frobenius norm) kept by the top k "
                          "singular values and its band spans the middle half of the modules; a line that rises "
                          "sooner needs fewer directions.",
        functools.partial(fg.energy_overlay, bands, ctx.labels, ctx.type_labels))]


@COMPARISON_SECTIONS.register("heatmaps", "Heatmaps side by side", order=40)
def heatmap_section(ctx: ComparisonContext) -> list[Block] | None:
    layered_types = [t for t in ctx.types if any((m["layer"].notna() & (m["type"] == t)).any()
                                                 for m in ctx.tables.values())]
    if not layered_types:
        return None
    blocks: list[Block] = []
    for metric in ["entropy_rank", "rank_90", ctx.size, "stable_rank"]:
        title, unit = HEATMAP_METRICS[metric]
        panels = [fg.HeatPanel(label, data.layer_grid(m, metric, layered_types), unit, log=metric == ctx.size)
                  for label, m in ctx.tables.items()]
        blocks.append(FigureBlock(
            f"compare_heatmap_{metric}",
            f"{title}: one panel per run on one colour scale, rows are layers and columns module types; "
            "the same colour means the same value in every panel.",
            functools.partial(fg.heatmaps, panels, ctx.type_labels, True)))
    return blocks


@COMPARISON_SECTIONS.register("joined", "All modules, joined by name", order=50)
def joined_section(ctx: ComparisonContext) -> list[Block]:
    table = data.joined_table(ctx.tables, JOINED_METRICS + [ctx.size])
    table = table.drop(columns=[c for c in table.columns if table[c].isna().all()])
    return [
        NoteBlock("One row per module name; each metric has a column per run. Click a header to sort, "
                  "type in the box to filter by name."),
        TableBlock(table, caption=f"{len(table)} modules", interactive=True, csv_name="comparison.csv"),
    ]
