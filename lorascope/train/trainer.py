"""The training loop: AdamW with warmup and cosine decay, clipping, evaluation and spectra snapshots.

It owns the loop and what it measures — nothing here knows which method made the parameter groups, and
nothing here reads or writes files (``runs.py`` does). Every ``rank_every`` steps it records, for each
adapter module, entropy_rank, rank_90 and ‖ΔW‖_F of ΔW = s·B@A from the factored SVD (never forming
B@A; docs/METRICS.md), and for a full or frozen-layer fine-tune the same columns of the dense ΔW = W − W0 of
every trained matrix. For DoRA the snapshot covers the low-rank direction update s·B@A; the magnitude
rescaling is analyzed by ``lorascope spectrum`` with the base.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..delta import form_from
from ..linalg import Dense, svd
from ..metrics import module_metrics
from ..progress import progress_bar
from . import memory
from .data import IGNORE, Encoded
from .lora import base_kind, lora_layers


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (Loshchilov & Hutter 2019) with linear warmup and cosine decay to zero."""

    lr: float | None = None  # peak learning rate; None: the method's default (methods.METHODS)
    warmup_steps: int = 10
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float | None = 1.0  # max global gradient norm; None: no clipping

    def __post_init__(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")


@dataclass(frozen=True)
class LoopConfig:
    """How long, in which batches, and how often to measure."""

    steps: int = 200
    batch_size: int = 16
    eval_every: int = (
        25  # evaluation row in history.csv every N steps (and at step 0 and the end); 0: only the end
    )
    rank_every: int = 25  # spectra snapshot every N steps; 0: none
    eval_batch_size: int = 256
    seed: int = 0  # data order, dropout and LoRA initialization

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("eval_every", "rank_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak lr at 0-based ``step``: (step+1)/warmup while warming up, then
    ½(1 + cos(π·progress)), progress = (step − warmup) / (total − warmup) (Loshchilov & Hutter 2017;
    the schedule of transformers' get_cosine_schedule_with_warmup, with warmup counted from 1)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the method's parameter groups, each at lr · its ``lr_scale``."""
    if cfg.lr is None:
        raise ValueError("OptimConfig.lr is None: resolve the method's default learning rate first")
    param_groups = [
        {
            "params": g["params"],
            "lr": cfg.lr * g.get("lr_scale", 1.0),
            "base_lr": cfg.lr * g.get("lr_scale", 1.0),
            "name": g.get("name", ""),
        }
        for g in groups
        if g["params"]
    ]
    return torch.optim.AdamW(
        param_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(B, T, vocab) logits of a MiniGPT (a tensor) or a Hugging Face causal LM (``.logits``)."""
    out = model(input_ids=ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next-token prediction, (B, T−1); 0 where the label is IGNORE."""
    pred = logits[:, :-1].float()  # position t predicts token t+1
    target = labels[:, 1:]
    return F.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(target.shape)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled (completion) tokens of the batch."""
    mask = labels[:, 1:] != IGNORE
    return token_losses(logits, labels).sum() / mask.sum().clamp_min(1)


@torch.no_grad()
def evaluate(
    model: nn.Module, sets: dict[str, Encoded], batch_size: int, device: torch.device
) -> dict[str, float]:
    """Per set: ``<set>_acc`` (share of examples whose every completion token is the argmax) and
    ``<set>_loss`` (mean completion-token cross-entropy); ``eval_loss`` pools the tokens of all sets."""
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    total_loss, total_tokens = 0.0, 0
    for name, data in sets.items():
        correct, loss_sum, tokens = 0, 0.0, 0
        for start in range(0, len(data), batch_size):
            ids = data.ids[start : start + batch_size].to(device)
            labels = data.labels[start : start + batch_size].to(device)
            logits = logits_of(model, ids)
            mask = labels[:, 1:] != IGNORE
            hit = (logits[:, :-1].argmax(-1) == labels[:, 1:]) | ~mask
            correct += int(hit.all(dim=1).sum())
            loss_sum += float(token_losses(logits, labels).sum())
            tokens += int(mask.sum())
        out[f"{name}_acc"] = correct / max(len(data), 1)
        out[f"{name}_loss"] = loss_sum / max(tokens, 1)
        total_loss, total_tokens = total_loss + loss_sum, total_tokens + tokens
    out["eval_loss"] = total_loss / max(total_tokens, 1)
    model.train(was_training)
    return out


def batches(data: Encoded, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless seeded epochs: a fresh permutation each epoch, batches of ``batch_size`` (the last one of an
    epoch may be smaller), each trimmed to its longest row."""
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            ids, labels = data.ids[idx], data.labels[idx]
            width = (
                int((labels != IGNORE).any(0).nonzero().max()) + 1
                if (labels != IGNORE).any()
                else ids.shape[1]
            )
            yield ids[:, :width], labels[:, :width]


# --- spectra snapshots ------------------------------------------------------------------------------------


def dense_references(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every trainable (out, in) matrix of a Linear, Conv1D or Embedding module: the W0 of
    dense ΔW snapshots. Empty when the model trains through LoRA layers only."""
    if any(True for _ in lora_layers(model)):
        return {}
    refs = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if (
            isinstance(w, nn.Parameter)
            and w.requires_grad
            and w.ndim == 2
            and (base_kind(m) is not None or isinstance(m, nn.Embedding))
        ):
            refs[name] = _out_in(m).detach().cpu().clone()
    return refs


def _out_in(m: nn.Module) -> torch.Tensor:
    kind = base_kind(m)
    return kind.weight(m) if kind is not None else m.weight


SNAPSHOT_COLUMNS = ("entropy_rank", "rank_90", "fro_norm", "spectral_norm")


@torch.no_grad()
def snapshot(model: nn.Module, step: int, refs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per adapter module (factored SVD of s·B@A) or per trained matrix (exact SVD of W − W0)."""
    rows = []
    for name, layer in lora_layers(model):
        tensors = {"up": layer.lora_B.weight.detach().cpu(), "down": layer.lora_A.weight.detach().cpu()}
        family = "dora" if layer.spec.dora else "lora"
        if layer.spec.dora:  # the exact DoRA update needs W0 and the magnitudes
            tensors["magnitude"] = layer.lora_magnitude_vector.detach().cpu()
            tensors["base"] = layer.original_weight().detach().cpu()
        form = form_from(family, {k: v.float() for k, v in tensors.items()}, layer.scaling, name=name)
        rows.append(_row(step, name, "lora", layer.shape, svd(form), layer.spec.r))
    modules = dict(model.named_modules())
    for name, w0 in refs.items():
        delta = _out_in(modules[name]).detach().cpu().float() - w0.float()
        rows.append(_row(step, name, "dense", tuple(delta.shape), svd(Dense(delta)), None))
    return rows


def _row(
    step: int, name: str, source: str, shape: tuple[int, int], svd: Any, r: int | None
) -> dict[str, Any]:
    m = module_metrics(svd.s, shape, svd.fro_norm, complete=svd.complete)
    return {
        "step": step,
        "name": name,
        "source": source,
        "rows": shape[0],
        "cols": shape[1],
        "lora_rank": r,
        **{c: m[c] for c in SNAPSHOT_COLUMNS},
    }


# --- the loop ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    losses: list[float]  # training loss of every step
    history: list[dict[str, Any]]  # one row per evaluation: step, lr, train_loss, eval metrics
    rank_history: list[dict[str, Any]]
    final: dict[str, float]  # the last evaluation
    seconds: float
    optimizer_state_bytes: int
    memory: dict[str, Any] = field(default_factory=dict)


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and use deterministic kernels where torch has them (cheap on the CPU); restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


def train(
    model: nn.Module,
    groups: list[dict],
    train_set: Encoded,
    eval_sets: dict[str, Encoded],
    optim: OptimConfig,
    loop: LoopConfig,
    device: torch.device,
    progress: bool = False,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` (already on ``device``) on ``train_set`` and measure it on ``eval_sets``."""
    opt = build_optimizer(groups, optim)
    params = [p for g in opt.param_groups for p in g["params"]]
    refs = dense_references(model) if loop.rank_every else {}
    data = batches(train_set, loop.batch_size, loop.seed)
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    ranks: list[dict[str, Any]] = []
    was_reset = memory.reset_peak(device)
    start = time.perf_counter()

    def measure(step: int, lr: float) -> dict[str, float]:
        since = losses[-(step - (history[-1]["step"] if history else 0)) :] if step else []
        row = {
            "step": step,
            "lr": lr,
            "train_loss": sum(since) / len(since) if since else float("nan"),
            **evaluate(model, eval_sets, loop.eval_batch_size, device),
        }
        history.append(row)
        return row

    model.train()
    with deterministic(loop.seed), progress_bar(loop.steps, description, enabled=progress) as bar:
        measure(0, 0.0)
        if loop.rank_every:
            ranks.extend(snapshot(model, 0, refs))
        for step in range(1, loop.steps + 1):
            factor = lr_factor(step - 1, optim.warmup_steps, loop.steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            ids, labels = next(data)
            loss = lm_loss(logits_of(model, ids.to(device)), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if optim.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, optim.clip)
            opt.step()
            losses.append(float(loss.detach()))
            if loop.rank_every and (step % loop.rank_every == 0 or step == loop.steps):
                ranks.extend(snapshot(model, step, refs))
            if step == loop.steps or (loop.eval_every and step % loop.eval_every == 0):
                row = measure(step, optim.lr * factor)
                bar.advance(0, note=f"loss {row['train_loss']:.3f}  eval {row['eval_loss']:.3f}")
            bar.advance()
    seconds = time.perf_counter() - start
    return TrainResult(
        losses,
        history,
        ranks,
        history[-1],
        seconds,
        optimizer_state_bytes(opt),
        memory.peak(device, was_reset),
    )
