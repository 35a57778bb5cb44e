"""Owns exact trainable-parameter counts of a LoRA configuration on a model (METRICS.md 'Parameter counts').

A LoRA module on an (out, in) weight adds r·(in + out) parameters: A is (r, in), B is (out, r). DoRA adds a
magnitude vector of ``out`` (``embedding_dim`` for embeddings); an embedding adds r·(num_embeddings + dim).
Conv1D (GPT-2) and fused layers (phi3 qkv_proj, GPT-2 c_attn) count as stored.

Tied weights count as PEFT 0.21 counts them (``PeftModel.get_nb_trainable_parameters``): ``modules_to_save``
trains a full copy of every module it reaches, tied weight included — an output head tied to the input
embeddings gets a copy of its own, untied. With ``ensure_weight_tying`` PEFT rewrites the configuration
first (``BaseTuner._check_tied_modules``): a tied module in ``modules_to_save`` is replaced by the input
embedding, whose one copy the tied modules then share; an embedding or tied head among the LoRA targets puts
LoRA on the embedding, and each tied module gets the embedding's factors transposed — separate parameters
sharing storage, which PEFT counts twice. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import pandas as pd

from ..checkpoint.peft_config import pattern_key, pattern_problems
from ..errors import LorascopeError
from .shapes import ModelShapes, ModuleShape, layer_of, type_of
from .targets import TargetMatch, TargetSpec, match_targets, names_component

BIAS_MODES = ("none", "all", "lora_only")
TIE_NAMES = ("embed_tokens", "lm_head")  # PEFT's EMBEDDING_LAYER_NAMES: what ensure_weight_tying acts on
FLAGS = ("dora", "allow_unmatched", "ensure_weight_tying")


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA configuration as counted; fields follow PEFT's LoraConfig."""

    rank: int = 16
    alpha: float = 32  # does not change counts; checked by the 'alpha read as rank' explanation
    targets: TargetSpec = field(default_factory=TargetSpec)  # empty: PEFT's default for the architecture
    layers: tuple[int, ...] | None = None  # layers_to_transform
    rank_pattern: Mapping[str, int] = field(default_factory=dict)  # PEFT rank_pattern: name regex -> r
    dora: bool = False
    bias: str = "none"  # none | all | lora_only: which biases train alongside LoRA
    modules_to_save: tuple[str, ...] = ()  # modules trained in full and saved with the adapter
    allow_unmatched: bool = False  # count the targets that match, as PEFT does, when some match nothing
    ensure_weight_tying: bool = False  # PEFT's LoraConfig.ensure_weight_tying: tied modules share one copy
    layers_pattern: Sequence[str] | str | None = None  # where PEFT reads the layer index of a name

    def __post_init__(self) -> None:
        if problems := self.problems(self.__dict__):
            raise ValueError("; ".join(problems))

    @staticmethod
    def problems(f: Mapping[str, Any]) -> list[str]:
        """Every invalid field among ``f`` (LoraSettings field -> value), one sentence each."""
        out, rank = [], f.get("rank", 16)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            out.append(f"rank must be a positive integer, got {rank!r}")
        alpha = f.get("alpha", 32)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            out.append(f"alpha must be a positive number, got {alpha!r}")
        if (bias := f.get("bias", "none")) not in BIAS_MODES:
            out.append(f"bias must be one of {BIAS_MODES}, got {bias!r}")
        if (layers := f.get("layers")) is not None and (not layers or any(i < 0 for i in layers)):
            out.append(f"layers must be a non-empty list of layer indices ≥ 0, got {layers!r}")
        out += pattern_problems({"rank_pattern": f.get("rank_pattern")}, {"rank_pattern": True})  # as PEFT's
        saved = f.get("modules_to_save", ())
        if not isinstance(saved, (list, tuple)) or not all(isinstance(m, str) for m in saved):
            out.append(f"modules_to_save must be a module name or a list of names, found {saved!r}")
        return out + [
            f"{k} must be true or false, found {f[k]!r}"
            for k in FLAGS
            if not isinstance(f.get(k, False), bool)
        ]

    def rank_for(self, name: str) -> int:
        """r of one module: the first rank_pattern key matching it (as PEFT's get_pattern_key), else rank."""
        key = pattern_key(dict(self.rank_pattern), name) if self.rank_pattern else None
        return int(self.rank_pattern[key]) if key is not None else self.rank


class Row(NamedTuple):
    """One LoRA module of a count (a target parameter has kind 'param')."""

    name: str
    layer: int | None
    module_type: str
    kind: str
    rows: int
    cols: int
    r: int
    lora: int  # A and B factors
    magnitude: int  # DoRA magnitude vector
    bias: int  # its bias, trained with bias="lora_only"
    params: int


