"""The sections of a comparison page: several analyses of one model side by side.

Registered in ``COMPARISON_SECTIONS`` like the one-run sections. Where the analyses are of trainer runs
(``trained.py``: their inputs are run folders' ``adapter/`` or ``tuned/``), the page opens with the answer —
task outcome against rank and parameters, forgetting, effective rank during training, a full fine-tune's
functional rank — then: runs (with their warnings and zero updates), headline medians per module type,
overlaid energy curves, heatmaps, and one table joined on module name.

Modules whose ΔW is exactly zero (matrices a run did not train) are named and left out of every median,
band and heatmap: their ranks are 0 by definition and would only say how much of the model was frozen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from ..results import Results
from . import data
from . import figures as fg
from . import outcome_blocks as ob
from . import trained as tr
from .blocks import Block, FigureBlock, NoteBlock, Page, TableBlock
from .formatting import counted, human_count
from .registry import SectionRegistry, folder_has
from .sections import HEATMAP_METRICS

JOINED_METRICS = ["lora_rank", "entropy_rank", "rank_90", "rank_99", "stable_rank"]
PANELS_PER_RUN_UP_TO = 6  # heatmaps: a layer × type panel per run up to this many runs, then runs × types
BANDS_UP_TO = 4  # energy overlay: quartile bands up to this many runs (more would hide each other)


@dataclass
class ComparisonContext:
    runs: list[Results]
    labels: list[str]
    run_folders: list[Path | None] | None = None  # each analysis' trainer run folder, where known

    def has_file(self, name: str) -> bool:
        """A file counts as present when every run has it."""
        return all(folder_has(r.path, name) for r in self.runs)

    @cached_property
    def all_tables(self) -> dict[str, pd.DataFrame]:
        """Every module of every run, with its type."""
        return {label: data.with_types(r.modules) for label, r in zip(self.labels, self.runs)}

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """What statistics summarize: every module whose ΔW is not exactly zero."""
        return {label: data.updated(t) for label, t in self.all_tables.items()}

    @cached_property
    def zeros(self) -> dict[str, pd.DataFrame]:
        """Per run, the modules whose ΔW is exactly zero (empty runs left out)."""
        out = {label: data.zero_updates(t) for label, t in self.all_tables.items()}
        return {label: z for label, z in out.items() if len(z)}

    @cached_property
    def trained(self) -> list[tr.TrainedRun]:
        """The runs that are trainer runs, read from their folders (given, or found from summary.json)."""
        folders = self.run_folders or [None] * len(self.runs)
        out = []
        for label, results, folder in zip(self.labels, self.runs, folders):
            folder = folder if folder is not None else tr.run_of_results(results)
            if folder is not None:
                out.append(tr.read_run(folder, label, results))
        return out

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


def build_comparison_page(
    runs: list[Results],
    labels: list[str],
    run_folders: list[Path | None] | None = None,
    title: str | None = None,
) -> Page:
    ctx = ComparisonContext(runs, labels, run_folders)
    total = sum(len(r.modules) for r in runs)
    subtitle = f"lorascope comparison · {len(runs)} analyses · {total} modules in all"
    if ctx.trained:
        task = (ctx.trained[0].metrics.get("task") or {}).get("name")
        subtitle += f" · {counted(len(ctx.trained), 'trainer run')}" + (f" on {task}" if task else "")
    if title is None:
        title = "Comparison: " + (
            " vs ".join(labels) if len(labels) <= 4 else f"{len(labels)} analyses, {labels[0]} … {labels[-1]}"
        )
    return Page(title, subtitle, COMPARISON_SECTIONS.build(ctx))


# ---- the answer, where the analyses are of trainer runs -----------------------------------------------


@COMPARISON_SECTIONS.register("answer", "The answer: task outcome against rank", order=1)
def answer_section(ctx: ComparisonContext) -> list[Block] | None:
    blocks = ob.answer_blocks(ctx.trained)
    if blocks and len(ctx.trained) < len(ctx.runs):
        others = [label for label in ctx.labels if label not in {r.label for r in ctx.trained}]
        blocks.insert(
            0,
            NoteBlock(
                f"{counted(len(others), 'analysis', 'analyses')} did not come from a "
                f"trainer run folder, so they have no task outcome: {', '.join(others)}."
            ),
        )
    return blocks


@COMPARISON_SECTIONS.register("functional", "What a rank-k truncation keeps of the fine-tune", order=2)
def functional_section(ctx: ComparisonContext) -> list[Block] | None:
    return ob.functional_blocks(ctx.trained)


@COMPARISON_SECTIONS.register("rank-during-training", "Effective rank during training", order=3)
def evolution_section(ctx: ComparisonContext) -> list[Block] | None:
    return ob.evolution_blocks(ctx.trained)


@COMPARISON_SECTIONS.register("forgetting", "Forgetting against rank", order=4)
def forgetting_section(ctx: ComparisonContext) -> list[Block] | None:
    return ob.forgetting_blocks(ctx.trained)


def input_root(runs: list[Results]) -> Path | None:
    """The folder every run's inputs lie under (the demo's runs/), when they share one below the file system
    root; the runs table shows paths relative to it."""
    import os

    paths = [str(i.get("path")) for r in runs for i in (r.summary or {}).get("inputs") or [] if i.get("path")]
    if len(paths) < 2 or not all(os.path.isabs(p) for p in paths):
        return None
    common = Path(os.path.commonpath(paths))
    return common if len(common.parts) > 2 else None


@COMPARISON_SECTIONS.register("runs", "Analyses compared", order=10)
def runs_section(ctx: ComparisonContext) -> list[Block]:
    rows = []
    root = input_root(ctx.runs)

    def shown(path) -> str:
        return str(Path(str(path)).relative_to(root)) if root is not None else str(path)

    for label, r in zip(ctx.labels, ctx.runs):
        s = r.summary or {}
        m = r.modules
        rows.append(
            {
                "run": label,
                "kind": s.get("kind", ""),
                "inputs": " + ".join(shown(i.get("path", "")) for i in s.get("inputs") or []),
                "modules": len(m),
                "nominal r": data.ranks_text(m["lora_rank"]),
                "adapter parameters": human_count(data.actual_adapter_parameters(m)),
                "warnings": len(s.get("warnings") or []),
                "created": s.get("created", ""),
                "results folder": str(r.path) if r.path is not None else "",
            }
        )
    caption = "Runs" + (f" (input paths relative to {root})" if root is not None else "")
    blocks: list[Block] = [TableBlock(pd.DataFrame(rows), caption=caption)]
    names = [set(t["name"]) for t in ctx.all_tables.values()]
    shared = set.intersection(*names)
    if len(shared) < max(len(n) for n in names):
        blocks.append(
            NoteBlock(
                f"{len(shared)} module names are common to all runs; the others appear in only "
                "some of them (empty cells in the joined table).",
                level="warn",
            )
        )
    blocks += zero_blocks(ctx)
    blocks += warnings_blocks(ctx)
    return blocks


def zero_blocks(ctx: ComparisonContext) -> list[Block]:
    """Each run's modules with ΔW exactly zero, named, and the statement that statistics leave them out."""
    if not ctx.zeros:
        return []
    parts = [
        f"{label}: {len(z)} of {len(ctx.all_tables[label])} ({data.name_list(list(z['name']), 4)})"
        for label, z in ctx.zeros.items()
    ]
    rows = [{"run": label, "module": name} for label, z in ctx.zeros.items() for name in z["name"]]
    return [
        NoteBlock(
            "Modules whose update is exactly zero (ΔW = 0: not trained) are left out of the medians, "
            "energy bands and heatmaps below, since their ranks are 0 by definition — "
            + "; ".join(parts)
            + ". The joined table still lists them.",
            level="warn",
        ),
        TableBlock(pd.DataFrame(rows), caption=f"Zero updates ({len(rows)})", collapsed=True),
    ]


