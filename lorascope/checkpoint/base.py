"""What an opened checkpoint is: dense ``Weights`` or an ``Adapter`` of low-rank modules,
with lazy tensor refs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from .tensor_store import TensorStore

if TYPE_CHECKING:
    import torch

VIEWS = ("as_is", "flatten", "transpose")  # how a stored tensor is seen as a matrix (TensorRef.view)


def upcast(t: torch.Tensor, dtype: torch.dtype, device: Any = "cpu", copy: bool = False) -> torch.Tensor:
    """Move to ``device`` and upcast any floating tensor (float8, float16, bfloat16 …) before linear algebra.

    ``copy=True`` guarantees memory that may be written in place (never the stored tensor itself).
    """
    if not t.is_floating_point():
        raise LorascopeError(f"expected a floating-point tensor, got {t.dtype}")
    out = t.to(device, non_blocking=t.is_pinned()).to(dtype)
    return out.clone() if copy and out.data_ptr() == t.data_ptr() else out


@dataclass(frozen=True, eq=False)
class TensorRef:
    """One tensor in a store, with the reshaping that puts it in the (rows, cols) orientation used.

    view: 'as_is'; 'flatten' reshapes (d0, d1, …) to (d0, d1·…) — conv kernels; 'transpose' swaps a
    2-D tensor — GPT-2 Conv1D weights and embedding LoRA factors. ``rows`` keeps only the first rows.
    """

    store: TensorStore
    key: str
    view: str = "as_is"
    rows: int | None = None
    index: int | None = None  # one slice along dim 0 (an expert of a stacked MoE tensor), taken first

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")

    @property
    def stored_shape(self) -> tuple[int, ...]:
        s = self.store.info(self.key).shape
        return s[1:] if self.index is not None else s

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.stored_shape
        if self.view == "flatten" and len(s) > 2:
            rest = 1
            for d in s[1:]:
                rest *= d
            s = (s[0], rest)
        elif self.view == "transpose":
            s = tuple(reversed(s))
        if self.rows is not None:
            s = (self.rows, *s[1:])
        return tuple(s)

    def _arrange(self, t: Any) -> Any:
        """Index, view and rows applied to a torch tensor or numpy array alike."""
        if self.index is not None:
            t = t[self.index]
        if self.view == "flatten" and t.ndim > 2:
            t = t.reshape(t.shape[0], -1)
        elif self.view == "transpose":
            t = t.T
        if self.rows is not None:
            t = t[: self.rows]
        return t

    def fetch(self) -> torch.Tensor:
        """The tensor as stored (its own dtype) on the CPU, arranged: the I/O half of ``load``.

        Raises:
            LorascopeError: the tensor holds NaN or Inf.
        """
        import torch

        t = self._arrange(self.store.get(self.key))
        if t.is_floating_point():
            finite = torch.isfinite(
                t if t.element_size() > 1 else t.to(torch.float16)
            )  # float8: no isfinite kernel
            if not bool(finite.all()):
                self._non_finite(int((~finite).sum()), t.numel())
        return t

    def load(
        self, dtype: torch.dtype | None = None, device: torch.device | str = "cpu", copy: bool = False
    ) -> torch.Tensor:
        """The tensor upcast to ``dtype`` (default float32) on ``device``;
        ``copy=True`` guarantees writable memory."""
        import torch

        return upcast(self.fetch(), dtype or torch.float32, device, copy)

    def load_numpy(self, dtype: Any = np.float64, finite: bool = True) -> np.ndarray:
        """The tensor as a numpy array of ``dtype`` on the CPU, without importing torch for safetensors files.

        Raises:
            LorascopeError: the tensor holds NaN or Inf (unless ``finite`` is False).
        """
        t = self.store.get_numpy(self.key)
        if not np.issubdtype(t.dtype, np.floating):
            raise LorascopeError(
                f"{self.store.path}: tensor {self.key}: expected a floating-point tensor, got {t.dtype}"
            )
        t = np.ascontiguousarray(self._arrange(t), dtype=dtype)
        if finite and not np.isfinite(t).all():
            self._non_finite(int((~np.isfinite(t)).sum()), t.size)
        return t

    def _non_finite(self, bad: int, size: int) -> None:
        raise LorascopeError(
            f"{self.store.path}: tensor {self.key} holds {bad} NaN or Inf value(s) of {size}; a matrix with "
            "non-finite entries has no singular values to report. The checkpoint is damaged or its training "
            "diverged (--exclude can leave this module out)."
        )


@dataclass(frozen=True, eq=False)
class AdapterModule:
    """One adapter module of any update family: its stored tensors by part, and what its format declares.

    ΔW (m, n) is given by the family's formula (``lorascope.delta.FAMILIES[family]``). The reader arranges
    each part so the formula holds in ΔW's (out, in·kh·kw) orientation: for LoRA, ΔW = scale · up @ down,
    with an embedding's factors transposed and conv factors flattened.
    """

    name: str
    family: str  # a key of lorascope.delta.FAMILIES: lora, dora, loha, lokr, …
    parts: Mapping[str, TensorRef]
    shape: tuple[int, int]  # ΔW (m, n)
    rank: int | None  # nominal r from the format (the scale uses it); None where the family has none
    alpha: float | None
    scale: float
    kind: str = "linear"  # linear | conv | embedding
    source: str = "peft"  # the format: peft | kohya | diffusers | lora-ab | cloneofsimo | …
    fan_in_fan_out: bool = False  # PEFT: the base weight is stored (in, out), GPT-2 Conv1D
    kernel: tuple[int, ...] = ()  # a conv layer's kernel dims (ΔW's columns are in·kh·kw)
    params: Mapping[str, Any] = field(default_factory=dict)  # family parameters the format declares

    @property
    def left(self) -> TensorRef:
        """LoRA's B (m, r), as arranged."""
        return self.parts["up"]

    @property
    def right(self) -> TensorRef:
        """LoRA's A (r, n), as arranged."""
        return self.parts["down"]

    @property
    def magnitude(self) -> TensorRef | None:
        return self.parts.get("magnitude")

    @property
    def tensor_rank(self) -> int:
        """The rank the stored factors have (LoRA's inner dimension), or the nominal rank."""
        if "up" in self.parts:
            return self.parts["up"].shape[1]
        return int(self.rank or 0)


@dataclass
class Weights:
    """A dense checkpoint: every tensor of a model (single file, sharded, or a Hugging Face folder)."""

    path: Path
    format: str
    store: TensorStore
    config: dict[str, Any] | None = None

    kind = "weights"


@dataclass
class Adapter:
    """An adapter: its modules (any update family), plus full tensors it carries (PEFT modules_to_save,
    biases)."""

    path: Path
    format: str
    store: TensorStore
    modules: list[AdapterModule]
    dense: dict[str, TensorRef] = field(default_factory=dict)  # name -> full 2-D+ tensor it replaces
    vectors: dict[str, TensorRef] = field(default_factory=dict)  # name -> 1-D tensor (biases, norms)
    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)

    kind = "adapter"

    @property
    def families(self) -> list[str]:
        """The update families of its modules, in first-seen order."""
        return list(dict.fromkeys(m.family for m in self.modules))
