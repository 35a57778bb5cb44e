"""Shapes from transformers itself: the architecture instantiated on the meta device (no memory, no download).

Exact for every architecture the installed transformers knows. The head picks the Auto class (``AUTO_CLASSES``):
a config naming ``LlamaForCausalLM`` gets ``AutoModelForCausalLM`` — the output head changes the total (unless
tied) and what PEFT's all-linear leaves out. Needs the ``hf`` extra; nothing here is imported otherwise.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import replace
from typing import Any

from ..errors import LorascopeError
from .layout import ModelShapes, ModuleShape, ParamShape
from .shapes import head_of, model_type_of

AUTO_CLASSES = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq-cls": "AutoModelForSequenceClassification",
}
HIDDEN_KEYS = ("hidden_size", "n_embd", "dim", "d_model")
SEQ_CLS_HEADS = ("score", "classifier")  # PEFT's SEQ_CLS_HEAD_NAMES: what all-linear leaves out without an LM head
# config.json keys that describe files or tooling, not the architecture; transformers must not see some of them
# (auto_map would ask for remote code, which is never run here).
IGNORED_KEYS = ("auto_map", "_name_or_path", "transformers_version", "architectures")


def available() -> bool:
    """Whether transformers can be imported (the hf extra is installed)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def hf_model(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> Any:
    """The model a config describes, instantiated on the meta device (parameters have shapes but no storage)."""
    import torch
    import transformers

    arch = model_type_of(config, where)
    head = head or head_of(config, arch)
    if head not in AUTO_CLASSES:
        raise LorascopeError(f"head {head!r} is not known; expected one of: {', '.join(AUTO_CLASSES)}.")
    kwargs = {k: v for k, v in config.items() if k not in IGNORED_KEYS and k != "model_type"}
    try:
        with _quiet():
            hf_config = transformers.AutoConfig.for_model(arch, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers validates configs with many exception types
        why = " ".join(str(exc).split())
        if "Unrecognized model identifier" in why:
            why, fix = "it does not know this model_type", "Check the model_type in the config, or update transformers."
        else:
            why, fix = why[:300], "Check the values in the config, or use --shapes rules."
        raise LorascopeError(f"{where}: transformers {transformers.__version__} cannot build a config for model_type "
                             f"{arch!r} ({why}). {fix}") from None
    auto = getattr(transformers, AUTO_CLASSES[head])
    try:
        with torch.device("meta"), _quiet():
            return auto.from_config(hf_config)
    except (ValueError, KeyError) as exc:
        raise LorascopeError(f"{where}: transformers {transformers.__version__} has no {AUTO_CLASSES[head]} for "
                             f"model_type {arch!r} ({exc}); pick another --head.") from None
    except Exception as exc:  # noqa: BLE001 - a config transformers accepted but cannot build a model from
        raise LorascopeError(f"{where}: transformers {transformers.__version__} could not build a {arch!r} model from "
                             f"this config ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Check its "
                             "values, or use --shapes rules.") from None


def shapes_of_model(model: Any, arch: str, head: str, config: dict[str, Any]) -> ModelShapes:
    """Every module that owns parameters, with shared (tied) parameters counted once, in definition order."""
    import torch
    from transformers.pytorch_utils import Conv1D

    owner: dict[int, str] = {}
    modules: list[ModuleShape] = []
    fused: list[str] = []
    parameters: list[ParamShape] = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        params = bias = shared = 0
        tied_to = None
        for pname, p in own:
            if id(p) in owner:
                shared += p.numel()
                if pname == "weight":
                    tied_to = owner[id(p)]
                continue
            owner[id(p)] = name
            params += p.numel()
            if pname == "bias":
                bias = p.numel()
            if p.ndim == 3:
                fused.append(f"{name}.{pname} {tuple(p.shape)}")
            if p.ndim == 3 or (p.ndim == 2 and not isinstance(module, _LORA_CLASSES())):
                parameters.append(ParamShape(f"{name}.{pname}", tuple(p.shape)))
        weight = getattr(module, "weight", None)
        if isinstance(module, Conv1D):
            kind, shape = "conv1d", (module.nf, module.weight.shape[0])  # stored (in, out)
        elif isinstance(module, torch.nn.Linear):
            kind, shape = "linear", (module.out_features, module.in_features)
        elif isinstance(module, torch.nn.Embedding):
            kind, shape = "embedding", (module.num_embeddings, module.embedding_dim)
        else:
            kind, shape = "other", tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        modules.append(ModuleShape(name, kind, shape, params, bias, tied_to, shared))
    notes = []
    if fused:
        import transformers

        notes.append(
            f"transformers {transformers.__version__} stores the experts fused as 3-D parameters "
            f"({fused[0]}{' …' if len(fused) > 1 else ''}); PEFT reaches them only as target_parameters, with one "
            "LoRA of rank r·E over all E experts (and 2r for a fused gate_up). --shapes rules counts the checkpoint "
            "layout instead: one Linear per expert, as adapters trained on that layout hold."
        )
    hidden = next((getattr(model.config, k) for k in HIDDEN_KEYS if isinstance(getattr(model.config, k, None), int)), None)
    return ModelShapes(arch=arch, head=head, modules=tuple(modules), hidden=hidden,
                       output_head=_output_head(model, head), shapes_from="hf", notes=tuple(notes),
                       parameters=tuple(parameters), config=config)


def _LORA_CLASSES() -> tuple[type, ...]:
    import torch
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, torch.nn.Embedding, Conv1D)


def _output_head(model: Any, head: str) -> str | None:
    """The module PEFT's all-linear leaves out: the output embeddings, else (classification) score/classifier."""
    out = model.get_output_embeddings()
    if out is None and head == "seq-cls":
        out = next((getattr(model, n) for n in SEQ_CLS_HEADS if getattr(model, n, None) is not None), None)
    if out is None:
        return None
    return next(name for name, module in model.named_modules() if module is out)


def hf_shapes(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> ModelShapes:
    """A model's modules from its config, as the installed transformers builds it on the meta device.

    Raises:
        LorascopeError: transformers does not know the architecture or head, or rejects the config.
    """
    arch = model_type_of(config, where)
    head = head or head_of(config, arch)
    model = hf_model(config, head, where)
    shapes = shapes_of_model(model, arch, head, config)
    defaulted = defaulted_keys(config, model.config)
    if defaulted:
        shown = ", ".join(f"{k}={getattr(model.config, k)}" for k in defaulted)
        shapes = replace(shapes, notes=(f"{where} does not set {', '.join(defaulted)}; transformers' defaults for "
                                        f"{arch} were used ({shown}). Counts follow them.", *shapes.notes))
    return shapes


# Keys that set the shapes of most architectures; transformers fills any that are missing with its defaults.
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def defaulted_keys(config: dict[str, Any], hf_config: Any) -> list[str]:
    """The SHAPE_KEYS the model's config class has but ``config`` sets under neither its name nor its alias."""
    aliases = getattr(hf_config, "attribute_map", {}) or {}
    return [k for k in SHAPE_KEYS
            if isinstance(getattr(hf_config, k, None), int) and k not in config and aliases.get(k) not in config]


@contextlib.contextmanager
def _quiet():
    """transformers' config validation warnings (token ids outside a test vocabulary …) are not ours to show."""
    import logging

    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


__all__ = ["AUTO_CLASSES", "available", "hf_model", "hf_shapes", "shapes_of_model"]
