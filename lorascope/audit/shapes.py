"""Owns what a model is made of, for counting: its named modules with weight shapes and tied weights.

The data types every audit step shares and pure operations on them: totals, module types and roles,
re-layering, the head a config names. Where shapes come from is ``shape_source``'s concern.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import LorascopeError
from ..names import module_type, split_name

LORA_KINDS = ("linear", "conv1d", "embedding")  # what LoRA can wrap (PEFT refuses other targets)
KINDS = (*LORA_KINDS, "other")
# The head an `architectures` entry names, by the end of its class name.
HEAD_SUFFIXES = (("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"),
                 ("ForSequenceClassification", "seq-cls"), ("Model", "base"))  # fmt: skip
CAUSAL_LM_BY_DEFAULT = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2")
# Role of a module from the end of its type, most specific first; roles drive the common-mistake
# recomputations (square k/v, square MLP, tied head) and nothing else.
ROLE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("attention.self.query", "q"), ("attention.self.key", "k"), ("attention.self.value", "v"),
    ("attention.output.dense", "o"), ("intermediate.dense", "up"), ("output.dense", "down"),
    ("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o"), ("qkv_proj", "qkv"),
    ("q_lin", "q"), ("k_lin", "k"), ("v_lin", "v"), ("out_lin", "o"),
    ("attn.c_attn", "qkv"), ("attn.c_proj", "o"), ("mlp.c_fc", "up"), ("mlp.c_proj", "down"),
    ("gate_up_proj", "gate_up"), ("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down"),
    ("experts.*.w1", "gate"), ("experts.*.w3", "up"), ("experts.*.w2", "down"),
    ("ffn.lin1", "up"), ("ffn.lin2", "down"), ("lm_head", "head"), ("vocab_projector", "head"),
    ("predictions.decoder", "head"),
)  # fmt: skip
ATTENTION_ROLES = ("q", "k", "v", "o", "qkv")
MLP_ROLES = ("gate", "up", "down", "gate_up")


def type_of(name: str) -> str:
    """The module type a name groups under: the path after its layer index, inner integers as '*'."""
    return module_type(split_name(name)[1])


def layer_of(name: str) -> int | None:
    """The layer index of a name (its first integer component), or None outside the layer stack."""
    return split_name(name)[0]


def role_of(name: str) -> str | None:
    """'q', 'k', 'v', 'o', 'qkv', 'gate', 'up', 'down', 'gate_up', 'head' (an output head) or None."""
    typed = module_type(name)
    return next((r for s, r in ROLE_SUFFIXES if typed == s or typed.endswith("." + s)), None)


@dataclass(frozen=True)
class ModuleShape:
    """One module that owns parameters.

    ``shape`` is (out_features, in_features) for linear and Conv1D layers — Conv1D stores its weight
    (in, out), but the logical orientation is used everywhere — and (num_embeddings, embedding_dim) for
    embeddings; for other modules it is the weight's shape or ().
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int  # parameters this module owns and the model total counts (a tied weight is not counted here)
    bias: int = 0  # elements of its own bias vector (trainable with bias="all" / "lora_only")
    tied_to: str | None = None  # the module whose weight this one shares (tied embeddings)
    shared: int = 0  # elements of parameters another module owns that it uses (a tied weight, a shared bias)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in LORA_KINDS and len(self.shape) != 2:
            raise ValueError(f"shape of a {self.kind} module must be 2-D, got {self.shape} for {self.name}")

    @property
    def role(self) -> str | None:
        return role_of(self.name)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.shape) if self.shape else 0


@dataclass(frozen=True)
class ParamShape:
    """A parameter that PEFT can only reach with ``target_parameters`` (lora.ParamWrapper): a fused stack of
    experts (E, out, in) or a router weight held by a module that is not a Linear layer."""

    name: str  # module path + '.' + parameter name: model.layers.0.mlp.experts.gate_up_proj
    shape: tuple[int, ...]

    @property
    def experts(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1


@dataclass(frozen=True)
class ModelShapes:
    """A model's modules in definition order, as counted (each parameter once, as ``model.parameters()``)."""

    arch: str  # model_type of the config ('llama', 'gpt2', …) or 'checkpoint' for header-only sources
    head: str  # base | causal-lm | masked-lm | seq-cls | unknown
    modules: tuple[ModuleShape, ...]
    hidden: int | None = None  # d_model, the width a "d×d" assumption uses
    output_head: str | None = None  # what PEFT's all-linear leaves out (the output embedding / classifier)
    shapes_from: str = "rules"  # hf (transformers) | rules (lorascope's table) | headers (a checkpoint's)
    notes: tuple[str, ...] = ()
    parameters: tuple[ParamShape, ...] = ()  # reachable only as target_parameters (fused experts, routers)

    @property
    def total(self) -> int:
        """Model parameters with tied weights counted once."""
        return sum(m.params for m in self.modules)

    @property
    def tied(self) -> tuple[ModuleShape, ...]:
        return tuple(m for m in self.modules if m.tied_to is not None)

    @property
    def num_layers(self) -> int:
        return len({layer_of(m.name) for m in self.modules} - {None})

    def by_name(self) -> dict[str, ModuleShape]:
        return {m.name: m for m in self.modules}

    def with_modules(self, modules: Iterable[ModuleShape], **changes) -> ModelShapes:
        return replace(self, modules=tuple(modules), **changes)


def model_type_of(config: dict[str, Any], where: str) -> str:
    """The ``model_type`` a config.json names.

    Raises:
        LorascopeError: it is missing or not a string.
    """
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise LorascopeError(
            f"{where}: key 'model_type' is missing or not a string; a config.json names its "
            'architecture there (e.g. "model_type": "llama").'
        )
    return model_type


def head_of(config: dict[str, Any], arch: str) -> str:
    """The head a config's ``architectures`` names (LlamaForCausalLM -> 'causal-lm'); without one, a
    decoder-only architecture is a causal LM and anything else its base model."""
    names = config.get("architectures")
    for cls in names if isinstance(names, list) else []:
        for suffix, head in HEAD_SUFFIXES:
            if isinstance(cls, str) and cls.endswith(suffix):
                return head
    return "causal-lm" if arch in CAUSAL_LM_BY_DEFAULT else "base"


def relayer(model: ModelShapes, n_layers: int) -> ModelShapes:
    """The same model with its layer stack replaced by ``n_layers`` copies of its first layer (the
    'different layer count' mistake); modules outside the stack stay where they are."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
    first = min((i for m in model.modules if (i := layer_of(m.name)) is not None), default=None)

    def stack(items: tuple) -> list:
        start = next((i for i, m in enumerate(items) if layer_of(m.name) is not None), len(items))
        template = [m for m in items if layer_of(m.name) == first]
        copies = [replace(t, name=_renumbered(t.name, i)) for i in range(n_layers) for t in template]
        return [*items[:start], *copies, *(m for m in items[start:] if layer_of(m.name) is None)]

    if first is None:
        return model
    return model.with_modules(stack(model.modules), parameters=tuple(stack(model.parameters)))


def _renumbered(name: str, new: int) -> str:
    parts = name.split(".")
    i = next(i for i, p in enumerate(parts) if p.isdigit())
    return ".".join([*parts[:i], str(new), *parts[i + 1 :]])
