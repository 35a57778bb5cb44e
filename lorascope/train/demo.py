"""`lorascope demo`: the project's main job on an embedded default, end to end.

1. Pre-train MiniGPT on the facts world (cached: see ``pretrain.cache_dir``; nothing is downloaded).
2. Sweep a fact-edit task: LoRA over ranks and target sets (value-only, attention, all linear layers),
   full fine-tuning and layer freezing, all from the same base on the same data.
3. Analyze every run with the spectrum engine: an adapter on its base, or base vs fine-tuned; the full
   fine-tune also gets a truncation and a functional sweep (``lorascope.rank.run_sweep``): which rank-k
   truncation of its updates keeps 99 % of its change in the edit loss.
4. Render one comparison page of all runs that opens with the answer: each run's task outcome against its
   rank and trainable parameters, forgetting, effective rank during training, and that functional rank
   beside the energy it keeps (``lorascope.report.outcome_figures``).

Layout of the output folder (``lorascope report DEMO_DIR`` re-renders the page from it)::

    runs/       the sweep: base/, index.csv, one folder per run
    spectra/    one results folder per run (modules.csv, singular_values.safetensors, summary.json);
                spectra/full is a sweep folder (sweep.csv, functional.csv, sweep.json too)
    report.html the comparison page (figures/ beside it)
    demo.json   what ran, how long each stage took, and where everything is (paths relative to the folder)

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

from ..errors import LorascopeError
from ..outputs import writing
from .methods import MethodConfig
from .pretrain import PretrainConfig, pretrain
from .runs import INDEX, RunSpec, expand_sweep, sweep
from .trainer import LoopConfig

MARKER = "demo.json"
RUNS, SPECTRA = "runs", "spectra"
FUNCTIONAL_TOLERANCE = 0.01  # the page names the smallest k keeping 99 % of the full fine-tune's loss change


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
    functional_ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # k of the full fine-tune's functional sweep
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        if not self.ranks or not self.targets or not self.methods:
            raise ValueError("methods, ranks and targets must each name at least one value")

    def specs(self) -> list[RunSpec]:
        template = RunSpec(
            method=MethodConfig(),
            task=self.task,
            device="cpu",
            loop=LoopConfig(
                steps=self.steps,
                batch_size=self.batch_size,
                eval_every=self.steps // 4,
                rank_every=self.rank_every,
            ),
        )
        return expand_sweep(list(self.methods), list(self.ranks), list(self.targets), template)


@dataclass
class DemoResult:
    out: Path
    index: Path
    spectra: dict[str, Path]
    report: Path | None
    seconds: dict[str, float]
    table: pd.DataFrame
    pick: dict[str, Any] | None = None  # the full fine-tune's functional pick (FUNCTIONAL_TOLERANCE)


def analyze_run(base: Path, run: Path, out: Path) -> Path:
    """Spectra of one run: its adapter on the base where it has one, else base vs the fine-tuned model."""
    from .. import analyze

    tuned = run / "adapter" if (run / "adapter").is_dir() else run / "tuned"
    analyze(base, tuned, progress=False).save(out)
    return out


def sweep_run(run: Path, out: Path, ranks: tuple[int, ...]) -> dict[str, Any] | None:
    """The spectra of a run with its truncation and functional sweeps (``lorascope sweep RUN_DIR``) in
    ``out``; returns the functional pick at ``FUNCTIONAL_TOLERANCE``."""
    from ..rank import run_sweep

    return run_sweep([run], out, list(ranks), tolerance=FUNCTIONAL_TOLERANCE).pick


def render(spectra: dict[str, Path], out: Path, runs: Path | None = None) -> Path:
    """The comparison page of every run's spectra, opening with the runs' outcome (run folders in
    ``runs``)."""
    from ..report import render_comparison

    folders = [runs / label for label in spectra] if runs is not None else None
    task = ""
    if runs is not None and (runs / INDEX).is_file():
        index = pd.read_csv(runs / INDEX)
        task = f" on {index['task'].iat[0]}" if "task" in index.columns and len(index) else ""
    title = f"lorascope demo: {len(spectra)} fine-tunes of one base{task}"
    return render_comparison(
        list(spectra.values()),
        out / "report.html",
        labels=list(spectra),
        run_folders=folders,
        title=title,
        command="demo",
    )


def read_marker(folder: Path) -> dict[str, Any]:
    """demo.json of a demo folder.

    Raises:
        LorascopeError: it is missing or not the demo's record.
    """
    path = Path(folder) / MARKER
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LorascopeError(
            f"{path} could not be read as the demo's record ({exc}); run `lorascope demo "
            f"--out {folder}` again."
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("spectra"), dict):
        raise LorascopeError(
            f"{path} is not the demo's record (no 'spectra' map); run `lorascope demo` again."
        )
    return record


def render_demo_folder(folder: str | Path, out: str | Path | None = None) -> Path:
    """Re-render the page of a demo folder from its runs/ and spectra/ (``lorascope report DEMO_DIR``).

    Raises:
        LorascopeError: demo.json is unreadable, or a run's results folder is missing.
    """
    folder = Path(folder)
    record = read_marker(folder)
    labels = list(record["spectra"])
    spectra = {label: folder / SPECTRA / label for label in labels}
    missing = [str(p) for p in spectra.values() if not p.is_dir()]
    if missing:
        raise LorascopeError(
            f"{folder} lacks the results folder(s) {', '.join(missing[:3])} that demo.json "
            "lists; run `lorascope demo` again."
        )
    runs = folder / RUNS
    if out is None:
        with writing(folder, "report", mode="update", drop=["report.html", "figures"]) as tx:
            render(spectra, tx.stage, runs if runs.is_dir() else None)
        return folder / "report.html"
    from ..report import render_comparison

    return render_comparison(
        list(spectra.values()),
        out,
        labels=labels,
        run_folders=[runs / label for label in labels] if runs.is_dir() else None,
    )


def run_demo(
    out: Path,
    cfg: DemoConfig = DemoConfig(),
    progress: bool = True,
    log: Callable[[str], Any] = lambda s: None,
) -> DemoResult:
    """Pre-train (or reuse) the base, train the sweep,
    analyze every run and render the report into ``out``."""
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
    index = sweep(
        specs,
        base,
        out / "runs",
        copy_base=True,
        progress=progress,
        on_run=lambda i, n, row: log(_run_line(i, n, row)),
    )
    seconds["sweep"] = time.perf_counter() - t

    t = time.perf_counter()
    shared_base = out / RUNS / "base"
    reference = "full" if any(s.run_name() == "full" for s in specs) else None
    spectra, pick = {}, None
    for s in specs:
        name = s.run_name()
        if name == reference:
            pick = sweep_run(out / RUNS / name, out / SPECTRA / name, cfg.functional_ranks)
            spectra[name] = out / SPECTRA / name
        else:
            spectra[name] = analyze_run(shared_base, out / RUNS / name, out / SPECTRA / name)
    seconds["analyze"] = time.perf_counter() - t
    log(f"analyzed {len(spectra)} runs in {seconds['analyze']:.0f} s")

    t = time.perf_counter()
    # the page and demo.json; runs/ and spectra/ are their own
    with writing(out, "demo", mode="update", drop=["report.html", "figures"]) as tx:
        render(spectra, tx.stage, out / RUNS)
        seconds["report"] = time.perf_counter() - t
        report = out / "report.html"
        marker = {
            "config": asdict(cfg),
            "base": str(base),
            "base_cached": cached,
            "runs": RUNS,
            "index": f"{RUNS}/{INDEX}",
            "spectra": {k: f"{SPECTRA}/{k}" for k in spectra},
            "report": "report.html",
            "functional_pick": pick,
            "seconds": seconds,
        }
        (tx.stage / MARKER).write_text(json.dumps(marker, indent=2, default=str) + "\n", encoding="utf-8")
    table = pd.read_csv(index)
    return DemoResult(out, index, spectra, report, seconds, table, pick)


def _run_line(i: int, n: int, row: dict[str, Any]) -> str:
    scores = "  ".join(f"{k.removesuffix('_acc')} {row[k]:.2f}" for k in row if k.endswith("_acc"))
    return f"[{i}/{n}] {row['run']:<22} {scores}"


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares: accuracies, eval loss and trainable parameters per run."""
    cols = ["run", "trainable_parameters"] + [c for c in table.columns if c.endswith("_acc")] + ["eval_loss"]
    return table[[c for c in cols if c in table.columns]]


__all__ = [
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "analyze_run",
    "render_demo_folder",
    "summary_table",
    "INDEX",
    "MARKER",
]
