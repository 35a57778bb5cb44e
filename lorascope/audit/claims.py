"""Check claimed parameter figures against the exact count, and name the common mistake that reproduces a wrong one.

A claim gives any of: the LoRA (trainable) parameter count, that count as a percentage of the model, and the
model's total. Each is compared with the exact figure within a relative tolerance. A wrong figure is recomputed
under every mistake in ``MISTAKES`` — alone, then two at a time — and the recomputation closest to the claim
is named when it lies within the tolerance. Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import combinations

from ..errors import LorascopeError
from .count import LoraCount, LoraSettings, trainable_params
from .layout import ATTENTION_ROLES, MLP_ROLES, ModelShapes, ModuleShape, relayer
from .numbers import both, exact, short
from .targets import PRESET_WORDS, TargetSpec, match_targets, type_of

FIGURES = ("lora", "percent", "total")
FIGURE_LABELS = {"lora": "LoRA parameters", "percent": "percent of the model", "total": "model parameters"}
COMMON_LAYER_COUNTS = (1, 2, 4, 6, 8, 12, 16, 18, 22, 24, 26, 28, 32, 36, 40, 42, 46, 48, 60, 62, 64, 80, 88, 94, 96, 126)


@dataclass(frozen=True)
class Claim:
    """Claimed figures; at least one is given. ``tolerance`` is relative (0.02 = 2 %)."""

    lora: int | None = None
    percent: float | None = None
    total: int | None = None
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.lora is None and self.percent is None and self.total is None:
            raise ValueError("a claim needs at least one of lora, percent, total")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must lie between 0 and 1 (0.02 = 2 %), got {self.tolerance!r}")
        for name in ("lora", "total"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive count, got {value!r}")
        if self.percent is not None and not 0 < self.percent <= 100:
            raise ValueError(f"percent must lie in (0, 100], got {self.percent!r}")

    def given(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in FIGURES if getattr(self, f) is not None}


@dataclass(frozen=True)
class Scenario:
    """A way of counting: model shapes and LoRA settings, plus the model size and percent scale the counter used."""

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


@dataclass(frozen=True)
class Figures:
    lora: int
    total: int
    percent: float

    def value(self, figure: str) -> float:
        return getattr(self, figure)


def figures_of(s: Scenario) -> Figures:
    """The figures a scenario produces. A changed layer count is extrapolated from one- and two-layer copies of
    the model: counts are linear in the number of identical layers."""
    if s.n_layers is None:
        lora, total = trainable_params(s.model, s.settings), s.model.total
    else:
        one, two = relayer(s.model, 1), relayer(s.model, 2)
        l1, l2 = trainable_params(one, s.settings), trainable_params(two, s.settings)
        lora = l1 + (s.n_layers - 1) * (l2 - l1)
        total = one.total + (s.n_layers - 1) * (two.total - one.total)
    total = s.total if s.total is not None else total
    lora = s.lora if s.lora is not None else lora
    return Figures(lora, total, 100.0 * lora / total * s.percent_scale)


@dataclass(frozen=True)
class Context:
    """What a mistake may look at besides the scenario: the exact count and the claim."""

    count: LoraCount
    claim: Claim


# ---------------------------------------------------------------- the common mistakes


def _reshaped(model: ModelShapes, shape_for: Callable[[ModuleShape], tuple[int, int] | None]) -> ModelShapes | None:
    changed = False
    out = []
    for m in model.modules:
        new = shape_for(m) if m.kind in ("linear", "conv1d") else None
        if new is not None and new != m.shape:
            changed = True
            m = replace(m, shape=new)
        out.append(m)
    return model.with_modules(out) if changed else None


def _shapes_note(model: ModelShapes, roles: tuple[str, ...], s: Scenario) -> str:
    matched = set(match_targets(model, s.settings.targets, s.settings.layers, s.settings.modules_to_save).modules)
    seen: dict[str, tuple[int, ...]] = {}
    for m in model.modules:
        if m.role in roles and m.name in matched:
            seen.setdefault(type_of(m.name), m.shape)
    return ", ".join(f"{t} is {a}×{b}" for t, (a, b) in seen.items())


def square_attention(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """k_proj/v_proj (and, second, every attention projection) taken as d×d."""
    h = s.model.hidden
    if not h:
        return
    fused = {"qkv": (3 * h, h)}
    kv = _reshaped(s.model, lambda m: (h, h) if m.role in ("k", "v") else fused.get(m.role))
    if kv is not None and trainable_params(kv, s.settings) != trainable_params(s.model, s.settings):
        real = _shapes_note(s.model, ("k", "v", "qkv"), s)
        yield s.then("square_kv", f"k/v projections taken as d×d = {h}×{h} (grouped-query attention ignored; "
                     f"really {real})", model=kv, total=_total(s))
    every = _reshaped(s.model, lambda m: (h, h) if m.role in ("q", "k", "v", "o") else fused.get(m.role))
    if every is not None and every != kv and trainable_params(every, s.settings) != trainable_params(s.model, s.settings):
        real = _shapes_note(s.model, ATTENTION_ROLES, s)
        yield s.then("square_kv", f"every attention projection taken as d×d = {h}×{h} (really {real})",
                     model=every, total=_total(s))


def square_mlp(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """MLP projections taken as d×d, or the MLP taken as 4·d wide."""
    h = s.model.hidden
    if not h:
        return
    for width, words in ((h, f"d×d = {h}×{h}"), (4 * h, f"4·d wide ({4 * h})")):
        def shape(m: ModuleShape, w: int = width) -> tuple[int, int] | None:
            return {"gate": (w, h), "up": (w, h), "down": (h, w), "gate_up": (2 * w, h)}.get(m.role or "")

        alt = _reshaped(s.model, shape)
        if alt is not None and trainable_params(alt, s.settings) != trainable_params(s.model, s.settings):
            real = _shapes_note(s.model, MLP_ROLES, s)
            yield s.then("square_mlp", f"MLP projections taken as {words} (really {real})", model=alt, total=_total(s))


def layer_count(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """A different number of layers: off by one or two, or a layer count common among published models.

    Counts are not solved for, since nearly any claim is then some layer count; the candidates stay the ones
    a person plausibly used.
    """
    n_now = len(s.settings.layers) if s.settings.layers else s.model.num_layers
    if n_now == 0:
        return
    near = {n_now - 2, n_now - 1, n_now + 1, n_now + 2, 1}  # off by one or two; one layer's figure
    for n in sorted(c for c in set(COMMON_LAYER_COUNTS) | near if c > 0 and c != n_now):
        strict = s.strict or n not in near
        if s.settings.layers:
            settings = replace(s.settings, layers=tuple(range(n)))
            yield s.then("layers", f"{n} adapted layers counted instead of {n_now}", settings=settings, strict=strict)
        else:
            yield s.then("layers", f"{n} layer{'s' if n > 1 else ''} counted where the model has {n_now}", n_layers=n,
                         strict=strict)


def tied_embeddings(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """Tied input/output embeddings counted twice, or untied ones counted once."""
    total = _total(s)
    tied = sum(m.weight_numel for m in s.model.tied)
    if tied:
        yield s.then("tied", f"the tied embedding matrix counted twice (input and output, +{both(tied)})",
                     total=total + tied)
    untied = [m for m in s.model.modules if m.role == "head" and m.tied_to is None and m.kind == "linear"]
    if untied:
        n = untied[0].weight_numel
        yield s.then("tied", f"the output head {untied[0].name} taken as tied to the input embeddings "
                     f"(−{both(n)}; this model unties them)", total=total - n)


def alpha_as_rank(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    a, r = s.settings.alpha, s.settings.rank
    if float(a).is_integer() and int(a) != r and a >= 1:
        yield s.then("alpha_as_rank", f"lora_alpha={int(a)} read as the rank (r={r})",
                     settings=replace(s.settings, rank=int(a)), total=_total(s))


def rank_pattern_ignored(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    if s.settings.rank_pattern:
        yield s.then("rank_pattern", f"rank_pattern ignored (every module at r={s.settings.rank})",
                     settings=replace(s.settings, rank_pattern={}), total=_total(s))


def fewer_targets(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """One module type of the matched ones left out — e.g. thinking 'c_proj' reaches attn.c_proj only."""
    match = match_targets(s.model, s.settings.targets, s.settings.layers, s.settings.modules_to_save)
    groups = match.groups()
    if len(groups) < 2 or match.parameters:  # target_parameters cannot be listed by name: not varied
        return
    owners = {name: t for t, names in match.by_target.items() for name in names}
    for kind, names in groups.items():
        rest = tuple(n for n in match.modules if n not in set(names))
        target = owners.get(names[0])
        also = ""
        if target is not None and len({type_of(n) for n in match.by_target.get(target, ())}) > 1:
            also = f"; target {target!r} reaches it as well as {', '.join(sorted({type_of(n) for n in match.by_target[target]} - {kind}))}"
        yield s.then("targets", f"{kind} ({len(names)} modules) not counted{also}",
                     settings=replace(s.settings, targets=TargetSpec(names=rest), layers=None), total=_total(s))


def more_targets(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """One more module type counted, or a preset target set (attn, mlp, all-linear, all linear layers + head)."""
    match = match_targets(s.model, s.settings.targets, s.settings.layers, s.settings.modules_to_save)
    if match.parameters:  # target_parameters cannot be listed by name: not varied
        return
    have = set(match.modules)
    layers = set(s.settings.layers) if s.settings.layers else None
    extra: dict[str, list[str]] = {}
    for m in s.model.modules:
        if m.kind in ("linear", "conv1d", "embedding") and m.name not in have:
            layer = _layer(m.name)
            if layers is None or layer in layers:
                extra.setdefault(type_of(m.name), []).append(m.name)
    if s.model.output_head and s.model.output_head not in have:
        alt = match_targets(s.model, TargetSpec(preset="all-linear"), None, s.settings.modules_to_save)
        with_head = (*alt.modules, s.model.output_head)
        yield s.then("targets", f"all linear layers including the output head {s.model.output_head}",
                     settings=replace(s.settings, targets=TargetSpec(names=with_head), layers=None), total=_total(s))
    for kind, names in extra.items():
        yield s.then("targets", f"{kind} ({len(names)} modules) counted as a target too",
                     settings=replace(s.settings, targets=TargetSpec(names=(*match.modules, *names)), layers=None),
                     total=_total(s))
    for preset in PRESET_WORDS:
        try:
            alt = match_targets(s.model, TargetSpec(preset=preset), None, s.settings.modules_to_save)
        except Exception:  # no such preset for this architecture
            continue
        if set(alt.modules) != have and alt.modules:
            yield s.then("targets", f"targets taken as {preset} ({len(alt.modules)} modules)",
                         settings=replace(s.settings, targets=TargetSpec(names=alt.modules), layers=None), total=_total(s))


def dora_toggled(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    words = "DoRA magnitude vectors left out" if s.settings.dora else "DoRA magnitude vectors counted (DoRA is off)"
    yield s.then("dora", words, settings=replace(s.settings, dora=not s.settings.dora), total=_total(s))


def percent_as_fraction(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    if ctx.claim.percent is None:
        return
    yield s.then("percent_scale", "the fraction written as a percentage (0.0045 given for 0.45 %)", percent_scale=0.01)
    yield s.then("percent_scale", "the percentage multiplied by 100 again", percent_scale=100.0)


def full_matrices(s: Scenario, ctx: Context) -> Iterator[Scenario]:
    """The targeted weights themselves counted (Σ out·in), as if fully fine-tuned."""
    c = ctx.count
    if c.table.empty:
        return
    index, params = c.model.by_name(), {p.name: p for p in c.model.parameters}
    full = sum(index[n].weight_numel for n in c.match.modules) + sum(
        math.prod(params[n].shape) for n in c.match.parameters)
    yield s.then("full_matrices", f"the full weight matrices of the {len(c.table)} targeted modules counted (Σ out·in) "
                 "instead of the LoRA factors r·(out+in)", lora=full, total=_total(s))


@dataclass(frozen=True)
class Mistake:
    label: str
    vary: Callable[[Scenario, Context], Iterator[Scenario]]
    combinable: bool = True  # may be paired with another mistake


# In order of how often each is seen; among recomputations that fit a claim equally well the earlier one is named.
MISTAKES: dict[str, Mistake] = {
    "square_kv": Mistake("k/v (attention) projections assumed d×d", square_attention),
    "square_mlp": Mistake("MLP projections assumed d×d or 4·d", square_mlp),
    "tied": Mistake("tied embeddings counted twice, or untied ones once", tied_embeddings),
    "targets": Mistake("targets matching more or fewer modules", lambda s, c: _chain(fewer_targets(s, c), more_targets(s, c))),
    "alpha_as_rank": Mistake("lora_alpha read as the rank", alpha_as_rank),
    "layers": Mistake("a different layer count", layer_count),
    "rank_pattern": Mistake("rank_pattern ignored", rank_pattern_ignored),
    "dora": Mistake("DoRA magnitude vectors counted or left out", dora_toggled, combinable=False),
    "percent_scale": Mistake("a fraction written as a percentage", percent_as_fraction, combinable=False),
    "full_matrices": Mistake("full weight matrices counted instead of the LoRA factors", full_matrices, combinable=False),
}


def _chain(*its: Iterator[Scenario]) -> Iterator[Scenario]:
    for it in its:
        yield from it


def _total(s: Scenario) -> int:
    """The model size the scenario's counter used (kept when a later mistake changes only the LoRA count)."""
    if s.total is not None:
        return s.total
    if s.n_layers is None:
        return s.model.total
    one, two = relayer(s.model, 1).total, relayer(s.model, 2).total
    return one + (s.n_layers - 1) * (two - one)


