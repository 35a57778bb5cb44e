"""The dense family: a full fine-tune's ΔW = W_tuned − W_base, both upcast before the subtraction."""

from __future__ import annotations

from ..linalg import Dense
from .family import Family, Tensors, register


def _build(d, t: Tensors) -> Dense:
    delta = t.pop("tuned", copy=True)
    delta.sub_(t.pop("base"))  # in place: two matrices at the peak, then one
    return Dense(delta)


DENSE = register(
    Family(
        name="dense",
        parts=("tuned",),
        formula="W_tuned − W_base",
        reference="the definition of a weight update",
        needs_base=True,
        form="Dense",
        build=_build,
        numpy=False,
    )
)
