"""Run folders and sweeps: train one configuration and record everything about it.

A run folder holds:

- ``tuned/`` — the fine-tuned model, adapters merged, as a folder of the base's format (a Hugging Face
  Llama folder for MiniGPT);
- ``adapter/`` — for LoRA-family methods, the adapter in PEFT format;
- ``metrics.json`` — method and options, task, parameter counts, optimizer-state bytes, wall time,
  peak memory, the base's and the final evaluation;
- ``history.csv`` — step, lr, training loss and every evaluation metric over training;
- ``rank_history.csv`` — every ``rank_every`` steps, each adapted (or trained) matrix's entropy_rank,
  rank_90, ‖ΔW‖_F and σ1.

A sweep writes one run folder per configuration, ``base/`` once (a MiniGPT base is copied there; a
``--model`` folder is referenced where it is, not copied) and ``index.csv``: one row per run.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import LorascopeError
from ..outputs import remove_written, writing
from .data import Task, encode, file_task, world_task
from .folders import Base, load_base, read_task_file, save_adapter, save_tuned, write_csv, write_json
from .lora import (
    adaptable_modules,
    adapter_config,
    adapter_state_dict,
    lora_layers,
    merge_and_unload,
    peft_target_modules,
)
from .methods import METHODS, MethodConfig, prepare
from .pretrain import PretrainConfig, pretrain
from .trainer import LoopConfig, OptimConfig, train

INDEX = "index.csv"
METRICS = "metrics.json"


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run."""

    method: MethodConfig = field(default_factory=MethodConfig)
    task: str = "edit:20"  # edit:K, domain, or a .txt / .jsonl path
    optim: OptimConfig = field(default_factory=OptimConfig)  # lr None: the method's default
    loop: LoopConfig = field(default_factory=LoopConfig)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    name: str | None = None  # folder name inside a sweep; None: from the method and its options

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N, got {self.device!r}")

    def resolved_optim(self) -> OptimConfig:
        if self.optim.lr is not None:
            return self.optim
        return replace(self.optim, lr=METHODS[self.method.method].default_lr)

    def run_name(self) -> str:
        if self.name:
            return self.name
        m = self.method
        if m.uses_adapter:
            return f"{m.method}-r{m.rank}-{_slug(m.targets)}"
        return f"freeze-b{m.train_blocks}" if m.method == "freeze" else m.method


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text.removeprefix("re:")).strip("-.")[:60] or "targets"


def pick_device(name: str) -> tuple[torch.device, str | None]:
    """The torch device for ``name``; a CUDA request without CUDA falls back to the CPU, with a note."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device(
            "cpu"
        ), f"device {name!r} was asked for but torch sees no CUDA GPU; trained on the CPU"
    return torch.device(name), None


def load_task(spec: str, base: Base, seed: int) -> Task:
    """The task ``spec`` names: a registered world task, or examples read from a .txt / .jsonl file."""
    path = Path(spec)
    if path.suffix in (".txt", ".jsonl") or path.exists():
        return file_task(str(path), read_task_file(path), base.world, seed)
    return world_task(spec, base.world, seed)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; an NF4 layer counts its weight's elements, not its packed bytes."""
    from .nf4 import NF4Linear

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, NF4Linear))
    return trainable, total