def _layer(name: str) -> int | None:
    from ..names import split_name

    return split_name(name)[0]


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class Explanation:
    """A recomputation that reproduces (or comes closest to) a claimed figure."""

    figure: str
    keys: tuple[str, ...]
    steps: tuple[str, ...]
    value: float
    error: float  # |claimed − value| / value
    reproduces: bool
    also: tuple[str, ...] = ()  # other recomputations that reproduce it as well

    @property
    def text(self) -> str:
        lead = "reproduced by" if self.reproduces else "not reproduced by any common mistake; closest"
        return f"{lead}: {' + '.join(self.steps)} → {format_figure(self.figure, self.value)}"


@dataclass(frozen=True)
class FigureCheck:
    figure: str
    claimed: float
    exact: float
    tolerance: float
    explanation: Explanation | None = None

    @property
    def error(self) -> float:
        """Signed relative error of the claim: (claimed − exact) / exact."""
        return (self.claimed - self.exact) / self.exact

    @property
    def ok(self) -> bool:
        return abs(self.error) <= self.tolerance

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "wrong"


@dataclass(frozen=True)
class ClaimCheck:
    claim: Claim
    count: LoraCount
    figures: tuple[FigureCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.figures)


def check_claim(count: LoraCount, claim: Claim, explain: bool = True) -> ClaimCheck:
    """Compare each claimed figure with the exact one; explain the wrong ones.

    Args:
        count: the exact count of the claimed configuration.
        claim: claimed figures and the tolerance.
        explain: search the common mistakes for wrong figures.
    """
    exact_figures = Figures(count.trainable, count.total, count.percent)
    checks = []
    for figure, claimed in claim.given().items():
        check = FigureCheck(figure, float(claimed), float(exact_figures.value(figure)), claim.tolerance)
        if explain and not check.ok:
            check = replace(check, explanation=explain_figure(count, claim, figure))
        checks.append(check)
    return ClaimCheck(claim, count, tuple(checks))


