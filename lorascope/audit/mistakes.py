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
from .shapes import ATTENTION_ROLES, LORA_KINDS, MLP_ROLES, ModelShapes, layer_of, relayer, type_of
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

    def then(self, key: str, step: str, keep_total: bool = True, **changes) -> Scenario:
        """This scenario with one more mistake; ``keep_total``: the model size stays what it was."""
        total = {"total": self.model_total()} if keep_total and "total" not in changes else {}
        return replace(self, steps=(*self.steps, step), keys=(*self.keys, key), **total, **changes)

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
        lora = (
            self.lora
            if self.lora is not None
            else self.at_depth(lambda m: count_lora(m, self.settings).trainable)
        )
        total = self.model_total()
        return {"lora": lora, "total": total, "percent": 100.0 * lora / total * self.percent_scale}[figure]


# A mistake turns a scenario into those it produces, given the exact count and the figure being explained.
Vary = Callable[[Scenario, LoraCount, str], Iterator[Scenario]]


def _matched(s: Scenario, spec: TargetSpec | None = None, layers: object = ...):
    spec, layers = spec or s.settings.targets, s.settings.layers if layers is ... else layers
    return match_targets(s.model, spec, layers, s.settings.modules_to_save)


def _squared(s: Scenario, key: str, shapes: dict[str, tuple[int, int]], roles: tuple[str, ...], what: str):
    """The scenario with the linear layers of these roles reshaped (``what`` the counter assumed), if that
    changes the count; the step says what they really are."""
    model = s.model.with_modules(replace(m, shape=shapes[m.role]) if m.kind in ("linear", "conv1d")
                                 and m.role in shapes else m for m in s.model.modules)  # fmt: skip
    if count_lora(model, s.settings).trainable != count_lora(s.model, s.settings).trainable:
        matched, real = set(_matched(s).modules), {}
        for m in (m for m in s.model.modules if m.role in roles and m.name in matched):
            real.setdefault(type_of(m.name), m.shape)
        really = ", ".join(f"{t} is {a}×{b}" for t, (a, b) in real.items())
        yield s.then(key, f"{what}really {really})", model=model)