def train_run(spec: RunSpec, base_path: Path, out: Path, progress: bool = False) -> dict[str, Any]:
    """Train one run from the base folder ``base_path`` and write its run folder ``out``.

    Returns:
        The run's row of ``index.csv``.

    Raises:
        LorascopeError: the base, the task or the method's options do not fit together.
    """
    start = time.perf_counter()
    device, device_note = pick_device(spec.device)
    base = load_base(base_path)
    task = load_task(spec.task, base, spec.loop.seed)
    model = base.model
    torch.manual_seed(spec.loop.seed)  # LoRA's A initialization draws from torch's generator
    all_linear = list(adaptable_modules(model))
    prepared = prepare(model, spec.method)
    model.to(device)
    train_set, cut = encode(task.train, base.tokenizer, base.max_length)
    eval_sets = {name: encode(ex, base.tokenizer, base.max_length)[0] for name, ex in task.evals.items()}
    notes = [
        n
        for n in (
            device_note,
            _unknown_note(task, base),
            f"{cut} training examples were cut to {base.max_length} tokens" if cut else None,
        )
        if n
    ]
    optim = spec.resolved_optim()
    result = train(
        model,
        prepared.groups,
        train_set,
        eval_sets,
        optim,
        spec.loop,
        device,
        progress,
        description=spec.run_name(),
    )
    trainable, total = count_parameters(model)
    out.mkdir(parents=True, exist_ok=True)
    lora_info = _save_adapter(spec, model, prepared.targets, all_linear, base, out)
    save_tuned(out / "tuned", base, merge_and_unload(model).cpu())
    metrics = {
        "run": spec.run_name(),
        "method": spec.method.method,
        "options": asdict(spec.method),
        "lora": lora_info,
        "task": {
            "spec": spec.task,
            "name": task.name,
            "n_train": len(task.train),
            "n_eval": {k: len(v) for k, v in task.evals.items()},
            **task.details,
        },
        "optim": asdict(optim),
        "loop": asdict(spec.loop),
        "base": str(base.path.resolve()),
        "base_format": base.format,
        "device": str(device),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_fraction": trainable / total,
        "quantized_modules": len(prepared.quantized),
        "optimizer_state_bytes": result.optimizer_state_bytes,
        "train_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - start,
        "memory": result.memory,
        "base_eval": result.history[0],
        "final": result.final,
        "versions": {
            "lorascope": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "notes": notes,
    }
    write_json(out / METRICS, metrics)
    write_csv(out / "history.csv", result.history)
    write_csv(out / "rank_history.csv", result.rank_history)
    return index_row(metrics, out)


def _unknown_note(task: Task, base: Base) -> str | None:
    unknown = getattr(base.tokenizer, "unknown_fraction", None)
    if unknown is None:
        return None
    share = unknown([e.prompt + " " + e.completion for e in task.train])
    return (
        f"{share:.0%} of the task's words are not in the base's vocabulary and read as [UNK]"
        if share
        else None
    )


def _save_adapter(
    spec: RunSpec, model: torch.nn.Module, targets: list[str], all_linear: list[str], base: Base, out: Path
) -> dict[str, Any] | None:
    if not spec.method.uses_adapter:
        return None
    lora = spec.method.lora_spec()
    layers = dict(lora_layers(model))
    fan_in_fan_out = any(layer.kind.fan_in_fan_out for layer in layers.values())
    target_modules = peft_target_modules(targets, all_linear)
    save_adapter(
        out / "adapter",
        adapter_state_dict(model),
        adapter_config(lora, target_modules, str(base.path.resolve()), fan_in_fan_out),
    )
    return {
        "r": lora.r,
        "alpha": lora.alpha,
        "scale": lora.scale,
        "rslora": lora.rslora,
        "dora": lora.dora,
        "dropout": lora.dropout,
        "targets": spec.method.targets,
        "target_modules": target_modules,
        "modules": len(layers),
    }


def index_row(metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The summary of one run that ``index.csv`` lists."""
    opts = metrics["options"]
    adapter = metrics["lora"] is not None
    return {
        "run": metrics["run"],
        "method": metrics["method"],
        "rank": opts["rank"] if adapter else None,
        "targets": opts["targets"] if adapter else None,
        "train_blocks": opts["train_blocks"] if metrics["method"] == "freeze" else None,
        "lr": metrics["optim"]["lr"],
        "steps": metrics["loop"]["steps"],
        "task": metrics["task"]["spec"],
        "trainable_parameters": metrics["trainable_parameters"],
        "total_parameters": metrics["total_parameters"],
        "optimizer_state_bytes": metrics["optimizer_state_bytes"],
        "train_seconds": round(metrics["train_seconds"], 3),
        "peak_rss_bytes": metrics["memory"].get("peak_rss_bytes"),
        **{k: v for k, v in metrics["final"].items() if k != "step" and k != "lr"},
        "folder": folder.name,
    }


# --- sweeps -----------------------------------------------------------------------------------------------


def expand_sweep(
    methods: list[str], ranks: list[int], targets: list[str], template: RunSpec
) -> list[RunSpec]:
    """Adapter methods × ranks × target sets, plus one run per method without an adapter (full, freeze)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LorascopeError(
            f"unknown method(s) {', '.join(unknown)}; expected a comma-separated list of "
            f"{', '.join(METHODS)}."
        )
    specs = []
    for method in methods:
        if METHODS[method].adapter:
            specs += [
                replace(
                    template, method=replace(template.method, method=method, rank=r, targets=t), name=None
                )
                for t in targets
                for r in ranks
            ]
        else:
            specs.append(replace(template, method=replace(template.method, method=method), name=None))
    names = [s.run_name() for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LorascopeError(
            f"the sweep would write two runs into the same folder: {', '.join(dupes)}; "
            "remove repeated methods, ranks or targets."
        )
    return specs


def materialize_base(base_path: Path, out: Path, copy: bool) -> Path:
    """The base the runs of a sweep share: ``out/base`` (a copy, made once, in its own transaction of ``out``)
    or ``base_path`` itself."""
    if not copy:
        return base_path
    target = out / "base"
    if not (target / "config.json").is_file():
        with writing(out, "train", mode="update", link=True) as tx:
            tx.fresh("base")
            shutil.copytree(base_path, tx.stage / "base")
    return Path(os.path.abspath(target))


def sweep(
    specs: list[RunSpec],
    base_path: Path,
    out: Path,
    copy_base: bool,
    progress: bool = False,
    on_run: Any = None,
) -> Path:
    """Train every run of ``specs`` into ``out/<run name>``; ``index.csv`` is rewritten after each run, so an
    interrupted sweep keeps the rows of the runs it finished. ``on_run(i, n, row)`` is called after each run.

    Returns:
        The path of ``index.csv``.
    """
    rows: list[dict[str, Any]] = []
    existed = out.exists()
    try:
        shared = materialize_base(base_path, out, copy_base)
        for i, spec in enumerate(specs, 1):
            # each finished run is committed with the index listing it, so an interrupted sweep keeps them
            with writing(out, "train-sweep", mode="update", link=True) as tx, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # deterministic-kernel notices, once per run
                tx.fresh(spec.run_name())  # staged as hard links: a run is rewritten from nothing
                row = train_run(spec, shared, tx.stage / spec.run_name(), progress)
                write_csv(tx.file(INDEX), rows + [row])
            rows.append(row)
            if on_run is not None:
                on_run(i, len(specs), rows[-1])
    except BaseException:
        if not rows and not _had_runs(out, existed):  # nothing finished: the base copied for it goes too
            remove_written(out, remove_folder=not existed)
        raise
    return out / INDEX


def _had_runs(out: Path, existed: bool) -> bool:
    """Whether ``out`` held finished runs before this call (an index of an earlier sweep)."""
    return existed and (out / INDEX).is_file()


# --- entry points: base resolution + one run or a sweep ---------------------------------------------------


def resolve_base(model: Path | None, pretrain_cfg: PretrainConfig, progress: bool) -> tuple[Path, bool]:
    """(base folder, whether runs should copy it next to themselves).

    A ``--model`` folder is used where it is; without one, the pre-trained MiniGPT (trained now, or taken
    from the cache) is copied next to the runs, so the run folders stay complete if the cache is cleared.
    """
    if model is not None:
        return Path(model), False
    path, _ = pretrain(pretrain_cfg, progress=progress)
    return path, True


def train_one(
    spec: RunSpec,
    out: Path,
    model: Path | None = None,
    pretrain_cfg: PretrainConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One run into ``out`` (``out/base`` holds the MiniGPT base when no ``model`` folder is given)."""
    base, copy = resolve_base(model, pretrain_cfg or PretrainConfig(), progress)
    existed = out.exists() and (out / METRICS).is_file()
    fresh = not out.exists()
    try:
        shared = materialize_base(base, out, copy)
        with writing(
            out, "train", keep=["base"], link=True
        ) as tx:  # the run's files are written from nothing
            row = train_run(spec, shared, tx.stage, progress)
    except BaseException:
        if not existed:  # a failed first run leaves nothing that would block the same --out next time
            remove_written(out, remove_folder=fresh)
        raise
    return {**row, "folder": tx.path.name}


def train_sweep(
    specs: list[RunSpec],
    out: Path,
    model: Path | None = None,
    pretrain_cfg: PretrainConfig | None = None,
    progress: bool = False,
    on_run: Any = None,
) -> Path:
    """Every run of ``specs`` into ``out/<run name>``, sharing one base; returns ``index.csv``."""
    base, copy = resolve_base(model, pretrain_cfg or PretrainConfig(), progress)
    return sweep(specs, base, out, copy, progress, on_run)
