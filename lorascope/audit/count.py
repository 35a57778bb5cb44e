"""LoRA parameter counts from module shapes (docs/METRICS.md 'Parameter counts'), and the adapter file they make.

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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from ..checkpoint.peft import pattern_key
from ..errors import LorascopeError
from .layout import ModelShapes, ModuleShape, ParamShape
from .targets import TargetMatch, TargetSpec, match_targets, type_of

BIAS_MODES = ("none", "all", "lora_only")
# safetensors dtype tags and bytes per element, by the names --dtype accepts
DTYPES: dict[str, tuple[str, int]] = {
    "fp32": ("F32", 4), "float32": ("F32", 4), "fp16": ("F16", 2), "float16": ("F16", 2),
    "bf16": ("BF16", 2), "bfloat16": ("BF16", 2), "fp8": ("F8_E4M3", 1), "float8": ("F8_E4M3", 1),
}
PEFT_PREFIX = "base_model.model."
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


def lora_params(module: ModuleShape, r: int) -> int:
    """r·(out + in): A (r, in) plus B (out, r); for an embedding r·(num_embeddings + dim)."""
    out, inn = module.shape
    return r * (out + inn)


def magnitude_params(module: ModuleShape) -> int:
    """DoRA's magnitude vector: one value per output feature (per embedding dimension for embeddings)."""
    return module.shape[1] if module.kind == "embedding" else module.shape[0]