def warnings_blocks(ctx: ComparisonContext) -> list[Block]:
    """Every run's analysis warnings (skipped or unpaired tensors), carried over from its summary.json."""
    rows = [
        {"run": label, "name": w.get("name", ""), "reason": w.get("reason", "")}
        for label, r in zip(ctx.labels, ctx.runs)
        for w in (r.summary or {}).get("warnings") or []
    ]
    if not rows:
        return [NoteBlock("No run has warnings: every tensor of every analysis was paired and analyzed.")]
    per = pd.DataFrame(rows)["run"].value_counts(sort=False)
    text = "; ".join(f"{label}: {per[label]}" for label in ctx.labels if label in per)
    return [
        NoteBlock(
            f"{counted(len(rows), 'warning')} from the analyses (skipped or unpaired tensors) — {text}.",
            level="warn",
        ),
        TableBlock(
            pd.DataFrame(rows), caption=f"Warnings of every run ({len(rows)})", collapsed=len(rows) > 12
        ),
    ]


@COMPARISON_SECTIONS.register("headline", "Medians per module type", order=20)
def headline_section(ctx: ComparisonContext) -> list[Block]:
    rows = []
    for t in ctx.types:
        for label, m in ctx.tables.items():
            g = m[m["type"] == t]
            if g.empty:
                continue
            rows.append(
                {
                    "module type": t,
                    "run": label,
                    "modules": len(g),
                    "r": data.ranks_text(g["lora_rank"]),
                    **{
                        f"{c} median": data.median(g[c])
                        for c in ("entropy_rank", "rank_90", "rank_99", ctx.size)
                    },
                }
            )
    table = pd.DataFrame(rows)
    if len(ctx.runs) <= 4:
        return [TableBlock(table, caption="Median per module type and run")]
    # many runs: one compact table per metric, a row per run and a column per module type (closed: the
    # heatmaps below show the same medians)
    blocks: list[Block] = [
        NoteBlock(
            "Medians over each run's modules of one type, zero updates left out; "
            "the heatmaps below show the same numbers as colours."
        )
    ]
    for c in ("entropy_rank", "rank_90", ctx.size):
        wide = table.pivot(index="run", columns="module type", values=f"{c} median")
        wide = wide.reindex(index=ctx.labels, columns=[t for t in ctx.types if t in wide.columns])
        wide.columns = [ctx.type_labels.get(t, t) for t in wide.columns]
        blocks.append(
            TableBlock(
                wide.reset_index(),
                caption=f"Median {c} per module type (columns) and run (rows)",
                collapsed=True,
            )
        )
    return blocks


