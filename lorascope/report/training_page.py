"""The page of a training sweep or of one trainer run, from its folders alone (no spectrum analysis needed).

``lorascope report RUNS_DIR`` (a ``train-sweep`` folder, or the demo's ``runs/``) and
``lorascope report RUN_DIR`` render this: the answer (outcome against rank and parameters, knees),
forgetting, effective rank during training from ``rank_history.csv``, a single run's metrics against step,
and how each run was trained. The sections are the comparison page's own (``outcome_blocks.py``), registered
in ``TRAINING_SECTIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import LorascopeError
from . import outcome_blocks as ob
from . import trained as tr
from .blocks import Block, NoteBlock, Page, TableBlock
from .formatting import counted, human_bytes
from .registry import SectionRegistry, folder_has


@dataclass
class TrainingContext:
    folder: Path
    runs: list[tr.TrainedRun]

    def has_file(self, name: str) -> bool:
        return folder_has(self.folder, name)


TRAINING_SECTIONS: SectionRegistry[TrainingContext] = SectionRegistry()


@TRAINING_SECTIONS.register("answer", "The answer: task outcome against rank", order=1)
def answer_section(ctx: TrainingContext) -> list[Block] | None:
    return ob.answer_blocks(ctx.runs)


@TRAINING_SECTIONS.register("history", "Metrics during training", order=2)
def history_section(ctx: TrainingContext) -> list[Block] | None:
    return ob.history_blocks(ctx.runs)


@TRAINING_SECTIONS.register("rank-during-training", "Effective rank during training", order=3)
def evolution_section(ctx: TrainingContext) -> list[Block] | None:
    return ob.evolution_blocks(ctx.runs)


@TRAINING_SECTIONS.register("forgetting", "Forgetting against rank", order=4)
def forgetting_section(ctx: TrainingContext) -> list[Block] | None:
    return ob.forgetting_blocks(ctx.runs)


@TRAINING_SECTIONS.register("runs", "How each run was trained", order=10)
def runs_section(ctx: TrainingContext) -> list[Block]:
    rows = []
    for r in ctx.runs:
        m = r.metrics
        optim, loop = m.get("optim") or {}, m.get("loop") or {}
        rows.append(
            {
                "run": r.label,
                "method": r.method,
                "r": r.rank,
                "targets": r.targets,
                "task": (m.get("task") or {}).get("name"),
                "steps": loop.get("steps"),
                "batch": loop.get("batch_size"),
                "lr": optim.get("lr"),
                "trainable parameters": m.get("trainable_parameters"),
                "train seconds": m.get("train_seconds"),
                "peak memory": human_bytes((m.get("memory") or {}).get("peak_rss_bytes")),
                "optimizer state": human_bytes(m.get("optimizer_state_bytes")),
                "device": m.get("device"),
                "folder": str(r.folder),
            }
        )
    blocks: list[Block] = [TableBlock(pd.DataFrame(rows), caption="Runs: method, options, time and memory")]
    notes = [f"{r.label}: {n}" for r in ctx.runs for n in r.metrics.get("notes") or []]
    if notes:
        blocks.append(NoteBlock(" ".join(notes), level="warn"))
    blocks.append(
        NoteBlock(
            "This page reads the run folders only (metrics.json, history.csv, "
            "rank_history.csv). The spectra of the updates come from `lorascope spectrum "
            "RUN_DIR` (one run) or `lorascope demo` (the demo analyzes every run and "
            "compares them)."
        )
    )
    return blocks


def build_training_page(folder: Path, runs: list[tr.TrainedRun]) -> Page:
    task = (runs[0].metrics.get("task") or {}).get("name", "") if runs else ""
    if len(runs) == 1:
        title = f"Trainer run: {runs[0].label}"
    else:
        title = f"Training sweep: {counted(len(runs), 'run')}" + (f" on {task}" if task else "")
    subtitle = f"lorascope training report · {folder}"
    return Page(title, subtitle, TRAINING_SECTIONS.build(TrainingContext(folder, runs)))


def render_training(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the page of a training sweep folder (``index.csv``) or a trainer run folder (``metrics.json``).

    Args:
        folder: the sweep or run folder.
        out: the HTML file (or folder for ``report.html``); default ``report.html`` inside ``folder``.

    Returns:
        The path of the HTML file.

    Raises:
        LorascopeError: the folder is neither, or one of its runs cannot be read.
    """
    from . import html_path, publish
    from .html import write_page

    folder = Path(folder)
    if (folder / tr.INDEX_CSV).is_file():
        runs = tr.runs_of_sweep(folder)
    elif tr.is_run_folder(folder):
        runs = [tr.read_run(folder)]
    else:
        raise LorascopeError(
            f"{folder} is neither a training sweep folder (index.csv) nor a trainer run "
            "folder (metrics.json beside tuned/)."
        )
    page = build_training_page(folder, runs)
    footer = f"Written by lorascope from the run folders in {folder}; it reads no checkpoint."
    return publish(
        html_path(out if out is not None else folder),
        lambda page_file, figures: write_page(page, page_file, figures, footer=footer),
    )
