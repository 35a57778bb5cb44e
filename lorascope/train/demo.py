"""`lorascope demo`: the project's main job on an embedded default, end to end.

1. Pre-train MiniGPT on the facts world (cached: see ``pretrain.cache_dir``; nothing is downloaded).
2. Sweep a fact-edit task: LoRA over ranks and target sets (value-only, attention, all linear layers),
   full fine-tuning and layer freezing, all from the same base on the same data.
3. Analyze every run with the spectrum engine: an adapter on its base, or base vs fine-tuned.
4. Render one comparison report of all runs.

Layout of the output folder::

    runs/       the sweep: base/, index.csv, one folder per run
    spectra/    one results folder per run (modules.csv, singular_values.safetensors, summary.json)
    report.html the comparison page (figures/ beside it)
    demo.json   what ran, how long each stage took, and where everything is

Defaults are sized to finish in a few minutes on two CPU cores, pre-training included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..outputs import writing
from .methods import MethodConfig
from .pretrain import PretrainConfig, pretrain
from .runs import INDEX, RunSpec, expand_sweep, sweep
from .trainer import LoopConfig

MARKER = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """The embedded default sweep."""

    task: str = "edit:20"
    methods: tuple[str, ...] = ("lora", "full", "freeze")
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16)
    targets: tuple[str, ...] = ("v_proj", "attn", "all-linear")  # value-only, attention, every linear layer
    steps: int = 100
    batch_size: int = 16
    rank_every: int = 25
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        if not self.ranks or not self.targets or not self.methods:
            raise ValueError("methods, ranks and targets must each name at least one value")

    def specs(self) -> list[RunSpec]:
        template = RunSpec(method=MethodConfig(), task=self.task, device="cpu",
                           loop=LoopConfig(steps=self.steps, batch_size=self.batch_size, eval_every=self.steps // 4,
                                           rank_every=self.rank_every))
        return expand_sweep(list(self.methods), list(self.ranks), list(self.targets), template)


@dataclass
class DemoResult:
    out: Path
    index: Path
    spectra: dict[str, Path]
    report: Path | None
    seconds: dict[str, float]
    table: pd.DataFrame


def analyze_run(base: Path, run: Path, out: Path) -> Path:
    """Spectra of one run: its adapter on the base where it has one, else base vs the fine-tuned model."""
    from .. import analyze

    tuned = run / "adapter" if (run / "adapter").is_dir() else run / "tuned"
    analyze(base, tuned, progress=False).save(out)
    return out


def render(spectra: dict[str, Path], out: Path) -> Path:
    """The comparison page of every run's spectra."""
    from ..report import render_comparison

    return render_comparison(list(spectra.values()), out / "report.html", labels=list(spectra))


def run_demo(out: Path, cfg: DemoConfig = DemoConfig(), progress: bool = True,
             log: Callable[[str], Any] = lambda s: None) -> DemoResult:
    """Pre-train (or reuse) the base, train the sweep, analyze every run and render the report into ``out``."""
    seconds: dict[str, float] = {}
    # the folder is lorascope's (a manifest) before runs/ go into it
    with writing(out, "demo", mode="update"):
        pass
    t = time.perf_counter()
    base, cached = pretrain(cfg.pretrain, progress=progress)
    seconds["pretrain"] = time.perf_counter() - t
    how = "from the cache" if cached else f"pre-trained in {seconds['pretrain']:.0f} s"
    log(f"base model: {base} ({how})")

    t = time.perf_counter()
    specs = cfg.specs()
    index = sweep(specs, base, out / "runs", copy_base=True, progress=progress,
                  on_run=lambda i, n, row: log(_run_line(i, n, row)))
    seconds["sweep"] = time.perf_counter() - t

    t = time.perf_counter()
    shared_base = out / "runs" / "base"
    spectra = {s.run_name(): analyze_run(shared_base, out / "runs" / s.run_name(), out / "spectra" / s.run_name())
               for s in specs}
    seconds["analyze"] = time.perf_counter() - t
    log(f"analyzed {len(spectra)} runs in {seconds['analyze']:.0f} s")

    t = time.perf_counter()
    # the page and demo.json; runs/ and spectra/ are their own
    with writing(out, "demo", mode="update") as tx:
        render(spectra, tx.stage)
        seconds["report"] = time.perf_counter() - t
        report = out / "report.html"
        marker = {"config": asdict(cfg), "base": str(base), "base_cached": cached, "index": str(index),
                  "spectra": {k: str(v) for k, v in spectra.items()}, "report": str(report),
                  "seconds": seconds}
        (tx.stage / MARKER).write_text(json.dumps(marker, indent=2, default=str) + "\n", encoding="utf-8")
    table = pd.read_csv(index)
    return DemoResult(out, index, spectra, report, seconds, table)


def _run_line(i: int, n: int, row: dict[str, Any]) -> str:
    scores = "  ".join(f"{k.removesuffix('_acc')} {row[k]:.2f}" for k in row if k.endswith("_acc"))
    return f"[{i}/{n}] {row['run']:<22} {scores}"


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares: accuracies, eval loss and trainable parameters per run."""
    cols = ["run", "trainable_parameters"] + [c for c in table.columns if c.endswith("_acc")] + ["eval_loss"]
    return table[[c for c in cols if c in table.columns]]


__all__ = ["DemoConfig", "DemoResult", "run_demo", "analyze_run", "summary_table", "INDEX", "MARKER"]
