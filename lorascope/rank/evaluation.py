"""What a functional sweep evaluates a truncated model with: a Hugging Face model folder and a text/JSONL file
(the ``hf`` extra), or a trainer run folder (its base, its task, the trainer's own metrics).

Each builds an ``Evaluate`` callable ``model -> {metric: value}`` with an ``eval_loss`` from the trainer's
task encoding and evaluation loop (``train/data.py``, ``train/trainer.py``); ``functional.functional_sweep``
calls it once per rank k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LorascopeError

Evaluate = Callable[[Any], dict[str, float]]
LOSS = "eval_loss"  # the metric every evaluation reports, and a functional sweep picks k by


# ---- evaluation on a Hugging Face model folder and a text/JSONL file (the hf extra) ------------------------


@dataclass(frozen=True)
class EvalOptions:
    """How evaluation data is read and batched."""

    max_length: int = 256  # tokens per example; longer ones are cut
    batch_size: int = 8
    max_examples: int | None = 1000  # the first N non-empty lines; None = all
    device: str = "cpu"

    def __post_init__(self) -> None:
        for field in ("max_length", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be positive or None, got {self.max_examples}")


def load_causal_lm(folder: str | Path, device: str = "cpu") -> Any:
    """A transformers causal LM from a LOCAL folder (never a download), float32, in eval mode."""
    try:
        import torch
        import transformers
    except ImportError:
        raise LorascopeError(
            "the functional sweep on a Hugging Face model folder needs the hf extra: "
            "pip install 'lorascope[hf]'"
        ) from None
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise LorascopeError(
            f"{folder} is not a Hugging Face model folder (no config.json); the functional sweep "
            "loads the base model from it."
        )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=torch.float32
    )
    return model.to(device).eval()


def read_examples(path: str | Path, max_examples: int | None) -> list[Any]:
    """Examples from a text file (one per line) or JSONL (``text``, or ``prompt`` + ``completion``)."""
    from ..train.data import examples_from_lines

    path = Path(path)
    if not path.is_file():
        raise LorascopeError(f"evaluation data {path} does not exist.")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if max_examples is not None:
        lines = lines[:max_examples]
    if not lines:
        raise LorascopeError(f"evaluation data {path} has no non-empty lines.")
    return examples_from_lines(lines, jsonl=path.suffix.lower() in (".jsonl", ".json"), source=str(path))


def hf_evaluation(
    folder: str | Path, data: str | Path, options: EvalOptions | None = None
) -> tuple[Any, Evaluate]:
    """(model, evaluate) for a Hugging Face model folder (its tokenizer) and a text/JSONL file.

    ``evaluate`` returns ``eval_loss`` (mean cross-entropy over completion tokens; every token of a plain
    text line) and ``eval_acc`` (share of examples whose every completion token is the argmax), by the
    trainer's ``evaluate`` loop.
    """
    import torch

    from ..train.data import IGNORE, encode
    from ..train.tokenizer import HFTokenizer
    from ..train.trainer import evaluate as evaluate_sets

    options = options or EvalOptions()
    model = load_causal_lm(folder, options.device)
    try:
        import transformers

        tok = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    except (OSError, ValueError) as exc:
        raise LorascopeError(
            f"{folder} has no tokenizer transformers can load ({str(exc).splitlines()[0][:200]}); "
            "the functional sweep tokenizes the evaluation data with the base model's tokenizer."
        ) from None
    encoded, _ = encode(read_examples(data, options.max_examples), tok, options.max_length)
    scored = int(
        (encoded.labels[:, 1:] != IGNORE).sum()
    )  # the model predicts position t from those before it
    if scored == 0:
        raise LorascopeError(
            f"{data}: {folder}'s tokenizer turns the evaluation data into no token the model is scored "
            "on (every completion is empty or a single leading token), so a loss would be meaningless. "
            "Check the tokenizer files in the model folder and the data's format."
        )
    device = torch.device(options.device)

    def evaluate(m: Any) -> dict[str, float]:
        return evaluate_sets(m, {"eval": encoded}, options.batch_size, device)

    return model, evaluate


# ---- evaluation of a trainer run (train/runs.py): its base, its task, the trainer's metrics
# ------------------

RUN_METRICS = "metrics.json"


@dataclass(frozen=True)
class TrainerRun:
    """A run folder: the base it was trained from, the update to analyze, and its task."""

    folder: Path
    metrics: dict[str, Any]
    base: Path
    update: Path  # adapter/ for adapter methods (exact low-rank factors), else the merged tuned/


def is_trainer_run(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / RUN_METRICS).is_file() and (p / "tuned").is_dir()


def trainer_run(path: str | Path) -> TrainerRun:
    """Read a run folder; its base is the recorded path, else the sweep's shared ``base/`` beside the run."""
    import json

    folder = Path(path)
    try:
        metrics = json.loads((folder / RUN_METRICS).read_text())
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"{folder / RUN_METRICS} could not be read ({exc}).") from None
    candidates = [Path(str(metrics.get("base", ""))), folder.parent / "base"]
    base = next((c for c in candidates if str(c) and (c / "config.json").is_file()), None)
    if base is None:
        raise LorascopeError(
            f"the base model of the run {folder} is not at {candidates[0]} nor at {candidates[1]}; "
            "the functional sweep evaluates that base with truncated updates."
        )
    update = (
        folder / "adapter" if (folder / "adapter" / "adapter_config.json").is_file() else folder / "tuned"
    )
    return TrainerRun(folder, metrics, base, update)


def trainer_evaluation(
    run: TrainerRun, batch_size: int | None = None, device: str = "cpu"
) -> tuple[Any, Evaluate, str]:
    """(base model, evaluate, primary loss) for a trainer run: its base (MiniGPT or Hugging Face) and its
    task's evaluation sets, measured by the trainer's own ``evaluate`` (per-set loss and accuracy, and the
    pooled ``eval_loss``). The primary loss is the task's first set (``edit``, ``domain``, ``heldout``): what
    the run was trained to change; the pooled loss mixes in the retention sets a fine-tune is meant to leave
    alone."""
    import torch

    from ..train.data import encode
    from ..train.folders import load_base
    from ..train.runs import load_task
    from ..train.trainer import evaluate as evaluate_sets

    base = load_base(run.base)
    loop = run.metrics.get("loop", {})
    task = load_task(str(run.metrics.get("task", {}).get("spec")), base, int(loop.get("seed", 0)))
    sets = {
        name: encode(examples, base.tokenizer, base.max_length)[0] for name, examples in task.evals.items()
    }
    dev = torch.device(device)
    model = base.model.to(dev).eval()
    size = batch_size or int(loop.get("eval_batch_size", 256))

    def evaluate(m: Any) -> dict[str, float]:
        return evaluate_sets(m, sets, size, dev)

    primary = f"{next(iter(sets))}_loss" if sets else LOSS
    return model, evaluate, primary