@dataclass(frozen=True)
class Tying:
    """What PEFT makes of a configuration on a model with weights tied to the input embedding
    (``BaseTuner._check_tied_modules``, ``LoraModel._add_modules_to_save_to_tie``, ``_add_targets_to_tie``).
    """

    modules_to_save: tuple[str, ...]  # as PEFT rewrites them
    targets: TargetSpec  # as PEFT rewrites them
    shared_copy: tuple[str, ...] = ()  # tied modules sharing the embedding's modules_to_save copy
    tied_lora: tuple[str, ...] = ()  # tied modules whose LoRA factors are the embedding's, transposed
    embedding: str | None = None  # the input embedding the tied modules share a weight with
    untied_copies: tuple[str, ...] = ()  # tied modules modules_to_save copies on their own (ties broken)


@dataclass(frozen=True)
class LoraCount:
    """Exact trainable parameters of one LoRA configuration on one model."""

    model: ModelShapes
    settings: LoraSettings
    match: TargetMatch  # the modules PEFT puts LoRA on, after its rewrite of tied configurations
    rows: tuple[Row, ...]  # one per LoRA module
    bias: int  # trained biases
    saved: int  # modules_to_save: full copies trained
    saved_modules: tuple[str, ...]
    tying: Tying  # what PEFT made of tied weights in this configuration

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per LoRA module (the ``Row`` fields as columns)."""
        return pd.DataFrame(self.rows, columns=list(Row._fields))

    lora = property(lambda self: sum(row.lora for row in self.rows))
    magnitude = property(lambda self: sum(row.magnitude for row in self.rows))
    trainable = property(lambda self: self.lora + self.magnitude + self.bias + self.saved)
    total = property(lambda self: self.model.total, doc="Parameters of the model itself, tied weights once.")
    percent = property(
        lambda self: 100.0 * self.trainable / self.total, doc="Trainable share of the model, %."
    )
    # 'all params' as PEFT's print_trainable_parameters counts them: model, adapter and copies
    peft_total = property(lambda self: self.total + self.lora + self.magnitude + self.saved)
    peft_percent = property(lambda self: 100.0 * self.trainable / self.peft_total)

    def by_type(self) -> pd.DataFrame:
        """Per module type: count, shape, rank and parameters (rows in model order)."""
        ranks = lambda s: s.iloc[0] if s.nunique() == 1 else f"{s.min()}–{s.max()}"  # noqa: E731
        agg = dict(modules=("name", "size"), rows=("rows", "first"), cols=("cols", "first"), r=("r", ranks),
                   params=("params", "sum"))  # fmt: skip
        if self.table.empty:
            return pd.DataFrame(columns=["module_type", *agg])
        return self.table.groupby("module_type", sort=False).agg(**agg).reset_index()

    def by_layer(self) -> pd.DataFrame:
        """Per layer (None for modules outside the layer stack)."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["layer", "modules", "params"])
        g = t.groupby(t["layer"].astype("Int64"), sort=True, dropna=False)
        return g.agg(modules=("name", "size"), params=("params", "sum")).reset_index()


def saved_modules(model: ModelShapes, modules_to_save: Sequence[str]) -> tuple[ModuleShape, ...]:
    """Modules PEFT trains in full for ``modules_to_save``: those with a path that ends with a listed name.

    PEFT tests ``key.endswith(name)`` on every module path — a plain string suffix, so ``classifier`` also
    reaches ``pre_classifier``.
    """
    ends = lambda name: any(name.endswith(t) for t in modules_to_save)  # noqa: E731
    return tuple(
        m for m in model.modules if any(ends(m.name.rsplit(".", i)[0]) for i in range(m.name.count(".") + 1))
    )


def copy_params(m: ModuleShape) -> int:
    """Parameters of the full copy PEFT's ModulesToSaveWrapper trains of one module: all its own parameters
    and those it shares with another module (a tied weight, a shared bias): the copy is new, untied tensors.
    """
    return m.params + m.shared


def peft_tying(model: ModelShapes, settings: LoraSettings) -> Tying:
    """The configuration PEFT really applies on ``model``, given its weights tied to the input embedding."""
    mts, spec, index = tuple(settings.modules_to_save), settings.targets, model.by_name()
    tied = [m.name for m in model.tied if m.tied_to in index and index[m.tied_to].kind == "embedding"]
    if not tied:
        return Tying(mts, spec)
    embedding = index[tied[0]].tied_to
    if not settings.ensure_weight_tying:
        untied = tuple(m.name for m in saved_modules(model, mts) if m.tied_to is not None)
        return Tying(mts, spec, embedding=embedding, untied_copies=untied)
    if any(m.split(".")[-1] in TIE_NAMES for m in mts):
        entries = _without_tied([*mts, *([embedding] if embedding not in mts else [])], tied)
        return Tying(tuple(entries), spec, shared_copy=tuple(tied), embedding=embedding)
    if spec.regex is not None and any(re.fullmatch(spec.regex, n) for n in TIE_NAMES):
        targets = TargetSpec(regex=rf"(?:{spec.regex}|^{re.escape(embedding)}$)")
    elif spec.regex is None and any(t.split(".")[-1] in TIE_NAMES for t in spec.names):
        targets = TargetSpec(names=tuple(_without_tied(list(dict.fromkeys([*spec.names, embedding])), tied)))
    else:
        return Tying(mts, spec)
    return Tying(mts, targets, tied_lora=tuple(tied), embedding=embedding)