@dataclass(frozen=True)
class LoraCount:
    """Exact trainable parameters of one LoRA configuration on one model."""

    model: ModelShapes
    settings: LoraSettings
    match: TargetMatch
    table: pd.DataFrame  # one row per LoRA module
    lora: int  # A and B factors
    magnitude: int  # DoRA magnitude vectors
    bias: int  # trained biases
    saved: int  # modules_to_save: full copies trained
    saved_modules: tuple[str, ...] = ()
    tying: Tying | None = None  # what PEFT made of tied weights in this configuration

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
        """'all params' as PEFT's print_trainable_parameters counts them: the model plus the adapter and copies."""
        return self.total + self.lora + self.magnitude + self.saved

    @property
    def peft_percent(self) -> float:
        return 100.0 * self.trainable / self.peft_total

    def by_type(self) -> pd.DataFrame:
        """Per module type: count, shape, rank and parameters (rows in model order)."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["module_type", "modules", "rows", "cols", "r", "params"])
        g = t.groupby("module_type", sort=False)
        out = g.agg(modules=("name", "size"), rows=("rows", "first"), cols=("cols", "first"),
                    r=("r", lambda s: s.iloc[0] if s.nunique() == 1 else f"{s.min()}–{s.max()}"),
                    params=("params", "sum")).reset_index()
        return out

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
    if not modules_to_save:
        return ()
    out = []
    for m in model.modules:
        parts = m.name.split(".")
        paths = [".".join(parts[: i + 1]) for i in range(len(parts))]
        if any(p.endswith(t) for p in paths for t in modules_to_save):
            out.append(m)
    return tuple(out)


def copy_params(m: ModuleShape) -> int:
    """Parameters of the full copy PEFT's ModulesToSaveWrapper trains of one module: all its own parameters
    and those it shares with another module (a tied weight, a shared bias): the copy is new, untied tensors.
    """
    return m.params + m.shared


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


def _tie_entry(entries: list[str], key: str) -> str | None:
    """The first entry PEFT removes for a tied module ``key`` (``re.match`` of ``(^|.*\\.){m}($|\\..*)``)."""
    return next((m for m in entries if re.match(rf"(^|.*\.){m}($|\..*)", key)), None)


def peft_tying(model: ModelShapes, settings: LoraSettings) -> Tying:
    """The configuration PEFT really applies on ``model``, given its weights tied to the input embedding."""
    mts = tuple(settings.modules_to_save)
    plain = Tying(mts, settings.targets)
    index = model.by_name()
    tied = [m for m in model.tied if m.tied_to in index and index[m.tied_to].kind == "embedding"]
    if not tied:
        return plain
    embedding = tied[0].tied_to
    keys = [m.name for m in tied]
    if not settings.ensure_weight_tying:
        untied = tuple(m.name for m in saved_modules(model, mts) if m.tied_to is not None)
        return Tying(mts, settings.targets, embedding=embedding, untied_copies=untied)
    if any(m.split(".")[-1] in TIE_NAMES for m in mts):
        entries = list(mts) + ([embedding] if embedding not in mts else [])
        for key in keys:
            hit = _tie_entry(entries, key)
            if hit is not None:
                entries.remove(hit)
        return Tying(tuple(entries), settings.targets, shared_copy=tuple(keys), embedding=embedding)
    spec = settings.targets
    if spec.regex is not None:
        in_targets = any(re.fullmatch(spec.regex, n) for n in TIE_NAMES)
    else:
        in_targets = any(t.split(".")[-1] in TIE_NAMES for t in spec.names)
    if not in_targets:
        return plain
    if spec.regex is not None:
        targets = TargetSpec(regex=rf"(?:{spec.regex}|^{re.escape(embedding)}$)")
    else:
        names = list(dict.fromkeys([*spec.names, embedding]))
        for key in keys:
            hit = _tie_entry(names, key)
            if hit is not None:
                names.remove(hit)
        targets = TargetSpec(names=tuple(names))
    return Tying(mts, targets, tied_lora=tuple(keys), embedding=embedding)


def tying_notes(model: ModelShapes, tying: Tying) -> list[str]:
    """What a user should know about tied weights in this configuration, one sentence each."""
    index = model.by_name()
    notes = []
    for name in tying.untied_copies:
        m = index[name]
        notes.append(f"{name} shares its weight with {m.tied_to} (tie_word_embeddings), but modules_to_save "
                     f"trains a separate copy of it: {copy_params(m):,} parameters of its own, and the tie "
                     "is broken in the adapter. Set ensure_weight_tying=True (PEFT LoraConfig) to train one "
                     "copy shared by both.")
    if tying.shared_copy:
        notes.append(f"ensure_weight_tying: PEFT trains one copy of {tying.embedding} (modules_to_save "
                     f"becomes {list(tying.modules_to_save)}) and {', '.join(tying.shared_copy)} shares it.")
    if tying.tied_lora:
        notes.append(f"ensure_weight_tying: LoRA goes on {tying.embedding} and {', '.join(tying.tied_lora)} "
                     "gets its factors transposed; they share storage, but PEFT's "
                     "get_nb_trainable_parameters counts them twice, and so does this count.")
    return notes


def peft_match(model: ModelShapes, settings: LoraSettings, tying: Tying | None = None) -> TargetMatch:
    """The modules PEFT puts LoRA on, after its rewrite of tied configurations (tied modules not included)."""
    tying = tying or peft_tying(model, settings)
    return match_targets(model, tying.targets, settings.layers, tying.modules_to_save)


def count_lora(model: ModelShapes, settings: LoraSettings, match: TargetMatch | None = None) -> LoraCount:
    """Exact LoRA parameters of ``settings`` on ``model``.

    Args:
        model: the model's modules.
        settings: rank, targets, layers, rank_pattern, DoRA, bias, modules_to_save.
        match: the target match, when already computed (it is recomputed otherwise).

    Returns:
        The count, with one table row per LoRA module.
    """
    tying = peft_tying(model, settings)
    match = match or peft_match(model, settings, tying)
    rows = list(_module_rows(model, settings, match, tying))
    table = pd.DataFrame(rows, columns=["name", "layer", "module_type", "kind", "rows", "cols", "r", "lora",
                                        "magnitude", "bias", "params"])
    lora, mag, bias, saved, names = _sums(model, settings, rows, tying)
    return LoraCount(model, settings, match, table, lora, mag, bias, saved, names, tying)


def trainable_params(model: ModelShapes, settings: LoraSettings, match: TargetMatch | None = None) -> int:
    """The trainable total of ``count_lora`` without building its table (for many recomputations)."""
    tying = peft_tying(model, settings)
    match = match or peft_match(model, settings, tying)
    return sum(_sums(model, settings, list(_module_rows(model, settings, match, tying)), tying)[:4])


def _module_rows(model: ModelShapes, settings: LoraSettings, match: TargetMatch, tying: Tying):
    index = model.by_name()
    tied = set(tying.tied_lora)
    for name in match.modules:
        if name in tied:
            continue  # below, with the embedding's rank
        m = index[name]
        r = settings.rank_for(name)
        lora = lora_params(m, r)
        mag = magnitude_params(m) if settings.dora else 0
        bias = m.bias if settings.bias == "lora_only" else 0
        yield (name, _layer(name), type_of(name), m.kind, m.shape[0], m.shape[1], r, lora, mag, bias, lora + mag + bias)
    if tying.tied_lora and tying.embedding in match.modules:
        r = settings.rank_for(tying.embedding)  # the tied module holds the embedding's factors, transposed
        for name in tying.tied_lora:
            m = index[name]
            lora = lora_params(m, r)
            yield (name, _layer(name), type_of(name), m.kind, m.shape[0], m.shape[1], r, lora, 0, 0, lora)
    if match.parameters and settings.dora:
        raise LorascopeError(f"DoRA cannot be combined with targets that reach fused parameters ({match.parameters[0]} …): "
                             "PEFT's lora.ParamWrapper does not work with use_dora=True.")
    params = {p.name: p for p in model.parameters}
    for name in match.parameters:
        p = params[name]
        r = param_rank(settings, match, name)
        lora = param_lora_params(p, r)
        yield (name, _layer(name), type_of(name), "param", p.shape[-2], p.shape[-1], r, lora, 0, 0, lora)


def param_rank(settings: LoraSettings, match: TargetMatch, name: str) -> int:
    """r of a target parameter: a rank_pattern key first, then PEFT's r·len(group) for a fused group, else r."""
    if settings.rank_pattern and pattern_key(dict(settings.rank_pattern), name) is not None:
        return settings.rank_for(name)
    return settings.rank * match.rank_factor.get(name.rsplit(".", 1)[-1], 1)