def single_alternatives(count: LoraCount, claim: Claim) -> list[Scenario]:
    """The count redone under each common mistake on its own."""
    base, ctx = Scenario(count.model, count.settings), Context(count, claim)
    return [alt for mistake in MISTAKES.values() for alt in mistake.vary(base, ctx)]


# Mistakes with many variants; two of them together could fit almost any number, so they are never paired.
BROAD = ("targets", "layers")
# A pair of mistakes must reproduce a claim this closely (or within the claim's tolerance, if tighter): pairs
# are many, and only a near-exact fit is evidence for one.
PAIR_TOLERANCE = 0.002


def paired_alternatives(count: LoraCount, claim: Claim, singles: list[Scenario]) -> Iterator[Scenario]:
    """Pairs of combinable mistakes (at most one of them broad), the second applied to the first's result."""
    ctx = Context(count, claim)
    keys = [k for k, m in MISTAKES.items() if m.combinable]
    for a, b in combinations(keys, 2):
        if a in BROAD and b in BROAD:
            continue
        for first in (s for s in singles if s.keys == (a,)):
            yield from MISTAKES[b].vary(first, ctx)


def explain_figure(count: LoraCount, claim: Claim, figure: str) -> Explanation | None:
    """The recomputation under common mistakes closest to the claimed figure; single mistakes win over pairs.

    Pairs are tried only when no single mistake reproduces the claim within the tolerance.
    """
    claimed = float(getattr(claim, figure))
    exact_value = Figures(count.trainable, count.total, count.percent).value(figure)

    def scored(scenarios) -> list[tuple[float, Scenario, float]]:
        out = []
        for alt in scenarios:
            try:
                value = figures_of(alt).value(figure)
            except LorascopeError:  # a recomputation PEFT itself would refuse (DoRA on fused experts …)
                continue
            if value > 0 and not math.isclose(value, exact_value, rel_tol=1e-12):
                out.append((abs(claimed - value) / value, alt, value))
        return out

    singles = single_alternatives(count, claim)
    found = scored(singles)
    within = [f for f in found if f[0] <= _allowed(f[1], claim)]
    if not within:
        pairs = scored(paired_alternatives(count, claim, singles))
        within = [f for f in pairs if f[0] <= min(claim.tolerance, PAIR_TOLERANCE)]  # pairs are strict
        found += pairs
    if not found:
        return None
    order = {key: i for i, key in enumerate(MISTAKES)}
    pool = sorted(within or found, key=lambda f: (round(f[0], 9), [order.get(k, 99) for k in f[1].keys]))
    best = pool[0]
    also = tuple(" + ".join(f[1].steps) for f in pool[1:4] if within)
    return Explanation(figure, best[1].keys, best[1].steps, best[2], best[0], bool(within), also)


def _allowed(s: Scenario, claim: Claim) -> float:
    return min(claim.tolerance, PAIR_TOLERANCE) if s.strict else claim.tolerance


def format_figure(figure: str, v: float) -> str:
    """A figure as printed: counts exact with a short form, percentages to 4 significant digits."""
    if figure == "percent":
        return f"{v:.4g} %"
    return f"{exact(int(v))} ({short(v)})" if abs(v) >= 1000 else exact(int(v))
