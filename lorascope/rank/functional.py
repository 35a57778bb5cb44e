"""Functional sweeps: replace every ΔW by its rank-k truncation inside the model and measure the loss.

For each k of the grid the model's targeted weights are set to W0 + U_k S_k V_kᵀ, then evaluated; the
base (k = 0) and the untruncated update W0 + ΔW are evaluated too. ``pick_rank`` names the smallest k
whose loss is within a relative tolerance of the untruncated loss.

The singular vectors are computed one module at a time (``truncate.py``) and only the top k_max of
them are kept (k_max = the largest grid rank below a module's full rank), as U·S (m, k_max) and Vᵀ
(k_max, n) in float32, beside a copy of the module's base weight: memory is the model plus its targeted
weights plus Σ k_max(m + n).

Evaluation is a callable ``model -> {metric: value}`` with an ``eval_loss``: ``hf_evaluation`` builds one
for a Hugging Face model folder and a text/JSONL file (the ``hf`` extra) from the trainer's task
encoding and evaluation loop (``train/data.py``, ``train/trainer.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..delta import Delta, Plan
from ..errors import LorascopeError
from ..names import NameIndex
from ..progress import progress_bar
from .truncate import TruncateOptions, full_update, top_k

if TYPE_CHECKING:
    import torch

Evaluate = Callable[[Any], dict[str, float]]
LOSS = "eval_loss"


# ---- pure: the table and the pick ---------------------------------------------------------------------


def pick_rank(table: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """The smallest k whose loss is within ``tolerance`` of the untruncated loss, measured in units of the
    fine-tune's own loss change: loss_k − loss_full ≤ tolerance · |loss_base − loss_full|.

    A relative tolerance on the loss itself would depend on its scale (a memorized edit set ends near 0 nats);
    a share of the fine-tune's change does not: tolerance 0.05 asks for 95 % of the change the update made.

    Args:
        table: a functional sweep (columns point ∈ {base, truncated, full}, k, loss; the base row may be absent,
            then the tolerance is taken relative to the untruncated loss itself).
        tolerance: the share of the fine-tune's loss change a truncation may give up.

    Returns:
        k, its loss, the untruncated and base losses, the tolerance, whether some k qualified (``within``; else
        the largest k is named) and ``recovered`` = (base − loss_k) / (base − full).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    full = table.loc[table["point"] == "full", "loss"]
    base = table.loc[table["point"] == "base", "loss"]
    trunc = table[table["point"] == "truncated"].sort_values("k")
    if full.empty or trunc.empty:
        raise LorascopeError("a functional sweep table needs a 'full' row and at least one 'truncated' row")
    full_loss = float(full.iat[0])
    base_loss = float(base.iat[0]) if not base.empty else math.nan
    change = abs(base_loss - full_loss) if np.isfinite(base_loss) else abs(full_loss)
    ok = trunc[trunc["loss"] <= full_loss + tolerance * change]
    row = ok.iloc[0] if not ok.empty else trunc.iloc[-1]
    loss = float(row["loss"])
    gain = base_loss - full_loss
    return {
        "k": int(row["k"]), "loss": loss, "full_loss": full_loss, "base_loss": base_loss, "tolerance": tolerance,
        "within": not ok.empty, "metric": str(table.attrs.get("loss_metric", LOSS)),
        "recovered": float((base_loss - loss) / gain) if np.isfinite(gain) and gain != 0 else math.nan,
    }


# ---- the model's weights ----------------------------------------------------------------------------


@dataclass
class Slot:
    """Where one ΔW (m, n) goes in the model: its parameter, the base copy, and the stored orientation."""

    name: str
    param: Any  # torch.nn.Parameter
    base: Any  # torch.Tensor, the parameter's initial (base) value
    orient: str  # 'as_is' | 'transpose' (GPT-2 Conv1D) | 'reshape' (conv kernels)

    def set(self, delta: torch.Tensor) -> None:
        """param ← W0 + ΔW, ΔW (m, n) put in the stored layout."""
        if self.orient == "transpose":
            delta = delta.T
        elif self.orient == "reshape":
            delta = delta.reshape(self.param.shape)
        self.param.data.copy_(self.base + delta.to(self.base.dtype))


