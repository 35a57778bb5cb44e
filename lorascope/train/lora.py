"""LoRA and DoRA layers, their targets, merging, and the PEFT adapter they save as.

LoRA (Hu et al. 2021, Eq. 3): y = W0 x + s · B A dropout(x), A (r, in) Kaiming-uniform with a = √5,
B (out, r) zero, s = α / r, or α / √r with rsLoRA (Kalajdzievski 2023, Theorem 3.2).

DoRA (Liu et al. 2024, Eq. 5): W' = m · (W0 + s·BA) / ‖W0 + s·BA‖, the norm taken over each output row
of the (out, in) weight and treated as a constant in backward (§4.3), m initialized to the row norms of
W0. The forward is arranged as PEFT 0.21 arranges it, so the two agree to rounding:
y = W0 x + (m/‖·‖ − 1) · W0 x' + (m/‖·‖) · s · B A x', with x' = dropout(x).

Every choice here — initialization, scale, where dropout acts, the DoRA norm, the adapter key names
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` / ``lora_magnitude_vector`` — follows PEFT,
so an adapter trained here loads with ``peft.PeftModel.from_pretrained``. The frozen base of a layer may be
an ``nn.Linear``, a GPT-2 ``Conv1D`` (weight stored (in, out)) or an ``NF4Linear``; ``BASE_KINDS`` says how
to read and write each one's (out, in) weight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.peft_config import lora_config
from ..errors import LorascopeError
from ..names import PEFT_PREFIX
from .nf4 import NF4Linear


@dataclass(frozen=True)
class LoraSpec:
    """One adapter's hyper-parameters."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0  # applied to the input of A, as PEFT
    rslora: bool = False  # s = α / √r instead of α / r
    dora: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def scale(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r


# --- the frozen base: how to read and write its (out, in) weight -------------------------------------------


@dataclass(frozen=True)
class BaseKind:
    weight: Callable[[nn.Module], torch.Tensor]  # (out, in), differentiable view where one exists
    set_weight: Callable[[nn.Module, torch.Tensor], None]  # write an (out, in) weight back
    shape: Callable[[nn.Module], tuple[int, int]]  # (out, in)
    fan_in_fan_out: bool  # PEFT's flag: the stored weight is (in, out)


def _set_linear(m: nn.Module, w: torch.Tensor) -> None:
    m.weight.data = w.to(m.weight.dtype)


def _set_conv1d(m: nn.Module, w: torch.Tensor) -> None:
    m.weight.data = w.T.contiguous().to(m.weight.dtype)


def _set_nf4(m: nn.Module, w: torch.Tensor) -> None:
    raise TypeError("an NF4 base is frozen 4-bit storage; it cannot hold a dense weight")


# Keyed by class name, so GPT-2's Conv1D is recognized without importing transformers.
BASE_KINDS: dict[str, BaseKind] = {
    "Linear": BaseKind(lambda m: m.weight, _set_linear, lambda m: tuple(m.weight.shape), False),
    "Conv1D": BaseKind(lambda m: m.weight.T, _set_conv1d, lambda m: tuple(m.weight.shape[::-1]), True),
    "NF4Linear": BaseKind(
        lambda m: m.dequantized(), _set_nf4, lambda m: (m.out_features, m.in_features), False
    ),
}


def base_kind(module: nn.Module) -> BaseKind | None:
    return BASE_KINDS.get(type(module).__name__)


# --- the layer --------------------------------------------------------------------------------------------


class LoraLinear(nn.Module):
    """A frozen base layer plus a trainable low-rank update (and a magnitude vector with DoRA).

    Parameter names match PEFT's once the adapter name is dropped: ``base_layer``, ``lora_A.weight``,
    ``lora_B.weight``, ``lora_magnitude_vector``.
    """

    def __init__(self, base: nn.Module, spec: LoraSpec):
        super().__init__()
        kind = base_kind(base)
        if kind is None:
            raise TypeError(f"LoRA needs a Linear, Conv1D or NF4Linear base, got {type(base).__name__}")
        self.kind, self.spec, self.scaling = kind, spec, spec.scale
        out_f, in_f = kind.shape(base)
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = kind.weight(base)
        self.lora_A = nn.Linear(in_f, spec.r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(spec.r, out_f, bias=False, device=w.device, dtype=w.dtype)
        self.lora_dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        if spec.dora:
            self.lora_magnitude_vector = nn.Parameter(row_norms(w.detach()))  # (out,)
        self.merged = False
        self._unmerged_weight: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.kind.shape(self.base_layer)

    def delta_weight(self) -> torch.Tensor:
        """s · B @ A, (out, r) @ (r, in) -> (out, in): the LoRA part of the update (for DoRA,
        its direction)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def merged_weight(self) -> torch.Tensor:
        """The (out, in) weight this layer computes with: W0 + s·BA,
        or DoRA's m · (W0 + s·BA) / ‖W0 + s·BA‖."""
        w0 = self.original_weight().detach()
        combined = w0 + self.delta_weight().detach()
        if not self.spec.dora:
            return combined
        return (self.lora_magnitude_vector.detach() / row_norms(combined))[:, None] * combined

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        x_drop = self.lora_dropout(x)
        lora = self.lora_B(
            self.lora_A(x_drop) * self.scaling
        )  # (…, in) -> (…, r), scaled there (cheaper) -> (…, out)
        if not self.spec.dora:
            return result + lora
        w0 = self.kind.weight(self.base_layer)
        norm = row_norms(w0 + self.delta_weight().detach()).detach()  # (out,), a constant in backward (§4.3)
        factor = self.lora_magnitude_vector / norm  # (out,)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            bias = getattr(self.base_layer, "bias", None)
            base_out = result - bias if bias is not None else result
        else:
            base_out = F.linear(x_drop, w0)
        return result + (factor - 1) * base_out + factor * lora

    def merge(self) -> None:
        """Fold the update into the base weight; the original is kept,
        so ``unmerge`` restores it bit for bit."""
        if self.merged:
            return
        if isinstance(self.base_layer, NF4Linear):
            raise LorascopeError(
                "an NF4 base cannot take a merged weight in place; use merge_and_unload, which "
                "replaces it with a dense nn.Linear holding the dequantized weight plus the update."
            )
        new = self.merged_weight()
        self._unmerged_weight = self.base_layer.weight.data
        self.kind.set_weight(self.base_layer, new)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight.data = self._unmerged_weight
        self._unmerged_weight = None
        self.merged = False

    def original_weight(self) -> torch.Tensor:
        """W0 as (out, in), whether or not the update is merged."""
        if not self.merged:
            return self.kind.weight(self.base_layer)
        w = self._unmerged_weight
        return w.T if self.kind.fan_in_fan_out else w


def row_norms(w: torch.Tensor) -> torch.Tensor:
    """‖w_i‖₂ of every row i of an (out, in) weight: DoRA's norm over each output feature, as PEFT."""
    return torch.linalg.vector_norm(w, dim=1)


# --- targets ----------------------------------------------------------------------------------------------

# Presets name module-path suffixes: Llama-style names, and GPT-2's (whose attention and MLP share "c_proj").
PRESETS: dict[str, tuple[str, ...]] = {
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj", "attn.c_attn", "attn.c_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj", "mlp.c_fc", "mlp.c_proj"),
}
ALL_LINEAR = "all-linear"
OUTPUT_LAYERS = ("lm_head",)  # never part of all-linear, as PEFT excludes the output layer


def _suffix_match(name: str, suffixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _matcher(spec: str) -> Callable[[str], bool]:
    """Spec grammar: a preset (attn, mlp, all-linear), names joined by '+' (q_proj+v_proj), or re:<regex>."""
    if spec == ALL_LINEAR:
        return lambda name: name.rpartition(".")[2] not in OUTPUT_LAYERS
    if spec in PRESETS:
        return lambda name: _suffix_match(name, PRESETS[spec])
    if spec.startswith("re:"):
        try:
            pattern = re.compile(spec[3:])
        except re.error as exc:
            raise LorascopeError(
                f"targets {spec!r}: {spec[3:]!r} is not a valid regular expression ({exc})."
            ) from None
        return lambda name: pattern.fullmatch(name) is not None
    names = [n for n in spec.split("+") if n]
    if not names:
        raise LorascopeError(f"targets {spec!r} names no module.")
    return lambda name: _suffix_match(name, names)


def adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module LoRA can wrap (Linear, Conv1D, NF4Linear), by name, outside existing LoRA layers."""
    inside = {n for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    return {
        n: m
        for n, m in model.named_modules()
        if base_kind(m) is not None and not any(n.startswith(p + ".") for p in inside)
    }


def resolve_targets(model: nn.Module, spec: str) -> list[str]:
    """Names of the modules ``spec`` selects, in model order.

    Raises:
        LorascopeError: the spec is malformed or selects nothing; the message lists what exists.
    """
    candidates = adaptable_modules(model)
    match = _matcher(spec)
    names = [n for n in candidates if match(n)]
    if not names:
        leaves = sorted({n.rpartition(".")[2] for n in candidates})
        raise LorascopeError(
            f"targets {spec!r} match no linear module of the model. Use a preset (attn, mlp, all-linear), "
            f"module names joined by '+' (q_proj+v_proj), or re:<regex> matched against full names such as "
            f"{next(iter(candidates), 'model.layers.0.self_attn.q_proj')!r}. Linear modules here end in: "
            f"{', '.join(leaves)}."
        )
    return names


def peft_target_modules(chosen: list[str], all_names: list[str]) -> list[str]:
    """The shortest name suffixes that select exactly ``chosen`` among ``all_names`` under PEFT's matching.

    PEFT selects a module when its name equals a target or ends with '.' + target; for each chosen module
    the shortest suffix (in dotted components) that no unchosen module ends with is kept.
    """
    chosen_set = set(chosen)
    others = [n for n in all_names if n not in chosen_set]
    out: list[str] = []
    for name in chosen:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if not _suffix_match_any(others, suffix):
                break
        if suffix not in out:
            out.append(suffix)
    return sorted(out)


def _suffix_match_any(names: list[str], suffix: str) -> bool:
    return any(n == suffix or n.endswith("." + suffix) for n in names)


# --- applying, merging, saving ----------------------------------------------------------------------------


def inject(model: nn.Module, names: list[str], spec: LoraSpec) -> None:
    """Replace each named module by a ``LoraLinear`` around it (in place); everything else is untouched."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoraLinear(getattr(parent, attr), spec))


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            yield name, m


def adapter_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable adapter parameters in two groups: 'A' (lora_A and DoRA magnitudes) and 'B' (lora_B)."""
    groups: dict[str, list[nn.Parameter]] = {"A": [], "B": []}
    for _, layer in lora_layers(model):
        groups["A"].append(layer.lora_A.weight)
        groups["B"].append(layer.lora_B.weight)
        if layer.spec.dora:
            groups["A"].append(layer.lora_magnitude_vector)
    return groups


def merge(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer by a plain base layer holding the merged weight, and every NF4 layer by a
    dense ``nn.Linear`` with its dequantized weight (in place); returns the model."""
    for name, layer in list(lora_layers(model)):
        weight = layer.merged_weight()
        base = layer.base_layer
        if isinstance(base, NF4Linear):
            base = _dense_linear(base, weight)
        else:
            layer.unmerge()
            layer.kind.set_weight(base, weight)
        _replace(model, name, base)
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]:
        _replace(model, name, _dense_linear(m, m.dequantized()))
    return model


def _dense_linear(q: NF4Linear, weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(
        q.in_features, q.out_features, bias=q.bias is not None, device=weight.device, dtype=weight.dtype
    )
    lin.weight.data = weight.detach().clone()
    if q.bias is not None:
        lin.bias.data = q.bias.detach().clone()
    return lin


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's saved key names (adapter name dropped,
    DoRA's '.weight' stripped)."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model):
        key = PEFT_PREFIX + name
        out[f"{key}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
        out[f"{key}.lora_B.weight"] = layer.lora_B.weight.detach().cpu().contiguous()
        if layer.spec.dora:
            out[f"{key}.lora_magnitude_vector"] = layer.lora_magnitude_vector.detach().cpu().contiguous()
    return out


def adapter_config(
    spec: LoraSpec, target_modules: list[str] | str, base_path: str, fan_in_fan_out: bool = False
) -> dict:
    """``adapter_config.json`` of this spec as PEFT's ``LoraConfig`` reads it (``checkpoint.peft_config``)."""
    return lora_config(
        spec.r,
        spec.alpha,
        target_modules,
        fan_in_fan_out=fan_in_fan_out,
        lora_dropout=spec.dropout,
        use_rslora=spec.rslora,
        use_dora=spec.dora,
        base_model_name_or_path=base_path,
        task_type="CAUSAL_LM",
    )
