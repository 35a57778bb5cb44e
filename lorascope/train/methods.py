"""Fine-tuning methods: which parameters of a base model train, and in which optimizer groups.

Each method in ``METHODS`` prepares a model in place and returns its parameter groups:

- ``lora`` — LoRA on the target modules (Hu et al. 2021); everything else frozen.
- ``dora`` — LoRA with a trainable magnitude per output feature (Liu et al. 2024).
- ``lora-plus`` — LoRA whose B matrices learn ``lora_plus_ratio`` times faster than A (Hayou et al. 2024,
  LoRA+, §4: ratio λ = 2⁴ recommended).
- ``qlora`` — every linear layer of the transformer blocks frozen as NF4, LoRA on top (Dettmers et al. 2023).
- ``full`` — every parameter trains.
- ``freeze`` — only the last ``train_blocks`` blocks, the final norm and the head train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import LorascopeError
from .lora import LoraSpec, adapter_parameters, adaptable_modules, inject, resolve_targets
from .nf4 import BLOCK, quantize_linears


@dataclass(frozen=True)
class MethodConfig:
    """What trains. LoRA fields are ignored by full and freeze, ``train_blocks`` by the rest."""

    method: str = "lora"
    rank: int = 8
    alpha: float | None = None  # None: 2·rank, so s = α / r = 2 at every rank of a sweep
    dropout: float = 0.0
    rslora: bool = False
    targets: str = "attn"  # a preset (attn, mlp, all-linear), names joined by '+', or re:<regex>
    lora_plus_ratio: float = 16.0  # lr(B) / lr(A) for lora-plus
    train_blocks: int = 1  # freeze: how many of the last blocks train
    nf4_block: int = BLOCK

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.lora_plus_ratio > 0:
            raise ValueError(f"lora_plus_ratio must be positive, got {self.lora_plus_ratio!r}")
        if not isinstance(self.train_blocks, int) or self.train_blocks < 1:
            raise ValueError(f"train_blocks must be a positive integer, got {self.train_blocks!r}")

    @property
    def uses_adapter(self) -> bool:
        return METHODS[self.method].adapter

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(
            r=self.rank,
            alpha=self.alpha if self.alpha is not None else 2.0 * self.rank,
            dropout=self.dropout,
            rslora=self.rslora,
            dora=self.method == "dora",
        )


@dataclass
class Prepared:
    """Parameter groups for the optimizer (each with an ``lr_scale``) and the adapted module names."""

    groups: list[dict]
    targets: list[str] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _adapter(model: nn.Module, cfg: MethodConfig, b_scale: float = 1.0) -> Prepared:
    _freeze_all(model)
    names = resolve_targets(model, cfg.targets)
    inject(model, names, cfg.lora_spec())
    groups = adapter_parameters(model)
    return Prepared(
        [
            {"params": groups["A"], "lr_scale": 1.0, "name": "A"},
            {"params": groups["B"], "lr_scale": b_scale, "name": "B"},
        ],
        names,
    )


def _lora(model: nn.Module, cfg: MethodConfig) -> Prepared:
    return _adapter(model, cfg)


def _lora_plus(model: nn.Module, cfg: MethodConfig) -> Prepared:
    return _adapter(model, cfg, b_scale=cfg.lora_plus_ratio)


def _qlora(model: nn.Module, cfg: MethodConfig) -> Prepared:
    """Quantize the linear layers of the blocks (not embeddings or head, as QLoRA), then LoRA on top."""
    _freeze_all(model)
    head = {n for n in adaptable_modules(model) if n.rpartition(".")[2] == "lm_head"}
    quantized = quantize_linears(model, lambda name: name not in head, cfg.nf4_block)
    prepared = _adapter(model, cfg)
    prepared.quantized = quantized
    return prepared


def _full(model: nn.Module, cfg: MethodConfig) -> Prepared:
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    return Prepared([{"params": params, "lr_scale": 1.0, "name": "all"}])


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks: the longest ``nn.ModuleList`` in the model."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise LorascopeError(
            f"method freeze needs a model with a list of blocks; {type(model).__name__} has none."
        )
    return max(lists, key=len)


def _freeze(model: nn.Module, cfg: MethodConfig) -> Prepared:
    """Train the last ``train_blocks`` blocks plus every parameter after the blocks (final norm, head)."""
    _freeze_all(model)
    blocks = _blocks(model)
    if cfg.train_blocks > len(blocks):
        raise LorascopeError(f"--train-blocks {cfg.train_blocks} exceeds the model's {len(blocks)} blocks.")
    block_ids = {id(p) for b in blocks for p in b.parameters()}
    trained = [p for b in list(blocks)[-cfg.train_blocks :] for p in b.parameters()]
    outside = [p for p in model.parameters() if id(p) not in block_ids]
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embed_ids = {id(p) for p in embed.parameters()} if embed is not None else _first_embedding(model)
    head = [p for p in outside if id(p) not in embed_ids]  # final norm and output layer
    for p in trained + head:
        p.requires_grad_(True)
    return Prepared([{"params": trained + head, "lr_scale": 1.0, "name": "trained"}])


def _first_embedding(model: nn.Module) -> set[int]:
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return {id(p) for p in m.parameters()}
    return set()


@dataclass(frozen=True)
class Method:
    prepare: Callable[[nn.Module, MethodConfig], Prepared]
    adapter: bool  # trains a LoRA adapter (saved in PEFT format)
    default_lr: float  # used when no learning rate is given


METHODS: dict[str, Method] = {
    "lora": Method(_lora, True, 1e-3),
    "dora": Method(_lora, True, 1e-3),
    "lora-plus": Method(_lora_plus, True, 2.5e-4),  # B then learns at 16 × 2.5e-4 = 4e-3
    "qlora": Method(_qlora, True, 1e-3),
    "full": Method(_full, False, 1e-4),
    "freeze": Method(_freeze, False, 3e-4),
}


def prepare(model: nn.Module, cfg: MethodConfig) -> Prepared:
    """Make ``model`` ready for ``cfg.method`` in place and return what the optimizer should train."""
    return METHODS[cfg.method].prepare(model, cfg)
