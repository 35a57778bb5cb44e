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
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import pandas as pd

from ..checkpoint.peft import pattern_key
from ..errors import LorascopeError
from .shapes import ModelShapes, ModuleShape, ParamShape, layer_of, type_of
from .targets import TargetMatch, TargetSpec, match_targets, names_component

BIAS_MODES = ("none", "all", "lora_only")
# PEFT's EMBEDDING_LAYER_NAMES: the last name components that make ensure_weight_tying act on a config
TIE_NAMES = ("embed_tokens", "lm_head")


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

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        if self.bias not in BIAS_MODES:
            raise ValueError(f"bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.layers is not None and (not self.layers or any(i < 0 for i in self.layers)):
            raise ValueError(f"layers must be a non-empty list of layer indices ≥ 0, got {self.layers!r}")
        for key, r in self.rank_pattern.items():
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f"rank_pattern[{key!r}] must be a positive integer rank, got {r!r}")

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
    match: TargetMatch
    rows: tuple[Row, ...]  # one per LoRA module
    bias: int  # trained biases
    saved: int  # modules_to_save: full copies trained
    saved_modules: tuple[str, ...] = ()
    tying: Tying | None = None  # what PEFT made of tied weights in this configuration

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per LoRA module (the ``Row`` fields as columns)."""
        return pd.DataFrame(self.rows, columns=list(Row._fields))

    @property
    def lora(self) -> int:
        return sum(row.lora for row in self.rows)

    @property
    def magnitude(self) -> int:
        return sum(row.magnitude for row in self.rows)

    @property
    def trainable(self) -> int:
        return self.lora + self.magnitude + self.bias + self.saved

    @property
    def total(self) -> int:
        """Parameters of the model itself, tied weights once."""
        return self.model.total

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of the model's parameters."""
        return 100.0 * self.trainable / self.total

    @property
    def peft_total(self) -> int:
        """'all params' as PEFT's print_trainable_parameters counts them: model, adapter and copies."""
        return self.total + self.lora + self.magnitude + self.saved

    @property
    def peft_percent(self) -> float:
        return 100.0 * self.trainable / self.peft_total

    def by_type(self) -> pd.DataFrame:
        """Per module type: count, shape, rank and parameters (rows in model order)."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["module_type", "modules", "rows", "cols", "r", "params"])
        ranks = lambda s: s.iloc[0] if s.nunique() == 1 else f"{s.min()}–{s.max()}"  # noqa: E731
        return (
            t.groupby("module_type", sort=False)
            .agg(
                modules=("name", "size"),
                rows=("rows", "first"),
                cols=("cols", "first"),
                r=("r", ranks),
                params=("params", "sum"),
            )
            .reset_index()
        )

    def by_layer(self) -> pd.DataFrame:
        """Per layer (None for modules outside the layer stack)."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["layer", "modules", "params"])
        g = t.groupby(t["layer"].astype("Int64"), sort=True, dropna=False)
        return g.agg(modules=("name", "size"), params=("params", "sum")).reset_index()


def saved_modules(model: ModelShapes, modules_to_save: tuple[str, ...]) -> tuple[ModuleShape, ...]:
    """Modules PEFT trains in full for ``modules_to_save``: those with a path that ends with a listed name.

    PEFT tests ``key.endswith(name)`` on every module path — a plain string suffix, so ``classifier`` also
    reaches ``pre_classifier``.
    """
    out = []
    for m in model.modules if modules_to_save else ():
        parts = m.name.split(".")
        if any(".".join(parts[: i + 1]).endswith(t) for i in range(len(parts)) for t in modules_to_save):
            out.append(m)
    return tuple(out)


def copy_params(m: ModuleShape) -> int:
    """Parameters of the full copy PEFT's ModulesToSaveWrapper trains of one module: all its own parameters
    and those it shares with another module (a tied weight, a shared bias): the copy is new, untied tensors.
    """
    return m.params + m.shared


def peft_tying(model: ModelShapes, settings: LoraSettings) -> Tying:
    """The configuration PEFT really applies on ``model``, given its weights tied to the input embedding."""
    mts, spec = tuple(settings.modules_to_save), settings.targets
    index = model.by_name()
    tied = [m for m in model.tied if m.tied_to in index and index[m.tied_to].kind == "embedding"]
    if not tied:
        return Tying(mts, spec)
    embedding, keys = tied[0].tied_to, [m.name for m in tied]
    if not settings.ensure_weight_tying:
        untied = tuple(m.name for m in saved_modules(model, mts) if m.tied_to is not None)
        return Tying(mts, spec, embedding=embedding, untied_copies=untied)
    if any(m.split(".")[-1] in TIE_NAMES for m in mts):
        entries = _without_tied([*mts, *([embedding] if embedding not in mts else [])], keys)
        return Tying(tuple(entries), spec, shared_copy=tuple(keys), embedding=embedding)
    if spec.regex is not None:
        if not any(re.fullmatch(spec.regex, n) for n in TIE_NAMES):
            return Tying(mts, spec)
        targets = TargetSpec(regex=rf"(?:{spec.regex}|^{re.escape(embedding)}$)")
    elif any(t.split(".")[-1] in TIE_NAMES for t in spec.names):
        targets = TargetSpec(names=tuple(_without_tied(list(dict.fromkeys([*spec.names, embedding])), keys)))
    else:
        return Tying(mts, spec)
    return Tying(mts, targets, tied_lora=tuple(keys), embedding=embedding)


