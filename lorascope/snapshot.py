"""The exact spectra of a PEFT model in memory: its adapter modules, one step's snapshot, its headline
numbers.

``snapshot(model)`` gives one row of per-matrix metrics and the singular values of each adapter module, from
the tensors in memory, by the family's own form (``lorascope.delta.form_from``) and ``lorascope.linalg.svd``
— the factored route for LoRA (QR of B and Aᵀ, SVD of the r×r core), Khatri–Rao for LoHa, Kronecker for
LoKr. No dense ΔW is formed. Pure: no files (``lorascope.training_record`` writes them).

What is recorded per family: LoRA and rsLoRA, ΔW = s·B@A (Hu et al. 2021, Eq. 3); LoHa and LoKr, their exact
updates (``lorascope.delta.lycoris``). DoRA: the low-rank direction update s·B@A — the exact DoRA update
m ⊙ (W0 + sBA)/‖W0 + sBA‖ − W0 is dense and needs W0, so it is left to ``lorascope spectrum BASE ADAPTER``;
the rows say so (family 'dora', a warning in summary.json), as ``lorascope spectrum ADAPTER`` does for a saved
DoRA adapter without its base.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint.peft_types import LOHA_PARTS, LOKR_PARTS
from .delta import form_from
from .errors import LorascopeError
from .linalg import svd
from .metrics import module_metrics
from .names import module_type, split_name, strip_adapter_prefix
from .tables import modules_frame

HEADLINE_PREFIX = "lorascope/"
DORA_NOTE = (
    "DoRA module(s) recorded as their low-rank direction update s·B@A, without the magnitude vector: the "
    "exact DoRA update needs the base weight and is dense (lorascope spectrum BASE ADAPTER computes it)"
)


# ---- one module of a PEFT model -------------------------------------------------------------------------


@dataclass
class Module:
    """One adapter module of a model in memory: its family, parts (as lorascope names them; the model's own
    tensors, detached, in their dtype and on their device) and ΔW's shape."""

    name: str
    family: str
    parts: dict[str, Any]
    scale: float
    shape: tuple[int, int]
    rank: int | None


def _lora(layer: Any, adapter: str, name: str) -> Module:
    if adapter in layer.lora_A:
        a, b = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
        up, down = b.reshape(b.shape[0], -1), a.reshape(a.shape[0], -1)  # conv: (out, r), (r, in·kh·kw)
    else:  # Embedding: A (r, num), B (dim, r); ΔW (num, dim) = s·(B @ A)ᵀ = s·Aᵀ @ Bᵀ
        a, b = layer.lora_embedding_A[adapter].detach(), layer.lora_embedding_B[adapter].detach()
        up, down = a.T, b.T
    family = "dora" if layer.use_dora.get(adapter, False) else "lora"
    return Module(
        name,
        family,
        {"up": up, "down": down},
        float(layer.scaling[adapter]),
        (int(up.shape[0]), int(down.shape[1])),
        int(layer.r[adapter]),
    )


def _lycoris(names: tuple[str, ...], family: str) -> Callable[[Any, str, str], Module]:
    def read(layer: Any, adapter: str, name: str) -> Module:
        parts = {p: getattr(layer, p)[adapter].detach() for p in names if adapter in getattr(layer, p, {})}
        w = layer.get_base_layer().weight
        shape = (int(w.shape[0]), int(np.prod(w.shape[1:])))  # (out, in·kh·kw), as PEFT reshapes ΔW
        return Module(name, family, parts, float(layer.scaling[adapter]), shape, int(layer.r[adapter]))

    return read


def _readers() -> dict[type, Callable[[Any, str, str], Module]]:
    """PEFT layer class -> reader of its adapter tensors (the families lorascope.delta knows)."""
    from peft.tuners.loha import LoHaLayer
    from peft.tuners.lokr import LoKrLayer
    from peft.tuners.lora import LoraLayer

    return {
        LoraLayer: _lora,
        LoHaLayer: _lycoris(LOHA_PARTS, "loha"),  # PEFT's attribute names are the saved part names
        LoKrLayer: _lycoris(LOKR_PARTS, "lokr"),
    }


UNSUPPORTED_LORA = (
    "ParamWrapper",
    "MultiheadAttention",
)  # LoRA on raw parameters / fused attention: no 2-D ΔW here


