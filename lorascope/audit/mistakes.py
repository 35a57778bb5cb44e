"""Owns the common counting mistakes: each one a recomputation of the count as a person making it would do it.

A ``Scenario`` is a way of counting (model shapes, LoRA settings, the model size and percent scale the counter
used); each mistake in ``MISTAKES`` turns one scenario into the scenarios that mistake produces. Only
``claims.explain_figure`` runs them, to explain a claimed figure that is wrong. Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from .count import LoraCount, LoraSettings, count_lora
from .numbers import both
from .shapes import ATTENTION_ROLES, LORA_KINDS, MLP_ROLES, ModelShapes, ModuleShape, layer_of, relayer
from .shapes import type_of
from .targets import PRESET_WORDS, TargetSpec, match_targets

# Layer counts of published model families (1 to 126 layers): a claim made for a sibling model's depth.
# Counts are not solved for, since nearly any claim is then some layer count.
COMMON_LAYER_COUNTS = (1, 2, 4, 6, 8, 12, 16, 18, 22, 24, 26, 28, 32, 36, 40, 42, 46, 48, 60, 62, 64, 80,
                       88, 94, 96, 126)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """A way of counting: model shapes, LoRA settings, and the model size and percent scale a counter used."""

    model: ModelShapes
    settings: LoraSettings
    total: int | None = None  # the model size the counter used, when not the counted model's own
    percent_scale: float = 1.0
    n_layers: int | None = None  # the layer stack taken as this many copies of the first layer
    strict: bool = False  # one of many similar candidates: it must fit a claim within PAIR_TOLERANCE
    lora: int | None = None  # a LoRA count the counter arrived at without LoRA shapes (full matrices)
    steps: tuple[str, ...] = ()  # what was done differently, in words
    keys: tuple[str, ...] = ()  # MISTAKES keys applied

    def then(self, key: str, step: str, **changes) -> Scenario:
        return replace(self, steps=(*self.steps, step), keys=(*self.keys, key), **changes)

    def at_depth(self, measure: Callable[[ModelShapes], int]) -> int:
        """``measure`` of the model at the scenario's layer count: counts are linear in the number of
        identical layers, so a changed depth is extrapolated from one- and two-layer copies of the model."""
        if self.n_layers is None:
            return measure(self.model)
        one, two = measure(relayer(self.model, 1)), measure(relayer(self.model, 2))
        return one + (self.n_layers - 1) * (two - one)

    def model_total(self) -> int:
        """The model size the counter used (kept when a later mistake changes only the LoRA count)."""
        return self.total if self.total is not None else self.at_depth(lambda m: m.total)

    def figure(self, figure: str) -> float:
        """The claimed figure ('lora', 'percent' or 'total') this way of counting produces."""
        lora = self.lora
        if lora is None:
            lora = self.at_depth(lambda m: count_lora(m, self.settings).trainable)
        total = self.model_total()
        return {"lora": lora, "total": total, "percent": 100.0 * lora / total * self.percent_scale}[figure]


# A mistake turns a scenario into those it produces, given the exact count and the figure being explained.
Vary = Callable[[Scenario, LoraCount, str], Iterator[Scenario]]


def _reshaped(model: ModelShapes, shape_for: Callable[[ModuleShape], tuple[int, int] | None]):
    """The model with linear layers reshaped by ``shape_for`` (None: kept), or None when nothing changed."""
    out = [replace(m, shape=new) if m.kind in ("linear", "conv1d") and (new := shape_for(m)) else m
           for m in model.modules]  # fmt: skip
    return model.with_modules(out) if out != list(model.modules) else None


def _matched(s: Scenario, spec: TargetSpec | None = None, layers: object = ...):
    spec, layers = spec or s.settings.targets, s.settings.layers if layers is ... else layers
    return match_targets(s.model, spec, layers, s.settings.modules_to_save)


def _real_shapes(s: Scenario, roles: tuple[str, ...]) -> str:
    matched = set(_matched(s).modules)
    seen: dict[str, tuple[int, ...]] = {}
    for m in s.model.modules:
        if m.role in roles and m.name in matched:
            seen.setdefault(type_of(m.name), m.shape)
    return ", ".join(f"{t} is {a}×{b}" for t, (a, b) in seen.items())


def _changes_count(s: Scenario, model: ModelShapes | None) -> bool:
    trainable = lambda m: count_lora(m, s.settings).trainable  # noqa: E731
    return model is not None and trainable(model) != trainable(s.model)


def square_attention(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """k_proj/v_proj (and, second, every attention projection) taken as d×d."""
    h = s.model.hidden
    if not h:
        return
    fused = {"qkv": (3 * h, h)}
    kv = _reshaped(s.model, lambda m: (h, h) if m.role in ("k", "v") else fused.get(m.role))
    if _changes_count(s, kv):
        real = _real_shapes(s, ("k", "v", "qkv"))
        step = f"k/v projections taken as d×d = {h}×{h} (grouped-query attention ignored; really {real})"
        yield s.then("square_kv", step, model=kv, total=s.model_total())
    every = _reshaped(s.model, lambda m: (h, h) if m.role in ("q", "k", "v", "o") else fused.get(m.role))
    if every != kv and _changes_count(s, every):
        real = _real_shapes(s, ATTENTION_ROLES)
        step = f"every attention projection taken as d×d = {h}×{h} (really {real})"
        yield s.then("square_kv", step, model=every, total=s.model_total())


def square_mlp(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """MLP projections taken as d×d, or the MLP taken as 4·d wide."""
    h = s.model.hidden
    if not h:
        return
    for w, words in ((h, f"d×d = {h}×{h}"), (4 * h, f"4·d wide ({4 * h})")):
        wide = {"gate": (w, h), "up": (w, h), "down": (h, w), "gate_up": (2 * w, h)}
        alt = _reshaped(s.model, lambda m, wide=wide: wide.get(m.role or ""))
        if _changes_count(s, alt):
            step = f"MLP projections taken as {words} (really {_real_shapes(s, MLP_ROLES)})"
            yield s.then("square_mlp", step, model=alt, total=s.model_total())


def layer_count(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """A different number of layers: off by one or two, one layer, or a common layer count (strict)."""
    n_now = len(s.settings.layers) if s.settings.layers else s.model.num_layers
    if n_now == 0:
        return
    near = {n_now - 2, n_now - 1, n_now + 1, n_now + 2, 1}
    for n in sorted(c for c in {*COMMON_LAYER_COUNTS, *near} if c > 0 and c != n_now):
        strict = s.strict or n not in near
        if s.settings.layers:
            settings = replace(s.settings, layers=tuple(range(n)))
            step = f"{n} adapted layers counted instead of {n_now}"
            yield s.then("layers", step, settings=settings, strict=strict)
        else:
            step = f"{n} layer{'s' if n > 1 else ''} counted where the model has {n_now}"
            yield s.then("layers", step, n_layers=n, strict=strict)


def tied_embeddings(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """Tied input/output embeddings counted twice, or untied ones counted once."""
    total = s.model_total()
    tied = sum(m.weight_numel for m in s.model.tied)
    if tied:
        step = f"the tied embedding matrix counted twice (input and output, +{both(tied)})"
        yield s.then("tied", step, total=total + tied)
    untied = [m for m in s.model.modules if m.role == "head" and m.tied_to is None and m.kind == "linear"]
    if untied:
        n = untied[0].weight_numel
        step = f"the output head {untied[0].name} taken as tied to the input embeddings (−{both(n)}; "
        yield s.then("tied", step + "this model unties them)", total=total - n)


def alpha_as_rank(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    a, r = s.settings.alpha, s.settings.rank
    if float(a).is_integer() and int(a) != r and a >= 1:
        step = f"lora_alpha={int(a)} read as the rank (r={r})"
        yield s.then("alpha_as_rank", step, settings=replace(s.settings, rank=int(a)), total=s.model_total())


def rank_pattern_ignored(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    if s.settings.rank_pattern:
        step = f"rank_pattern ignored (every module at r={s.settings.rank})"
        settings = replace(s.settings, rank_pattern={})
        yield s.then("rank_pattern", step, settings=settings, total=s.model_total())


def _with_targets(s: Scenario, step: str, names: tuple[str, ...]) -> Scenario:
    settings = replace(s.settings, targets=TargetSpec(names=names), layers=None)
    return s.then("targets", step, settings=settings, total=s.model_total())


def other_targets(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """One matched module type left out (thinking 'c_proj' reaches attn.c_proj only), one more counted, the
    output head counted with all-linear, or a preset target set (attn, mlp, all-linear) taken instead."""
    match = _matched(s)
    if match.parameters:  # target_parameters cannot be listed by name: not varied
        return
    groups = match.groups()
    owners = {name: t for t, names in match.by_target.items() for name in names}
    for kind, names in groups.items() if len(groups) > 1 else ():
        target = owners.get(names[0])
        types = {type_of(n) for n in match.by_target.get(target, ())}
        also = f"; target {target!r} reaches it as well as {', '.join(sorted(types - {kind}))}"
        rest = tuple(n for n in match.modules if n not in names)
        step = f"{kind} ({len(names)} modules) not counted{also if len(types) > 1 else ''}"
        yield _with_targets(s, step, rest)
    have = set(match.modules)
    if s.model.output_head and s.model.output_head not in have:
        alt = _matched(s, TargetSpec(preset="all-linear"), None)
        step = f"all linear layers including the output head {s.model.output_head}"
        yield _with_targets(s, step, (*alt.modules, s.model.output_head))
    layers = set(s.settings.layers or ())
    extra: dict[str, list[str]] = {}
    for m in s.model.modules:
        if m.kind in LORA_KINDS and m.name not in have and (not layers or layer_of(m.name) in layers):
            extra.setdefault(type_of(m.name), []).append(m.name)
    for kind, names in extra.items():
        step = f"{kind} ({len(names)} modules) counted as a target too"
        yield _with_targets(s, step, (*match.modules, *names))
    for preset in PRESET_WORDS:
        try:
            alt = _matched(s, TargetSpec(preset=preset), None)
        except Exception:  # no such preset for this architecture
            continue
        if set(alt.modules) != have and alt.modules:
            yield _with_targets(s, f"targets taken as {preset} ({len(alt.modules)} modules)", alt.modules)


def dora_toggled(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    step = "DoRA magnitude vectors " + ("left out" if s.settings.dora else "counted (DoRA is off)")
    yield s.then("dora", step, settings=replace(s.settings, dora=not s.settings.dora), total=s.model_total())


def percent_as_fraction(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    if figure == "percent":
        step = "the fraction written as a percentage (0.0045 given for 0.45 %)"
        yield s.then("percent_scale", step, percent_scale=0.01)
        yield s.then("percent_scale", "the percentage multiplied by 100 again", percent_scale=100.0)


def full_matrices(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """The targeted weights themselves counted (Σ out·in), as if fully fine-tuned."""
    if not count.rows:
        return
    index, params = count.model.by_name(), {p.name: p.shape for p in count.model.parameters}
    full = sum(index[n].weight_numel for n in count.match.modules)
    full += sum(math.prod(params[n]) for n in count.match.parameters)
    step = (
        f"the full weight matrices of the {len(count.rows)} targeted modules counted (Σ out·in) instead of "
        "the LoRA factors r·(out+in)"
    )
    yield s.then("full_matrices", step, lora=full, total=s.model_total())


@dataclass(frozen=True)
class Mistake:
    label: str
    vary: Vary
    combinable: bool = True  # may be paired with another mistake


# In order of how often each is seen; of recomputations that fit a claim equally well, the earlier is named.
MISTAKES: dict[str, Mistake] = {
    "square_kv": Mistake("k/v (attention) projections assumed d×d", square_attention),
    "square_mlp": Mistake("MLP projections assumed d×d or 4·d", square_mlp),
    "tied": Mistake("tied embeddings counted twice, or untied ones once", tied_embeddings),
    "targets": Mistake("targets matching more or fewer modules", other_targets),
    "alpha_as_rank": Mistake("lora_alpha read as the rank", alpha_as_rank),
    "layers": Mistake("a different layer count", layer_count),
    "rank_pattern": Mistake("rank_pattern ignored", rank_pattern_ignored),
    "dora": Mistake("DoRA magnitude vectors counted or left out", dora_toggled, combinable=False),
    "percent_scale": Mistake("a fraction written as a percentage", percent_as_fraction, combinable=False),
    "full_matrices": Mistake(
        "full weight matrices counted instead of the LoRA factors", full_matrices, combinable=False
    ),
}
# Mistakes with many variants; two of them together could fit almost any number, so they are never paired.
BROAD = ("targets", "layers")
