"""`lorascope train`, `train-sweep` and `demo`: thin shells over the reference trainer in
``lorascope.train``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._common import check_out, emit, json_mode, json_option, plain_json, records, slug, wrote

METHOD_NAMES = ["lora", "dora", "lora-plus", "qlora", "full", "freeze"]  # lorascope.train.methods.METHODS
SIZE_NAMES = ["tiny", "small", "default", "large"]  # lorascope.train.model.SIZES


def _options(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


adapter_options = _options(
    click.option(
        "--alpha", type=float, default=None, help="LoRA alpha [default: 2·rank, so s = alpha/r = 2]."
    ),
    click.option(
        "--dropout",
        type=click.FloatRange(0.0, 1.0, max_open=True),
        default=0.0,
        show_default=True,
        help="Dropout on the input of A.",
    ),
    click.option("--rslora", is_flag=True, help="Rank-stabilized scale s = alpha / sqrt(r)."),
    click.option(
        "--lora-plus-ratio",
        type=float,
        default=16.0,
        show_default=True,
        help="lora-plus: learning rate of B over that of A.",
    ),
    click.option(
        "--train-blocks",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="freeze: how many of the last blocks train (with the final norm and the head).",
    ),
)

common_options = _options(
    click.option(
        "--task",
        default="edit:20",
        show_default=True,
        help="edit:K (change K facts), domain (a relation the base never saw), or a .txt/.jsonl file.",
    ),
    click.option(
        "--model",
        "model_path",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Base: a local Hugging Face causal LM folder [default: MiniGPT pre-trained on the facts world, "
        "cached].",
    ),
    click.option(
        "--size",
        type=click.Choice(SIZE_NAMES),
        default="default",
        show_default=True,
        help="Size of the default MiniGPT base.",
    ),
    click.option(
        "--entities",
        type=click.IntRange(2, 2000),
        default=40,
        show_default=True,
        help="Countries in the facts world of the default base.",
    ),
    click.option(
        "--pretrain-steps",
        type=click.IntRange(min=1),
        default=1200,
        show_default=True,
        help="Pre-training steps of the default base.",
    ),
    click.option(
        "--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Fine-tuning steps."
    ),
    click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
    click.option(
        "--lr",
        type=float,
        default=None,
        help="Peak learning rate [default: the method's, e.g. 1e-3 LoRA, 1e-4 full].",
    ),
    click.option(
        "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Linear warmup steps."
    ),
    click.option("--weight-decay", type=click.FloatRange(min=0.0), default=0.0, show_default=True),
    click.option(
        "--clip", type=float, default=1.0, show_default=True, help="Max gradient norm (0: no clipping)."
    ),
    click.option(
        "--eval-every",
        type=click.IntRange(min=0),
        default=25,
        show_default=True,
        help="Evaluate every N steps into history.csv (0: start and end only).",
    ),
    click.option(
        "--rank-every",
        type=click.IntRange(min=0),
        default=25,
        show_default=True,
        help="Effective-rank snapshot every N steps into rank_history.csv (0: none).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Data order, dropout and LoRA init."),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda or cuda:N (falls back to the CPU, with a note, where CUDA is missing).",
    ),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary table."),
    json_option,
)


def _build(factory: Callable, **kwargs: Any) -> Any:
    """A config object, with its validation errors turned into a user-facing LorascopeError."""
    from ..errors import LorascopeError

    try:
        return factory(**kwargs)
    except ValueError as exc:
        raise LorascopeError(str(exc)) from None


def _spec(method: str, rank: int, targets: str, o: dict[str, Any]) -> Any:
    from ..train.methods import MethodConfig
    from ..train.runs import RunSpec
    from ..train.trainer import LoopConfig, OptimConfig

    m = _build(
        MethodConfig,
        method=method,
        rank=rank,
        alpha=o["alpha"],
        dropout=o["dropout"],
        rslora=o["rslora"],
        targets=targets,
        lora_plus_ratio=o["lora_plus_ratio"],
        train_blocks=o["train_blocks"],
    )
    optim = _build(
        OptimConfig,
        lr=o["lr"],
        warmup_steps=o["warmup"],
        weight_decay=o["weight_decay"],
        clip=o["clip"] or None,
    )
    loop = _build(
        LoopConfig,
        steps=o["steps"],
        batch_size=o["batch_size"],
        eval_every=o["eval_every"],
        rank_every=o["rank_every"],
        seed=o["seed"],
    )
    return _build(RunSpec, method=m, task=o["task"], optim=optim, loop=loop, device=o["device"])


def _pretrain_cfg(o: dict[str, Any]) -> Any:
    from ..train.pretrain import PretrainConfig

    return _build(PretrainConfig, size=o["size"], n_entities=o["entities"], steps=o["pretrain_steps"])


def _print_table(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    from ..train.demo import summary_table

    click.echo(summary_table(pd.DataFrame(rows)).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@click.command()
@click.option("--method", type=click.Choice(METHOD_NAMES), default="lora", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank r.")
@click.option(
    "--targets",
    default="attn",
    show_default=True,
    help="Modules to adapt: attn, mlp, all-linear, names joined by '+' (q_proj+v_proj), or re:<regex>.",
)
@adapter_options
@common_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder [default: runs/<method>-r<rank>-<targets>].",
)
def train(method, rank, targets, out, **o):
    """Fine-tune a base model with one method and record everything about the run.

    \b
      lorascope train --method lora --rank 8 --targets attn --task edit:20 --out runs/r8
      lorascope train --method full --task domain
      lorascope train --method qlora --targets all-linear --model path/to/hf-model --task data.jsonl

    Writes tuned/ (merged model), adapter/ (PEFT format), metrics.json, history.csv and rank_history.csv.
    """
    from ..train.runs import METRICS, train_one

    o["model_path"] = model_input(o["model_path"])
    spec = _spec(method, rank, targets, o)
    out = check_out(
        out or Path("runs") / slug(spec.run_name()),
        marker=(METRICS, "history.csv", "rank_history.csv", "tuned", "adapter", "base"),
    )
    row = train_one(spec, out, o["model_path"], _pretrain_cfg(o), progress=not o["quiet"])
    if not o["quiet"] and not json_mode():
        _print_table([row])
    wrote(out, "run")
    emit({"run": out, "metrics": out / METRICS}, run=plain_json(row))


def _csv(value: str, option: str, cast: Callable = str) -> list:
    from ..errors import LorascopeError

    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [cast(v) for v in items] or _fail(option, value)
    except ValueError:
        raise LorascopeError(
            f"{option} {value!r}: expected a comma-separated list, as {option} 1,2,4,8."
        ) from None


def _fail(option: str, value: str) -> list:
    from ..errors import LorascopeError

    raise LorascopeError(f"{option} {value!r} names nothing; give a comma-separated list.")


@click.command("train-sweep")
@click.option(
    "--methods",
    default="lora,full,freeze",
    show_default=True,
    help="Comma-separated: lora, dora, lora-plus, qlora, full, freeze.",
)
@click.option("--ranks", default="1,2,4,8,16", show_default=True, help="Comma-separated LoRA ranks.")
@click.option(
    "--targets",
    default="v_proj,attn,all-linear",
    show_default=True,
    help="Comma-separated target sets; each is a preset, names joined by '+', or re:<regex>.",
)
@adapter_options
@common_options
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Sweep folder [default: runs/sweep-<task>]."
)
def train_sweep(methods, ranks, targets, out, **o):
    """Train every combination of methods × ranks × target sets on one task from one base.

    \b
      lorascope train-sweep --methods lora,full,freeze --ranks 1,2,4,8,16,32,64 \\
          --targets v_proj,attn,all-linear --task edit:20 --out runs/edit20

    Writes one run folder per combination, base/ (shared) and index.csv.
    """
    from ..errors import LorascopeError
    from ..train.runs import INDEX, expand_sweep, train_sweep as run_sweep

    o["model_path"] = model_input(o["model_path"])
    method_list, target_list = _csv(methods, "--methods"), _csv(targets, "--targets")
    rank_list = _csv(ranks, "--ranks", int)
    if any(r < 1 for r in rank_list):
        raise LorascopeError(f"--ranks {ranks!r}: every rank must be a positive integer.")
    specs = expand_sweep(method_list, rank_list, target_list, _spec("lora", rank_list[0], target_list[0], o))
    out = check_out(out or Path("runs") / slug(f"sweep-{o['task']}"), marker=(INDEX, "base"))
    echo = (
        (lambda i, n, row: None)
        if o["quiet"]
        else (lambda i, n, row: click.echo(f"[{i}/{n}] {row['run']}", err=True))
    )
    index = run_sweep(specs, out, o["model_path"], _pretrain_cfg(o), progress=not o["quiet"], on_run=echo)
    import pandas as pd

    table = pd.read_csv(index)
    if not o["quiet"] and not json_mode():
        _print_table(table.to_dict("records"))
    wrote(index, "index")
    wrote(out, "runs")
    emit({"runs": out, "index": index}, runs=records(table))


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports/demo"),
    show_default=True,
    help="Output folder: runs/, spectra/, report.html.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; only where the results are.")
@json_option
def demo(out, quiet, as_json):
    """Pre-train MiniGPT (cached), sweep LoRA ranks and targets, full fine-tuning and freezing on a fact-edit
    task, analyze every run's spectrum and write a comparison report.

    Finishes in a few minutes on two CPU cores; nothing is downloaded.
    """
    from ..train.demo import MARKER, run_demo, summary_table
    from ..train.pretrain import cache_dir

    out = check_out(out, marker=(MARKER, "report.html"))
    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    result = run_demo(out, progress=not quiet, log=log)
    if not quiet and not json_mode():
        click.echo(summary_table(result.table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        click.echo(f"base model cache: {cache_dir()}")
    wrote(result.out / "runs", "runs")
    wrote(result.out / "spectra", "spectra")
    if result.report is not None:
        wrote(result.report, "report")
    emit(
        {
            "demo": result.out / MARKER,
            "runs": result.out / "runs",
            "index": result.index,
            "spectra": result.out / "spectra",
            "report": result.report,
        },
        runs=records(summary_table(result.table)),
        spectra={k: str(v) for k, v in result.spectra.items()},
        functional_pick=result.pick,
        seconds=result.seconds,
    )


def model_input(path: Path | None) -> Path | None:
    """--model of ``train`` and ``train-sweep``: a model folder; a folder lorascope wrote is refused, naming
    the model folders inside it."""
    if path is None:
        return None
    from ..errors import LorascopeError
    from ..kinds import describe, folder_kind

    kind = folder_kind(path)
    if kind is None:
        return path
    inside = {
        "run": "RUN_DIR/tuned (the fine-tuned model, to train on top of it)",
        "demo": "DEMO_DIR/runs/base (the demo's pre-trained base)",
        "train-sweep": "SWEEP_DIR/base (the sweep's base)",
    }.get(kind)
    raise LorascopeError(
        f"--model {path} is {describe(path)}, not a model folder; "
        + (f"give {inside}." if inside else "give a Hugging Face causal LM folder.")
    )