def param_lora_params(p: ParamShape, r: int) -> int:
    """lora.ParamWrapper on a (E, out, in) parameter: A (r·E, in) and B (out, r·E) — one LoRA of rank r·E over
    all experts; on a 2-D parameter r·(out + in)."""
    return r * p.experts * (p.shape[-2] + p.shape[-1])


def _sums(model: ModelShapes, settings: LoraSettings, rows: list[tuple],
          tying: Tying) -> tuple[int, int, int, int, tuple[str, ...]]:
    lora = sum(row[7] for row in rows)
    mag = sum(row[8] for row in rows)
    bias = sum(row[9] for row in rows)
    if settings.bias == "all":
        bias = sum(m.bias for m in model.modules)
    saved = [m for m in saved_modules(model, tying.modules_to_save) if m.name not in tying.shared_copy]
    return lora, mag, bias, sum(copy_params(m) for m in saved), tuple(m.name for m in saved)


def _layer(name: str) -> int | None:
    from ..names import split_name

    return split_name(name)[0]


def adapter_tensors(count: LoraCount) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors PEFT's save_pretrained writes for this configuration: (key, shape), keys as PEFT names them."""
    index = count.model.by_name()
    out: list[tuple[str, tuple[int, ...]]] = []
    for row in count.table.itertuples():
        key = PEFT_PREFIX + row.name
        if row.kind == "param":  # approximate: ParamWrapper's factors as two matrices of rank r·E
            experts = row.lora // (row.r * (row.rows + row.cols))
            out += [(f"{key}.lora_A.weight", (row.r * experts, row.cols)), (f"{key}.lora_B.weight", (row.rows, row.r * experts))]
            continue
        m = index[row.name]
        if m.kind == "embedding":
            out += [(f"{key}.lora_embedding_A", (row.r, m.shape[0])), (f"{key}.lora_embedding_B", (m.shape[1], row.r))]
        else:
            out += [(f"{key}.lora_A.weight", (row.r, m.shape[1])), (f"{key}.lora_B.weight", (m.shape[0], row.r))]
        if row.magnitude:
            out.append((f"{key}.lora_magnitude_vector", (row.magnitude,)))
        if row.bias:
            out.append((f"{key}.bias", (row.bias,)))
    for m in count.model.modules:
        if count.settings.bias == "all" and m.bias:
            out.append((f"{PEFT_PREFIX}{m.name}.bias", (m.bias,)))
    for name in count.saved_modules:
        m = index[name]
        if copy_params(m) - m.bias:
            out.append((f"{PEFT_PREFIX}{name}.weight", m.shape))
        if m.bias:
            out.append((f"{PEFT_PREFIX}{name}.bias", (m.bias,)))
    seen: set[str] = set()
    return [t for t in out if not (t[0] in seen or seen.add(t[0]))]


def safetensors_size(tensors: list[tuple[str, tuple[int, ...]]], dtype: str, metadata: dict | None = None) -> int:
    """Exact bytes of a safetensors file holding ``tensors`` in ``dtype``.

    The file is an 8-byte header length, a compact JSON header padded with spaces to a multiple of 8, then
    the data; tensors are laid out in name order (one dtype), as safetensors' serializer does.
    """
    tag, itemsize = DTYPES[dtype]
    header: dict = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    for key, shape in sorted(tensors):
        n = 1
        for d in shape:
            n *= d
        header[key] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n * itemsize]}
        offset += n * itemsize
    text = json.dumps(header, separators=(",", ":"))
    length = len(text.encode())
    length += (-length) % 8
    return 8 + length + offset


def adapter_file_size(count: LoraCount, dtype: str) -> int:
    """Bytes of ``adapter_model.safetensors`` for this configuration saved in ``dtype``."""
    return safetensors_size(adapter_tensors(count), dtype)
