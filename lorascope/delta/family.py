"""What an update family is: its stored tensors, its ΔW formula and source, whether it needs the base, its
form.

A ``Family`` is one registry entry of ``FAMILIES``. Readers (``lorascope.checkpoint``) name each adapter
module's family and hand over its stored tensors by part name; ``build`` turns those tensors into the
cheapest exact form of ΔW (``lorascope.linalg.forms``), and ``lorascope.linalg.svd`` takes its spectrum.
Nothing outside ``lorascope.delta`` builds a ΔW.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..checkpoint.base import AdapterModule, TensorRef
    from ..linalg import Form
    from .items import Delta


class Tensors:
    """A module's tensors by part name, cast on access to the working type: float64 numpy for factored
    families computed on the CPU, else torch in the working precision on the working device.

    ``copy(part)`` returns memory that may be written in place (the stored tensor is never modified).
    """

    def __init__(self, raw: Mapping[str, Any], cast: Callable[[Any, bool], Any]):
        self._raw = dict(raw)
        self._cast = cast

    def __contains__(self, part: str) -> bool:
        return part in self._raw

    def __getitem__(self, part: str) -> Any:
        return self._cast(self._raw[part], False)

    def copy(self, part: str) -> Any:
        return self._cast(self._raw[part], True)

    def pop(self, part: str, copy: bool = False) -> Any:
        """The part, cast, dropping the stored one (lets dense families keep two matrices at the peak)."""
        return self._cast(self._raw.pop(part), copy)


@dataclass(frozen=True)
class Family:
    """One update family.

    Attributes:
        name: the family's name in tables (``family`` column): lora, dora, loha, lokr, …
        parts: the stored tensors it needs, by canonical part name; ``optional`` lists those it may have.
        formula: ΔW as docs/METRICS.md writes it.
        reference: where the formula is defined (paper and equation, or the library function).
        needs_base: ΔW cannot be computed without the base weight W0.
        form: the form ``build`` returns ('LowRank', 'Kronecker', 'Dense'), i.e. the SVD route.
        build: (delta, tensors) -> the form of ΔW; tensors hold ``base`` (W0 in ΔW's orientation) where given.
        numpy: ``build`` works on float64 numpy arrays, so a CPU run needs no torch.
        params: the number of trainable parameters the module stores (for summary totals), or None.
        fit_base: (module, base weight ref in ΔW's orientation) -> the module completed from its base (what
            the adapter leaves to the base: VeRA's input width, IA3's other dimension), or a string saying why
            the base does not fit; None where the module is complete as read.
        shared: parts several modules store once (a fused parameter's LoRA factors, VeRA's projections):
            read once and reused by the modules that follow.
        part_sets: the part-name sets a single-file reader may find for one module of this family, each
            exactly (``claim`` picks the family from them); empty for families no file format names by parts.
        decomposable: a ``magnitude`` beside these parts makes the module weight-decomposed (DoRA over this
            family, as LyCORIS ``weight_decompose`` does for LoCon, LoHa and LoKr).
    """

    name: str
    parts: tuple[str, ...]
    formula: str
    reference: str
    needs_base: bool
    form: str
    build: Callable[[Delta, Tensors], Form]
    optional: tuple[str, ...] = ()
    numpy: bool = True
    params: Callable[[Delta], int] | None = None
    fit_base: Callable[[AdapterModule, TensorRef], AdapterModule | str] | None = None
    shared: tuple[str, ...] = ()
    part_sets: tuple[frozenset[str], ...] = ()
    decomposable: bool = False


FAMILIES: dict[str, Family] = {}
MAGNITUDE = "magnitude"  # the part that makes a module weight-decomposed
WEIGHT_DECOMPOSED = "dora"  # the family of such modules; params['inner'] names the decomposed family


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"update family {family.name!r} is registered twice")
    for other in FAMILIES.values():
        shared = set(family.part_sets) & set(other.part_sets)
        if shared:
            raise ValueError(
                f"families {other.name!r} and {family.name!r} both claim the parts {sorted(shared.pop())}"
            )
    FAMILIES[family.name] = family
    return family


def claim(parts: Collection[str]) -> tuple[str, dict[str, str]] | None:
    """The family whose part set is exactly ``parts``, with its parameters, or None when no family claims
    them.

    A ``magnitude`` beside the parts of a decomposable family gives ``('dora', {'inner': family})``: DoRA over
    that family's update (Liu et al. 2024, Eq. 5; LyCORIS ``weight_decompose``). Data-driven: each family
    lists its part_sets (``Family.part_sets``); nothing here names a family.
    """
    have = frozenset(parts)
    for family in FAMILIES.values():
        if have in family.part_sets:
            return family.name, {}
    if MAGNITUDE in have:
        inner = claim(have - {MAGNITUDE})
        if inner is not None and not inner[1] and FAMILIES[inner[0]].decomposable:
            return WEIGHT_DECOMPOSED, {"inner": inner[0]}
    return None


def family_of(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown update family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
