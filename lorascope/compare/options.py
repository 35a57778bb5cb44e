"""The comparison's options: flat keyword options routed to the dataclass that owns each, one name per
concept.

``RunOptions`` says where dense work runs and which modules are read; ``build_options`` hands every other
option to the grid (``subspace.GridOptions``), the intruder settings (``intruders.IntruderOptions``) or the
pair measures (``pair.PairOptions``) — ``svd``, which several have, to each of them — and accepts the names
``RENAMED_OPTIONS`` lists with a FutureWarning naming the new one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import LorascopeError
from ..linalg import resolve_device
from .intruders import IntruderOptions
from .pair import PairOptions
from .subspace import GridOptions


@dataclass(frozen=True)
class RunOptions:
    """Where dense work runs and which modules are read."""

    device: str = "auto"  # dense SVDs on a GPU when torch sees one; factored SVDs stay on the CPU
    include: str | None = None  # regex on module names
    exclude: str | None = None

    def __post_init__(self) -> None:
        resolve_device(self.device)  # raises ValueError naming the allowed values


# options renamed so that one name means one thing across commands: old name -> new name
RENAMED_OPTIONS = {"top_k": "intruder_k", "tuned_svd": "svd", "dense_svd": "svd"}


def build_options(**options: Any) -> tuple[PairOptions, RunOptions]:
    """Route flat keyword options to the dataclass that owns each (``intruders=False`` turns them off).

    An option several dataclasses have (``svd``: every dense top-k of the comparison) goes to each of them.
    The names ``RENAMED_OPTIONS`` lists still work, with a FutureWarning naming the new one.

    Raises:
        LorascopeError: an unknown option or a value out of range.
    """
    owners = {
        cls: {f.name for f in dataclasses.fields(cls)} for cls in (GridOptions, IntruderOptions, RunOptions)
    }
    owners[PairOptions] = {f.name for f in dataclasses.fields(PairOptions)} - {"grid", "intruders"}
    want_intruders = options.pop("intruders", True)
    parts: dict[type, dict[str, Any]] = {cls: {} for cls in owners}
    for key, value in _renamed(options).items():
        classes = [c for c, names in owners.items() if key in names]
        if not classes:
            known = sorted({n for names in owners.values() for n in names} | {"intruders"})
            raise LorascopeError(f"unknown option {key!r}; expected one of: {', '.join(known)}")
        for cls in classes:
            parts[cls][key] = value
    try:
        grid = GridOptions(**parts[GridOptions])
        intr = IntruderOptions(**parts[IntruderOptions]) if want_intruders else None
        pair = PairOptions(grid=grid, intruders=intr, **parts[PairOptions])
        run = RunOptions(**parts[RunOptions])
    except (TypeError, ValueError) as exc:
        raise LorascopeError(str(exc)) from None
    return pair, run


def _renamed(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        new = RENAMED_OPTIONS.get(key)
        if new is not None:
            import warnings

            warnings.warn(f"the option {key!r} is now {new!r}", FutureWarning, stacklevel=4)
            if new in options:
                raise LorascopeError(f"give {new!r} only (not also {key!r}, its old name).")
        out[new or key] = value
    return out