@COMPARISON_SECTIONS.register("energy", "Cumulative energy, overlaid", order=30)
def energy_section(ctx: ComparisonContext) -> list[Block] | None:
    bands: dict[str, dict[str, fg.Band]] = {t: {} for t in ctx.types}
    curves = {
        label: data.energy_by_type(ctx.tables[label], r.spectra, ctx.types)
        for label, r in zip(ctx.labels, ctx.runs)
    }
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
    shaded = len(ctx.runs) <= BANDS_UP_TO
    return [
        FigureBlock(
            "compare_energy",
            "For each module type, each run's line is the median share of ‖ΔW‖² (squared "
            "Frobenius norm) kept by the top k singular values"
            + (" and its band spans the middle half of the modules" if shaded else "")
            + "; a line that rises sooner needs fewer directions.",
            functools.partial(fg.energy_overlay, bands, ctx.labels, ctx.type_labels, bands_shown=shaded),
        )
    ]


@COMPARISON_SECTIONS.register("heatmaps", "Heatmaps side by side", order=40)
def heatmap_section(ctx: ComparisonContext) -> list[Block] | None:
    layered_types = [
        t
        for t in ctx.types
        if any((m["layer"].notna() & (m["type"] == t)).any() for m in ctx.tables.values())
    ]
    if not layered_types:
        return None
    metrics = ["entropy_rank", "rank_90", ctx.size, "stable_rank"]
    if len(ctx.runs) > PANELS_PER_RUN_UP_TO:
        panels = [
            fg.HeatPanel(
                HEATMAP_METRICS[m][0],
                data.run_type_grid(ctx.tables, m, layered_types),
                HEATMAP_METRICS[m][1],
                log=m == ctx.size,
                rows="run",
            )
            for m in metrics
        ]
        return [
            FigureBlock(
                "compare_heatmap_runs",
                "One panel per metric: rows are runs, columns module types, each cell the median over the "
                "type's layers; each panel has its own colour scale (logarithmic where values span more than "
                "10×), grey means no update of that type.",
                functools.partial(fg.heatmaps, panels, ctx.type_labels),
            )
        ]
    blocks: list[Block] = []
    for metric in metrics:
        title, unit = HEATMAP_METRICS[metric]
        panels = [
            fg.HeatPanel(label, data.layer_grid(m, metric, layered_types), unit, log=metric == ctx.size)
            for label, m in ctx.tables.items()
        ]
        log = isinstance(fg.heat_norm(panels, span=10), fg.LogNorm)
        blocks.append(
            FigureBlock(
                f"compare_heatmap_{metric}",
                f"{title}: one panel per run on one {'logarithmic ' if log else ''}colour scale, rows are "
                "layers and columns module types; the same colour means the same value in every panel, grey "
                "no update.",
                functools.partial(fg.heatmaps, panels, ctx.type_labels, True),
            )
        )
    return blocks


@COMPARISON_SECTIONS.register("joined", "All modules, joined by name", order=50)
def joined_section(ctx: ComparisonContext) -> list[Block]:
    table = data.joined_table(ctx.all_tables, JOINED_METRICS + [ctx.size])
    table = table.drop(columns=[c for c in table.columns if table[c].isna().all()])
    return [
        NoteBlock(
            "One row per module name; each metric has a column per run. Click a header to sort, "
            "type in the box to filter by name."
        ),
        TableBlock(table, caption=f"{len(table)} modules", interactive=True, csv_name="comparison.csv"),
    ]