def model_slots(model: Any, plan: Plan) -> list[Slot]:
    """One slot per update, found by name among the model's parameters (prefixes may differ)."""
    params = dict(model.named_parameters())
    index = NameIndex([k.removesuffix(".weight") for k in params])
    slots, problems = [], []
    for d in plan.deltas:
        hit = index.find(d.name)
        param = params.get(f"{hit}.weight") if hit is not None else None
        if param is None:
            problems.append(f"{d.name}: no parameter of that name in the model")
            continue
        m, n = d.shape
        shape = tuple(param.shape)
        orient = ("as_is" if shape == (m, n) else "transpose" if shape == (n, m)
                  else "reshape" if param.numel() == m * n and shape[0] == m else None)
        if orient is None:
            problems.append(f"{d.name}: ΔW is {m}×{n} but the model's weight is {list(shape)}")
            continue
        slots.append(Slot(d.name, param, param.detach().clone(), orient))
    if problems:
        raise LorascopeError("the model does not hold every updated module:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    return slots


def vector_slots(model: Any, plan: Plan) -> list[tuple[Any, Any]]:
    """(parameter, tuned value) for each 1-D update of the plan (norm weights, biases) the model holds.

    These cannot be truncated; every point but the base carries them untruncated, so the untruncated point
    is exactly the fine-tuned model and the points differ only in the rank of the matrix updates.
    """
    import torch

    from ..delta import vector_update

    params = dict(model.named_parameters())
    out = []
    for v in plan.vectors:
        name = v.name.removesuffix(".lora_B.bias") + ".bias" if v.is_update else v.name
        param = params.get(f"{name}.weight", params.get(name))
        if param is None or param.dim() != 1:
            continue
        delta, _ = vector_update(v)
        if delta.size != param.numel():
            continue
        out.append((param, param.detach().clone() + torch.from_numpy(delta).to(param.dtype)))
    return out


# ---- the sweep -------------------------------------------------------------------------------------------


@dataclass
class _Factors:
    us: Any  # (m, k_max) float32 torch: U·S
    vt: Any  # (k_max, n) float32 torch: Vᵀ
    s2: np.ndarray  # (k_max,) σ², float64
    total: float  # ‖ΔW‖_F²
    unit: int  # m + n


def functional_sweep(
    model: Any,
    plan: Plan,
    ranks: Sequence[int],
    evaluate: Evaluate,
    options: TruncateOptions | None = None,
    progress: bool = False,
    loss_metric: str = LOSS,
) -> pd.DataFrame:
    """Loss (and every metric ``evaluate`` returns) of the base, each rank-k truncation, and the full update.

    Args:
        model: a torch model holding the *base* weights (loaded from the base checkpoint).
        plan: the updates, named like the model's parameters (``delta.plan_deltas``).
        ranks: the grid of k.
        evaluate: model -> metrics with an ``eval_loss``.
        options: the SVD route for dense updates.
        progress: show a progress bar.
        loss_metric: the metric reported as ``loss`` (the one the pick reads), e.g. a task's primary set.

    Returns:
        One row per point: point (base | truncated | full), k (0 for base, NaN for full), params
        (Σ_l min(k, rank_l)(m_l + n_l)), energy (pooled Σ kept / Σ ‖ΔW‖²), loss and the other metrics.
        1-D updates (norms, biases) are applied untruncated at every point but the base (``vector_slots``).
        The model is left holding the untruncated update.
    """
    import torch

    ranks = sorted({int(k) for k in ranks if int(k) >= 1})
    if not ranks:
        raise ValueError("ranks must hold at least one positive integer")
    slots = model_slots(model, plan)
    deltas = {d.name: d for d in plan.deltas}
    rows: list[dict[str, Any]] = []
    steps = len(slots) + len(ranks) + 2
    with progress_bar(steps, "functional sweep", progress) as bar, torch.no_grad():
        factors: dict[str, _Factors] = {}
        for slot in slots:
            d = deltas[slot.name]
            k_max = _k_max(d, ranks)
            tk = top_k(d, k_max, options)
            m, n = d.shape
            factors[slot.name] = _Factors(torch.from_numpy(tk.u * tk.s).float(), torch.from_numpy(tk.v.T.copy()).float(),
                                          tk.s**2, tk.fro_norm**2, m + n)
            bar.advance(note=f"SVD {slot.name}")
        total = sum(f.total for f in factors.values())
        rows.append({"point": "base", "k": 0, "params": 0, "energy": 0.0, **evaluate(model)})
        bar.advance(note="base")
        for param, tuned in vector_slots(model, plan):  # 1-D updates, untruncated from here on
            param.data.copy_(tuned)
        for k in ranks:
            kept, params = 0.0, 0
            for slot in slots:
                f = factors[slot.name]
                r = min(k, f.s2.size)
                slot.set(f.us[:, :r] @ f.vt[:r])  # (m, r) @ (r, n) -> (m, n)
                kept += float(f.s2[:r].sum())
                params += r * f.unit
            rows.append({"point": "truncated", "k": k, "params": params,
                         "energy": min(kept / total, 1.0) if total > 0 else 1.0, **evaluate(model)})
            bar.advance(note=f"k={k}")
        del factors
        for slot in slots:
            slot.set(full_update(deltas[slot.name], options))
        rows.append({"point": "full", "k": math.nan, "params": math.nan, "energy": 1.0, **evaluate(model)})
        bar.advance(note="full")
    table = pd.DataFrame(rows)
    if loss_metric not in table.columns:
        raise LorascopeError(f"the evaluation returned no {loss_metric!r} (it returned {', '.join(map(str, rows[0]))})")
    table.insert(0, "loss", table[loss_metric])
    table.attrs["loss_metric"] = loss_metric
    table["k"] = table["k"].astype("Int64")  # empty for the untruncated row
    table["params"] = table["params"].astype("Int64")
    front = ["point", "k", "params", "energy", "loss"]
    table = table.loc[:, ~table.columns.duplicated()]
    return table[front + [c for c in table.columns if c not in front]]


def _k_max(d: Delta, ranks: Sequence[int]) -> int:
    """The largest grid rank to keep vectors for: every rank is covered, capped by min(m, n)."""
    return max(1, min(max(ranks), min(d.shape)))


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
        raise LorascopeError("the functional sweep on a Hugging Face model folder needs the hf extra: "
                             "pip install 'lorascope[hf]'") from None
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise LorascopeError(f"{folder} is not a Hugging Face model folder (no config.json); the functional sweep "
                             "loads the base model from it.")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
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


def hf_evaluation(folder: str | Path, data: str | Path, options: EvalOptions | None = None) -> tuple[Any, Evaluate]:
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
        raise LorascopeError(f"{folder} has no tokenizer transformers can load ({str(exc).splitlines()[0][:200]}); "
                             "the functional sweep tokenizes the evaluation data with the base model's tokenizer.") from None
    encoded, _ = encode(read_examples(data, options.max_examples), tok, options.max_length)
    scored = int((encoded.labels[:, 1:] != IGNORE).sum())  # the model predicts position t from those before it
    if scored == 0:
        raise LorascopeError(f"{data}: {folder}'s tokenizer turns the evaluation data into no token the model is scored "
                             "on (every completion is empty or a single leading token), so a loss would be meaningless. "
                             "Check the tokenizer files in the model folder and the data's format.")
    device = torch.device(options.device)

    def evaluate(m: Any) -> dict[str, float]:
        return evaluate_sets(m, {"eval": encoded}, options.batch_size, device)

    return model, evaluate


# ---- evaluation of a trainer run (train/runs.py): its base, its task, the trainer's metrics ------------------

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
        raise LorascopeError(f"the base model of the run {folder} is not at {candidates[0]} nor at {candidates[1]}; "
                             "the functional sweep evaluates that base with truncated updates.")
    update = folder / "adapter" if (folder / "adapter" / "adapter_config.json").is_file() else folder / "tuned"
    return TrainerRun(folder, metrics, base, update)


def trainer_evaluation(run: TrainerRun, batch_size: int | None = None, device: str = "cpu") -> tuple[Any, Evaluate, str]:
    """(base model, evaluate, primary loss) for a trainer run: its base (MiniGPT or Hugging Face) and its task's
    evaluation sets, measured by the trainer's own ``evaluate`` (per-set loss and accuracy, and the pooled
    ``eval_loss``). The primary loss is the task's first set (``edit``, ``domain``, ``heldout``): what the run
    was trained to change; the pooled loss mixes in the retention sets a fine-tune is meant to leave alone."""
    import torch

    from ..train.data import encode
    from ..train.folders import load_base
    from ..train.runs import load_task
    from ..train.trainer import evaluate as evaluate_sets

    base = load_base(run.base)
    loop = run.metrics.get("loop", {})
    task = load_task(str(run.metrics.get("task", {}).get("spec")), base, int(loop.get("seed", 0)))
    sets = {name: encode(examples, base.tokenizer, base.max_length)[0] for name, examples in task.evals.items()}
    dev = torch.device(device)
    model = base.model.to(dev).eval()
    size = batch_size or int(loop.get("eval_batch_size", 256))

    def evaluate(m: Any) -> dict[str, float]:
        return evaluate_sets(m, sets, size, dev)

    primary = f"{next(iter(sets))}_loss" if sets else LOSS
    return model, evaluate, primary
