"""Owns checking claimed parameter figures against the exact count, and explaining a wrong one.

A claim gives any of: the LoRA (trainable) parameter count, that count as a percentage of the model, and the
model's total. Each is compared with the exact figure within a relative tolerance. Only a wrong figure is
searched for the common mistake (``mistakes.MISTAKES``) that reproduces it: each mistake alone first; only
when none reproduces the claim, pairs of them — and a pair is named only when it reproduces the claim within
``PAIR_TOLERANCE``. Otherwise the single recomputation closest to the claim is shown as such. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

from ..errors import LorascopeError
from .count import LoraCount
from .mistakes import BROAD, MISTAKES, Scenario
from .numbers import both

FIGURE_LABELS = {"lora": "LoRA parameters", "percent": "percent of the model", "total": "model parameters"}
# A pair of mistakes (or one of many similar candidates) must reproduce a claim this closely, or within the
# claim's tolerance if tighter: pairs are many, and only a near-exact fit is evidence for one.
PAIR_TOLERANCE = 0.002


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
        for name, value in (("lora", self.lora), ("total", self.total)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive count, got {value!r}")
        if self.percent is not None and not 0 < self.percent <= 100:
            raise ValueError(f"percent must lie in (0, 100], got {self.percent!r}")


@dataclass(frozen=True)
class Explanation:
    """A recomputation that reproduces (or, for a single mistake, comes closest to) a claimed figure."""

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

    error = property(lambda self: (self.claimed - self.exact) / self.exact, doc="(claimed − exact) / exact")
    ok = property(lambda self: abs(self.error) <= self.tolerance)
    verdict = property(lambda self: "ok" if self.ok else "wrong")


@dataclass(frozen=True)
class ClaimCheck:
    claim: Claim
    count: LoraCount
    figures: tuple[FigureCheck, ...]

    ok = property(lambda self: all(f.ok for f in self.figures))


def exact_figure(count: LoraCount, figure: str) -> float:
    return {"lora": count.trainable, "total": count.total, "percent": count.percent}[figure]


def check_claim(count: LoraCount, claim: Claim, explain: bool = True) -> ClaimCheck:
    """Compare each claimed figure with the exact one; explain the wrong ones (``explain``).

    Raises:
        LorascopeError: a LoRA count or percentage claimed for a configuration that reaches no module.
    """
    if not count.trainable and (claim.lora is not None or claim.percent is not None):
        raise LorascopeError(
            f"targets {count.match.label} reach no module of this model, so there is no count to check the "
            "claim against (is the model the one the claim is about?)."
        )
    checks = []
    for figure in (f for f in FIGURE_LABELS if getattr(claim, f) is not None):
        exact = float(exact_figure(count, figure))
        check = FigureCheck(figure, float(getattr(claim, figure)), exact, claim.tolerance)
        why = None if check.ok or not explain else explain_figure(count, claim, figure)
        checks.append(replace(check, explanation=why))
    return ClaimCheck(claim, count, tuple(checks))


def explain_figure(count: LoraCount, claim: Claim, figure: str) -> Explanation | None:
    """The recomputation under common mistakes that reproduces the claimed figure; single mistakes win over
    pairs, which are tried only when no single mistake reproduces it. None when no mistake changes the figure.
    """
    claimed, exact_value = float(getattr(claim, figure)), exact_figure(count, figure)
    strict = min(claim.tolerance, PAIR_TOLERANCE)

    def scored(scenarios: Iterable[Scenario]) -> list[tuple[float, Scenario, float]]:
        out = []
        for alt in scenarios:
            try:
                value = alt.figure(figure)
            except LorascopeError:  # a recomputation PEFT itself would refuse (DoRA on fused experts …)
                continue
            if value > 0 and not math.isclose(value, exact_value, rel_tol=1e-12):
                out.append((abs(claimed - value) / value, alt, value))
        return out

    base = Scenario(count.model, count.settings)
    singles = [alt for m in MISTAKES.values() for alt in m.vary(base, count, figure)]
    found = scored(singles)
    within = [f for f in found if f[0] <= (strict if f[1].strict else claim.tolerance)]
    if (
        not within
    ):  # pairs of combinable mistakes (at most one of them broad), the second on the first's result
        keys = [k for k, m in MISTAKES.items() if m.combinable]
        pairs = [(a, b) for a, b in combinations(keys, 2) if not (a in BROAD and b in BROAD)]
        alts = (
            alt
            for a, b in pairs
            for one in singles
            if one.keys == (a,)
            for alt in MISTAKES[b].vary(one, count, figure)
        )
        within = [f for f in scored(alts) if f[0] <= strict]
    if not found and not within:
        return None
    order = {key: i for i, key in enumerate(MISTAKES)}
    pool = sorted(within or found, key=lambda f: (round(f[0], 9), [order.get(k, 99) for k in f[1].keys]))
    error, best, value = pool[0]
    also = tuple(" + ".join(f[1].steps) for f in pool[1:4]) if within else ()
    return Explanation(figure, best.keys, best.steps, value, error, bool(within), also)


def figure_rows(check: ClaimCheck) -> list[dict[str, Any]]:
    """One row per claimed figure: the row model every rendering of a check reads (terminal, CSV, HTML,
    JSON)."""
    rows = []
    for f in check.figures:
        e = f.explanation
        rows.append({
            "figure": FIGURE_LABELS[f.figure], "claimed": f.claimed, "exact": f.exact,
            "relative_error": f.error, "tolerance": f.tolerance, "verdict": f.verdict,
            "explanation": "" if e is None else e.text,
            "mistakes": "+".join(e.keys) if e is not None and e.reproduces else "",
            "claimed_text": format_figure(f.figure, f.claimed),
            "exact_text": format_figure(f.figure, f.exact),
            "fit": math.nan if e is None else e.error, "also": e.also if e is not None else (),
        })  # fmt: skip
    return rows


def format_figure(figure: str, v: float) -> str:
    """A figure as printed: counts exact with a short form, percentages to 4 significant digits."""
    return f"{v:.4g} %" if figure == "percent" else both(int(v))
