"""The lazy update items: what one module's ΔW is made of, before any tensor is read.

A ``Delta`` names its family (``lorascope.delta.FAMILIES``), its stored tensors by part, ΔW's shape and, where
given, the base weight in ΔW's (out, in) orientation; a ``VectorDelta`` is a 1-D update (bias, norm weight);
a ``Plan`` is every item of one analysis with the warnings of what was skipped. ``filter_names`` keeps the
items a run asks for, and ``unique_names`` is the one rule for two modules that map to one name: both are
kept, the later ones renamed ``name#2``, ``name#3`` …, each with a warning. How items are paired with their
base is ``plan``'s (``full_diff``, ``adapter_plan``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..checkpoint.base import AdapterModule, TensorRef
from ..errors import LorascopeError


@dataclass(eq=False)
class Delta:
    """One update, read lazily: its family, stored tensors by part, ΔW's shape and the base weight where
    given.

    ``parts`` of the dense family hold ``tuned``; an adapter module's are the module's own. ``source`` is the
    format the update came from (dense, peft, kohya, …, modules_to_save).
    """

    name: str
    family: str
    parts: dict[str, TensorRef]
    shape: tuple[int, int]
    source: str
    base: TensorRef | None = None
    module: AdapterModule | None = None
    added_rows: int = 0

    @property
    def tuned(self) -> TensorRef:
        return self.parts["tuned"]

    @property
    def scale(self) -> float | None:
        return None if self.module is None else self.module.scale

    @property
    def rank(self) -> int | None:
        return None if self.module is None else self.module.rank


def dense_delta(
    name: str, tuned: TensorRef, base: TensorRef, source: str = "dense", added_rows: int = 0
) -> Delta:
    return Delta(name, "dense", {"tuned": tuned}, tuple(tuned.shape[:2]), source, base, None, added_rows)


def module_delta(name: str, module: AdapterModule, base: TensorRef | None = None) -> Delta:
    return Delta(name, module.family, dict(module.parts), tuple(module.shape), module.source, base, module)


@dataclass
class VectorDelta:
    """A 1-D update (bias, norm weight): only its norms are recorded, in vectors.csv."""

    name: str
    tuned: TensorRef
    base: TensorRef | None = None
    is_update: bool = False  # the tensor is itself an update (lora_B.bias), not a new value


@dataclass
class Plan:
    deltas: list[Delta]
    vectors: list[VectorDelta] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    kind: str = "full-diff"  # full-diff | adapter | adapter+base


def weight_name(key: str) -> str:
    return key.removesuffix(".weight")


def filter_names(plan: Plan, include: str | None, exclude: str | None) -> Plan:
    """Keep the deltas whose names match ``include`` and not ``exclude`` (regexes, searched anywhere)."""
    inc = _compile(include, "--include")
    exc = _compile(exclude, "--exclude")

    def keep(name: str) -> bool:
        return (inc is None or inc.search(name) is not None) and (exc is None or exc.search(name) is None)

    deltas = [d for d in plan.deltas if keep(d.name)]
    if plan.deltas and not deltas:
        raise LorascopeError(
            f"no module name passes the filters (include={include!r}, exclude={exclude!r}); "
            f"names look like {plan.deltas[0].name!r}."
        )
    vectors = [v for v in plan.vectors if keep(v.name)]
    return dataclasses.replace(plan, deltas=deltas, vectors=vectors)


def _compile(pattern: str | None, option: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise LorascopeError(f"{option} {pattern!r} is not a valid regular expression: {exc}") from None


def unique_names(plan: Plan) -> Plan:
    """Rename the second, third … delta of a name to ``name#2``, ``name#3`` … (in plan order), with a warning
    each, so every module keeps its row and every name is unique (module docstring). Returns ``plan``."""
    seen: dict[str, int] = {}
    for d in plan.deltas:
        if d.name not in seen:
            seen[d.name] = 1
            continue
        seen[d.name] += 1
        new = f"{d.name}#{seen[d.name]}"
        plan.warnings.append(
            {"name": d.name, "reason": f"two modules map to this name; the second is named {new}"}
        )
        d.name = new
    return plan