def _without_tied(entries: list[str], tied: list[str]) -> list[str]:
    """``entries`` less, for each tied module, the first entry PEFT removes for it."""
    for key in tied:
        if (hit := next((e for e in entries if names_component(e, key)), None)) is not None:
            entries.remove(hit)
    return entries


def tying_notes(model: ModelShapes, tying: Tying) -> list[str]:
    """What a user should know about tied weights in this configuration, one sentence each."""
    index = model.by_name()
    notes = [
        f"{name} shares its weight with {index[name].tied_to} (tie_word_embeddings), but modules_to_save "
        f"trains a separate copy of it: {copy_params(index[name]):,} parameters of its own, and the tie is "
        "broken in the adapter. Set ensure_weight_tying=True (PEFT LoraConfig) to train one copy shared by "
        "both."
        for name in tying.untied_copies
    ]
    if tying.shared_copy:
        notes.append(
            f"ensure_weight_tying: PEFT trains one copy of {tying.embedding} (modules_to_save becomes "
            f"{list(tying.modules_to_save)}) and {', '.join(tying.shared_copy)} shares it."
        )
    if tying.tied_lora:
        notes.append(
            f"ensure_weight_tying: LoRA goes on {tying.embedding} and {', '.join(tying.tied_lora)} gets its "
            "factors transposed; they share storage, but PEFT's get_nb_trainable_parameters counts them "
            "twice, and so does this count."
        )
    return notes


def count_lora(model: ModelShapes, settings: LoraSettings) -> LoraCount:
    """Exact LoRA parameters of ``settings`` on ``model``: the modules PEFT puts LoRA on (``match_targets``
    on the configuration PEFT applies, ``peft_tying``), one row each.

    Raises:
        LorascopeError: DoRA with targets that reach fused parameters (PEFT refuses it); a MoE target PEFT
            refuses (``match_targets``).
    """
    s, tying, index = settings, peft_tying(model, settings), model.by_name()
    match = match_targets(model, tying.targets, s.layers, tying.modules_to_save, s.layers_pattern)
    if match.parameters and s.dora:
        raise LorascopeError(
            f"DoRA cannot be combined with targets that reach fused parameters ({match.parameters[0]} …): "
            "PEFT's lora.ParamWrapper does not work with use_dora=True."
        )

    def row(name: str, shape: tuple[int, ...], kind: str, r: int, lora: int, mag: int = 0, bias: int = 0):
        out, inn = shape[-2:]
        return Row(name, layer_of(name), type_of(name), kind, out, inn, r, lora, mag, bias, lora + mag + bias)

    rows = []
    for m in (index[n] for n in match.modules if n not in tying.tied_lora):
        r = s.rank_for(m.name)
        magnitude = (m.shape[1] if m.kind == "embedding" else m.shape[0]) if s.dora else 0
        rows.append(
            row(m.name, m.shape, m.kind, r, r * sum(m.shape), magnitude, m.bias * (s.bias == "lora_only"))
        )
    if tying.tied_lora and tying.embedding in match.modules:
        r = s.rank_for(tying.embedding)  # the tied module holds the embedding's factors, transposed
        rows += [row(n, index[n].shape, index[n].kind, r, r * sum(index[n].shape)) for n in tying.tied_lora]
    for p in (p for p in model.parameters if p.name in match.parameters):
        # lora.ParamWrapper on (E, out, in): A (r·E, in), B (out, r·E): one LoRA of rank r·E over all experts
        if s.rank_pattern and pattern_key(dict(s.rank_pattern), p.name) is not None:
            r = s.rank_for(p.name)
        else:  # PEFT's r·len(group) for a fused group
            r = s.rank * match.rank_factor.get(p.name.rsplit(".", 1)[-1], 1)
        rows.append(row(p.name, p.shape, "param", r, r * p.experts * (p.shape[-2] + p.shape[-1])))
    bias = sum(m.bias for m in model.modules) if s.bias == "all" else sum(row.bias for row in rows)
    saved = [m for m in saved_modules(model, tying.modules_to_save) if m.name not in tying.shared_copy]
    return LoraCount(model, s, match, tuple(rows), bias, sum(map(copy_params, saved)),
                     tuple(m.name for m in saved), tying)  # fmt: skip