def adapter_modules(model: Any, adapter: str | None = None) -> list[Module]:
    """Every adapter module of a PEFT model, named as ``lorascope spectrum`` names the saved adapter's.

    Args:
        model: a ``peft.PeftModel`` (or any module holding PEFT tuner layers).
        adapter: the adapter to read (default: the active one).

    Raises:
        LorascopeError: no PEFT adapter layer, several active adapters and none named, a tuner type lorascope
            has no form for, or parameters sharded across processes (DeepSpeed ZeRO-3, FSDP).
    """
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        raise LorascopeError("watching adapter spectra needs PEFT: pip install 'lorascope[hf]'.") from None
    readers = _readers()
    modules, unsupported = [], set()
    for path, layer in model.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        reader = next((r for cls, r in readers.items() if isinstance(layer, cls)), None)
        if reader is None or type(layer).__name__ in UNSUPPORTED_LORA:
            unsupported.add(type(layer).__module__.split(".")[-2] + "." + type(layer).__name__)
            continue
        name = _active(layer, adapter)
        if name is not None:
            modules.append(reader(layer, name, strip_adapter_prefix(path)))
    if unsupported:
        raise LorascopeError(
            "the model has PEFT layers of a kind lorascope has no update form for "
            f"({', '.join(sorted(unsupported))}); it records LoRA, rsLoRA, DoRA (direction), LoHa and LoKr "
            "adapters."
        )
    if not modules:
        raise LorascopeError(
            f"the model ({type(model).__name__}) has no PEFT adapter layer"
            + (f" with an adapter named {adapter!r}" if adapter else "")
            + "; wrap it with peft.get_peft_model first."
        )
    empty = [m.name for m in modules if any(p.numel() == 0 for p in m.parts.values())]
    if empty:
        raise LorascopeError(
            f"the adapter tensors of {empty[0]} (and {len(empty) - 1} more) are empty in this process: the "
            "parameters are sharded across processes (DeepSpeed ZeRO-3 or FSDP), and lorascope reads whole "
            "tensors. Record from a run without parameter sharding, or analyze the saved checkpoints with "
            "lorascope spectrum."
        )
    return modules


def _active(layer: Any, adapter: str | None) -> str | None:
    if adapter is not None:
        return adapter if adapter in _stored(layer) else None
    active = [a for a in layer.active_adapters if a in _stored(layer)]
    if len(active) > 1:
        raise LorascopeError(
            f"several adapters are active ({', '.join(active)}); name the one to record (adapter='…')."
        )
    return active[0] if active else None


def _stored(layer: Any) -> set[str]:
    names: set[str] = set()
    for attr in layer.adapter_layer_names:
        names.update(getattr(layer, attr, {}).keys())
    return names


# ---- the snapshot (pure) --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """One step's spectra: a modules table (the modules.csv schema) and σ per module, descending, float64."""

    step: int
    modules: pd.DataFrame
    spectra: dict[str, np.ndarray]
    families: dict[str, int] = field(default_factory=dict)  # family -> module count
    adapter_parameters: int = 0  # stored adapter tensors read (DoRA's magnitude vectors are not read)

    @property
    def warnings(self) -> list[dict[str, str]]:
        n = self.families.get("dora", 0)
        return [{"name": "*", "reason": f"{n} {DORA_NOTE}"}] if n else []


def snapshot(model: Any, step: int = 0, adapter: str | None = None) -> Snapshot:
    """The exact spectrum of every adapter module of ``model`` as it is now (no files, no dense ΔW).

    Args:
        model: a PEFT model (weights on any device; the SVDs run where the weights are, in float64).
        step: the training step, recorded with the rows.
        adapter: the adapter to read (default: the active one).

    Returns:
        A ``Snapshot``: per-matrix metrics (docs/METRICS.md) as ``lorascope spectrum`` computes them for the
        saved adapter, and σ per module.

    Raises:
        LorascopeError: see ``adapter_modules``.
    """
    import torch

    rows, spectra, families, params = [], {}, {}, 0
    with torch.no_grad(), _one_thread():
        for m in adapter_modules(model, adapter):
            start = time.perf_counter()
            family = (
                "lora" if m.family == "dora" else m.family
            )  # DoRA: the direction update s·B@A (module docstring)
            parts = {k: v.to(torch.float64) for k, v in m.parts.items()}  # one module in float64 at a time
            result = svd(form_from(family, parts, m.scale, name=m.name, shape=m.shape))
            del parts
            sigma = np.asarray(result.s, dtype=np.float64)
            layer, module = split_name(m.name)
            row = {
                "name": m.name,
                "layer": layer,
                "module": module,
                "rows": m.shape[0],
                "cols": m.shape[1],
                "source": "peft",
                "family": m.family,
                "method": result.method,
                "lora_rank": m.rank,
                "scale": m.scale,
            }
            row.update(module_metrics(sigma, m.shape, result.fro_norm, result.complete))
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            spectra[m.name] = sigma
            families[m.family] = families.get(m.family, 0) + 1
            params += sum(int(p.numel()) for p in m.parts.values())
    return Snapshot(step, modules_frame(rows), spectra, families, params)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One CPU thread for torch while the spectra are taken: QR of an (m, r) factor with r ≈ 16 is too small
    to split, and threads only add overhead (and contend with a data loader). Restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def headline(snap: Snapshot) -> dict[str, float]:
    """The numbers a training dashboard shows: medians over modules and the total update norm.

    Keys (prefixed 'lorascope/'): entropy_rank, rank_90 and stable_rank (medians over modules), update_norm
    (sqrt Σ ‖ΔW‖_F² over modules), spectral_norm_max, and entropy_rank/<module type> (median per type).
    """
    m = snap.modules
    if m.empty:
        return {}
    out = {
        "entropy_rank": float(m["entropy_rank"].median()),
        "rank_90": float(m["rank_90"].astype("float64").median()),
        "stable_rank": float(m["stable_rank"].median()),
        "update_norm": float(math.sqrt(float((m["fro_norm"] ** 2).sum()))),
        "spectral_norm_max": float(m["spectral_norm"].max()),
    }
    types = m["module"].map(module_type)
    for t, group in m.groupby(types, sort=True):
        out[f"entropy_rank/{t}"] = float(group["entropy_rank"].median())
    return {HEADLINE_PREFIX + k: v for k, v in out.items()}