def _without_tied(entries: list[str], tied: list[str]) -> list[str]:
    """``entries`` less, for each tied module, the first entry PEFT removes for it."""
    for key in tied:
        hit = next((e for e in entries if names_component(e, key)), None)
        if hit is not None:
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


def peft_match(
    model: ModelShapes,
    settings: LoraSettings,
    tying: Tying | None = None,
    layers_pattern: str | list | None = None,
) -> TargetMatch:
    """The modules PEFT puts LoRA on, after its rewrite of tied configurations (tied modules not included)."""
    tying = tying or peft_tying(model, settings)
    return match_targets(model, tying.targets, settings.layers, tying.modules_to_save, layers_pattern)


def count_lora(model: ModelShapes, settings: LoraSettings, match: TargetMatch | None = None) -> LoraCount:
    """Exact LoRA parameters of ``settings`` on ``model``.

    Args:
        model: the model's modules.
        settings: rank, targets, layers, rank_pattern, DoRA, bias, modules_to_save.
        match: the target match, when already computed (it is recomputed otherwise).

    Returns:
        The count, with one row per LoRA module.

    Raises:
        LorascopeError: DoRA with targets that reach fused parameters (PEFT refuses it); a MoE target PEFT
            refuses (``match_targets``).
    """
    tying = peft_tying(model, settings)
    match = match or peft_match(model, settings, tying)
    rows = tuple(_module_rows(model, settings, match, tying))
    bias = sum(m.bias for m in model.modules) if settings.bias == "all" else sum(row.bias for row in rows)
    saved = [m for m in saved_modules(model, tying.modules_to_save) if m.name not in tying.shared_copy]
    return LoraCount(
        model, settings, match, rows, bias, sum(map(copy_params, saved)), tuple(m.name for m in saved), tying
    )


def _module_rows(model: ModelShapes, settings: LoraSettings, match: TargetMatch, tying: Tying):
    index = model.by_name()

    def row(name: str, m: ModuleShape | ParamShape, kind: str, r: int, lora: int, mag: int = 0, bias=0):
        out, inn = m.shape[-2:]
        return Row(name, layer_of(name), type_of(name), kind, out, inn, r, lora, mag, bias, lora + mag + bias)

    for name in match.modules:
        if name in tying.tied_lora:
            continue  # below, with the embedding's rank
        m, r = index[name], settings.rank_for(name)
        magnitude = (m.shape[1] if m.kind == "embedding" else m.shape[0]) if settings.dora else 0
        bias = m.bias if settings.bias == "lora_only" else 0
        yield row(name, m, m.kind, r, r * sum(m.shape), magnitude, bias)
    if tying.tied_lora and tying.embedding in match.modules:
        r = settings.rank_for(tying.embedding)  # the tied module holds the embedding's factors, transposed
        for name in tying.tied_lora:
            yield row(name, index[name], index[name].kind, r, r * sum(index[name].shape))
    if match.parameters and settings.dora:
        raise LorascopeError(
            f"DoRA cannot be combined with targets that reach fused parameters ({match.parameters[0]} …): "
            "PEFT's lora.ParamWrapper does not work with use_dora=True."
        )
    params = {p.name: p for p in model.parameters}
    for name in match.parameters:
        p, r = params[name], param_rank(settings, match, name)
        # lora.ParamWrapper on (E, out, in): A (r·E, in), B (out, r·E): one LoRA of rank r·E over all experts
        yield row(name, p, "param", r, r * p.experts * (p.shape[-2] + p.shape[-1]))


def param_rank(settings: LoraSettings, match: TargetMatch, name: str) -> int:
    """r of a target parameter: a rank_pattern key, else PEFT's r·len(group) for a fused group, else r."""
    if settings.rank_pattern and pattern_key(dict(settings.rank_pattern), name) is not None:
        return settings.rank_for(name)
    return settings.rank * match.rank_factor.get(name.rsplit(".", 1)[-1], 1)