def square_attention(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """k_proj/v_proj (and, second, every attention projection) taken as d×d."""
    if h := s.model.hidden:
        kv = {"k": (h, h), "v": (h, h), "qkv": (3 * h, h)}
        what = f"k/v projections taken as d×d = {h}×{h} (grouped-query attention ignored; "
        first = list(_squared(s, "square_kv", kv, ("k", "v", "qkv"), what))
        what = f"every attention projection taken as d×d = {h}×{h} ("
        every = list(_squared(s, "square_kv", {**kv, "q": (h, h), "o": (h, h)}, ATTENTION_ROLES, what))
        yield from first + [e for e in every if not first or e.model != first[0].model]


def square_mlp(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """MLP projections taken as d×d, or the MLP taken as 4·d wide."""
    if h := s.model.hidden:
        for w, words in ((h, f"d×d = {h}×{h}"), (4 * h, f"4·d wide ({4 * h})")):
            wide = {"gate": (w, h), "up": (w, h), "down": (h, w), "gate_up": (2 * w, h)}
            yield from _squared(s, "square_mlp", wide, MLP_ROLES, f"MLP projections taken as {words} (")


def layer_count(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """A different number of layers: off by one or two, one layer, or a common layer count (strict)."""
    n_now = len(s.settings.layers) if s.settings.layers else s.model.num_layers
    near = {n_now - 2, n_now - 1, n_now + 1, n_now + 2, 1}
    for n in sorted(c for c in {*COMMON_LAYER_COUNTS, *near} if c > 0 and c != n_now) if n_now else ():
        strict = s.strict or n not in near
        if s.settings.layers:
            settings = replace(s.settings, layers=tuple(range(n)))
            yield s.then("layers", f"{n} adapted layers counted instead of {n_now}", False, settings=settings,
                         strict=strict)  # fmt: skip
        else:
            step = f"{n} layer{'s' if n > 1 else ''} counted where the model has {n_now}"
            yield s.then("layers", step, False, n_layers=n, strict=strict)


def tied_embeddings(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """Tied input/output embeddings counted twice, or untied ones counted once."""
    total, tied = s.model_total(), sum(m.weight_numel for m in s.model.tied)
    if tied:
        yield s.then("tied", f"the tied embedding matrix counted twice (input and output, +{both(tied)})",
                     total=total + tied)  # fmt: skip
    untied = [m for m in s.model.modules if m.role == "head" and m.tied_to is None and m.kind == "linear"]
    if untied:
        n = untied[0].weight_numel
        step = f"the output head {untied[0].name} taken as tied to the input embeddings (−{both(n)}; "
        yield s.then("tied", step + "this model unties them)", total=total - n)


def alpha_as_rank(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    a, r = s.settings.alpha, s.settings.rank
    if float(a).is_integer() and int(a) != r and a >= 1:
        yield s.then("alpha_as_rank", f"lora_alpha={int(a)} read as the rank (r={r})",
                     settings=replace(s.settings, rank=int(a)))  # fmt: skip


def rank_pattern_ignored(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    if s.settings.rank_pattern:
        yield s.then("rank_pattern", f"rank_pattern ignored (every module at r={s.settings.rank})",
                     settings=replace(s.settings, rank_pattern={}))  # fmt: skip


def other_targets(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """One matched module type left out (thinking 'c_proj' reaches attn.c_proj only), one more counted, the
    output head counted with all-linear, or a preset target set (attn, mlp, all-linear) taken instead."""
    match = _matched(s)
    if match.parameters:  # target_parameters cannot be listed by name: not varied
        return

    def targets(step: str, names: tuple[str, ...]) -> Scenario:
        settings = replace(s.settings, targets=TargetSpec(names=names), layers=None)
        return s.then("targets", step, settings=settings)

    groups, have = match.groups(), set(match.modules)
    owners = {name: t for t, names in match.by_target.items() for name in names}
    for kind, names in groups.items() if len(groups) > 1 else ():
        target = owners.get(names[0])
        types = {type_of(n) for n in match.by_target.get(target, ())}
        also = f"; target {target!r} reaches it as well as {', '.join(sorted(types - {kind}))}"
        rest = tuple(n for n in match.modules if n not in names)
        yield targets(f"{kind} ({len(names)} modules) not counted{also if len(types) > 1 else ''}", rest)
    if (head := s.model.output_head) and head not in have:
        alt = _matched(s, TargetSpec(preset="all-linear"), None)
        yield targets(f"all linear layers including the output head {head}", (*alt.modules, head))
    layers, extra = set(s.settings.layers or ()), {}
    for m in s.model.modules:
        if m.kind in LORA_KINDS and m.name not in have and (not layers or layer_of(m.name) in layers):
            extra.setdefault(type_of(m.name), []).append(m.name)
    for kind, names in extra.items():
        yield targets(f"{kind} ({len(names)} modules) counted as a target too", (*match.modules, *names))
    for preset in PRESET_WORDS:
        try:
            alt = _matched(s, TargetSpec(preset=preset), None)
        except Exception:  # no such preset for this architecture
            continue
        if set(alt.modules) != have and alt.modules:
            yield targets(f"targets taken as {preset} ({len(alt.modules)} modules)", alt.modules)


def dora_toggled(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    step = "DoRA magnitude vectors " + ("left out" if s.settings.dora else "counted (DoRA is off)")
    yield s.then("dora", step, settings=replace(s.settings, dora=not s.settings.dora))


def percent_as_fraction(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    if figure == "percent":
        yield s.then("percent_scale", "the fraction written as a percentage (0.0045 given for 0.45 %)", False,
                     percent_scale=0.01)  # fmt: skip
        yield s.then("percent_scale", "the percentage multiplied by 100 again", False, percent_scale=100.0)


def full_matrices(s: Scenario, count: LoraCount, figure: str) -> Iterator[Scenario]:
    """The targeted weights themselves counted (Σ out·in), as if fully fine-tuned."""
    if count.rows:
        index, params = count.model.by_name(), {p.name: p.shape for p in count.model.parameters}
        full = sum(index[n].weight_numel for n in count.match.modules)
        full += sum(math.prod(params[n]) for n in count.match.parameters)
        step = (f"the full weight matrices of the {len(count.rows)} targeted modules counted (Σ out·in) "
                "instead of the LoRA factors r·(out+in)")  # fmt: skip
        yield s.then("full_matrices", step, lora=full)


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
        "full weight matrices counted instead of the LoRA factors", full_matrices, False
    ),
}
# Mistakes with many variants; two of them together could fit almost any number, so they are never paired.
BROAD = ("targets", "layers")
