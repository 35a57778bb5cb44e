"""Owns where a model's shapes come from: the one shape source of the audit, and all of its file reading.

A config.json (or a model folder) is built by transformers on the meta device — no memory, no download —
wherever transformers is installed: it is the authority, exact for every architecture it knows, and its
errors stand. Only where it is absent does lorascope's built-in table (``shape_rules``) stand in, and the
result carries a note that says so; ``--shapes rules`` asks for the table explicitly. A checkpoint without a
config has nothing for transformers to build from: its tensor headers are read (``headers``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..checkpoint import open_store
from ..checkpoint.peft import is_peft_folder
from ..checkpoint.configs import read_config as read_config  # the one config reader
from ..errors import LorascopeError
from .headers import store_shapes
from .shape_rules import ARCHITECTURES, rule_shapes
from .shapes import ModelShapes, ModuleShape, ParamShape, head_of, model_type_of

SHAPE_SOURCES = ("auto", "hf", "rules")  # auto: transformers where installed, else the built-in table
AUTO_CLASSES = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq-cls": "AutoModelForSequenceClassification",
}
HIDDEN_KEYS = ("hidden_size", "n_embd", "dim", "d_model")
SEQ_CLS_HEADS = ("score", "classifier")  # PEFT's SEQ_CLS_HEAD_NAMES: all-linear leaves them out (no LM head)
# config.json keys that describe files or tooling, not the architecture; transformers must not see some of
# them (auto_map would ask for remote code, which is never run here).
IGNORED_KEYS = ("auto_map", "_name_or_path", "transformers_version", "architectures", "model_type")
# Keys that set the shapes of most architectures; transformers fills any that are missing with its defaults.
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def source_kind(path: str | Path) -> str:
    """'adapter' (a PEFT folder), 'config' (a .json file or a folder with config.json) or 'checkpoint'.

    Raises:
        LorascopeError: the path does not exist.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise LorascopeError(
            f"{p} does not exist; give a config.json, a model folder, a checkpoint or a PEFT adapter folder."
        )
    if is_peft_folder(p):
        return "adapter"
    if p.is_file() and p.suffix == ".json" and not p.name.endswith(".index.json"):
        return "config"
    return "config" if p.is_dir() and (p / "config.json").is_file() else "checkpoint"


def load_model(path: str | Path, shapes: str = "auto", head: str | None = None) -> ModelShapes:
    """Module shapes from a config.json, a model folder (its config.json) or a checkpoint's headers.

    Raises:
        LorascopeError: a missing or unreadable source, an adapter folder given as a model, an unknown
            architecture.
    """
    kind = source_kind(path)
    if kind == "adapter":
        raise LorascopeError(
            f"{path} is a PEFT adapter folder; give the base model's config.json or folder here."
        )
    if kind == "checkpoint":
        return store_shapes(open_store(path), str(path))
    p = Path(path).expanduser()
    return shapes_from_config(read_config(p), shapes, head, str(p / "config.json" if p.is_dir() else p))


def shapes_from_config(
    config: dict[str, Any], shapes: str = "auto", head: str | None = None, where: str = "config.json"
) -> ModelShapes:
    """Module shapes of the model a config describes: by transformers (``hf``; ``auto`` where it is installed)
    or by lorascope's built-in table (``rules``; ``auto`` where transformers is absent, with a note).

    Raises:
        LorascopeError: an unknown ``shapes``; ``hf`` without transformers; what transformers or the table
            refuse (an unknown architecture or head, a bad config value).
    """
    if shapes not in SHAPE_SOURCES:
        raise LorascopeError(
            f"--shapes {shapes!r} is not known; expected one of: {', '.join(SHAPE_SOURCES)}."
        )
    if shapes == "rules":
        return rule_shapes(config, head, where)
    if transformers_available():
        return hf_shapes(config, head, where)
    if shapes == "hf":
        raise LorascopeError(
            "--shapes hf needs transformers: pip install 'lorascope[hf]' (or use --shapes rules)."
        )
    model = rule_shapes(config, head, where)
    note = (
        f"transformers is not installed, so the shapes come from lorascope's built-in table of "
        f"{len(ARCHITECTURES)} architectures; pip install 'lorascope[hf]' to have transformers build the "
        "model."
    )
    return replace(model, notes=(note, *model.notes))


def transformers_available() -> bool:
    """Whether transformers can be imported (the hf extra is installed)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def hf_model(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> Any:
    """The model a config describes, built by transformers on the meta device (shapes, no storage).

    The head picks the Auto class (``AUTO_CLASSES``): a config naming ``LlamaForCausalLM`` gets
    ``AutoModelForCausalLM``.

    Raises:
        LorascopeError: transformers does not know the architecture or head, or rejects the config.
    """
    import torch
    import transformers

    arch = model_type_of(config, where)
    head = head or head_of(config, arch)
    if head not in AUTO_CLASSES:
        raise LorascopeError(f"head {head!r} is not known; expected one of: {', '.join(AUTO_CLASSES)}.")
    version = f"transformers {transformers.__version__}"
    try:
        with _quiet():
            hf_config = transformers.AutoConfig.for_model(
                arch, **{k: v for k, v in config.items() if k not in IGNORED_KEYS}
            )
    except Exception as exc:  # noqa: BLE001 - transformers validates configs with many exception types
        why = " ".join(str(exc).split())
        if "Unrecognized model identifier" in why:
            why, fix = "it does not know this model_type", "Check the model_type in the config, or update it."
        else:
            why, fix = why[:300], "Check the values in the config, or use --shapes rules."
        raise LorascopeError(
            f"{where}: {version} cannot build a config for model_type {arch!r} ({why}). {fix}"
        ) from None
    auto = getattr(transformers, AUTO_CLASSES[head])
    try:
        with torch.device("meta"), _quiet():
            return auto.from_config(hf_config)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise _unbuildable(where, version, arch, exc) from None
        raise LorascopeError(
            f"{where}: {version} has no {AUTO_CLASSES[head]} for model_type {arch!r}; pick another --head."
        ) from None
    except Exception as exc:  # noqa: BLE001 - a config transformers accepted but cannot build a model from
        raise _unbuildable(where, version, arch, exc) from None


def _unbuildable(where: str, version: str, arch: str, exc: Exception) -> LorascopeError:
    return LorascopeError(
        f"{where}: {version} could not build a {arch!r} model from this config ({type(exc).__name__}: "
        f"{' '.join(str(exc).split())[:300]}). Check its values, or use --shapes rules."
    )


def hf_shapes(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> ModelShapes:
    """A model's modules from its config, as the installed transformers builds it on the meta device.

    Raises:
        LorascopeError: transformers does not know the architecture or head, or rejects the config.
    """
    arch = model_type_of(config, where)
    head = head or head_of(config, arch)
    model = hf_model(config, head, where)
    shapes = shapes_of_model(model, arch, head, config)
    aliases = getattr(model.config, "attribute_map", {}) or {}
    defaulted = [k for k in SHAPE_KEYS if isinstance(getattr(model.config, k, None), int)
                 and k not in config and aliases.get(k) not in config]  # fmt: skip
    if defaulted:
        shown = ", ".join(f"{k}={getattr(model.config, k)}" for k in defaulted)
        note = f"{where} does not set {', '.join(defaulted)}; transformers' defaults for {arch} were used "
        shapes = replace(shapes, notes=(f"{note}({shown}). Counts follow them.", *shapes.notes))
    return shapes


def shapes_of_model(model: Any, arch: str, head: str, config: dict[str, Any]) -> ModelShapes:
    """Every module of a torch model that owns parameters, shared (tied) parameters counted once, in
    definition order; 3-D parameters and 2-D ones outside LoRA-wrappable layers as ``ParamShape``."""
    import torch
    from transformers.pytorch_utils import Conv1D

    lora_classes = (torch.nn.Linear, torch.nn.Embedding, Conv1D)
    owner: dict[int, str] = {}  # id of a parameter -> the first module that holds it
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
                tied_to = owner[id(p)] if pname == "weight" else tied_to
                continue
            owner[id(p)] = name
            params += p.numel()
            bias = p.numel() if pname == "bias" else bias
            if p.ndim == 3:
                fused.append(f"{name}.{pname} {tuple(p.shape)}")
            if p.ndim == 3 or (p.ndim == 2 and not isinstance(module, lora_classes)):
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
    notes = ()
    if fused:
        import transformers

        notes = (
            f"transformers {transformers.__version__} stores the experts fused as 3-D parameters ({fused[0]}"
            f"{' …' if len(fused) > 1 else ''}); PEFT reaches them only as target_parameters, with one LoRA "
            "of rank r·E over all E experts (and 2r for a fused gate_up). --shapes rules counts the "
            "checkpoint layout instead: one Linear per expert, as adapters trained on that layout hold.",
        )
    hidden = next((v for k in HIDDEN_KEYS if isinstance(v := getattr(model.config, k, None), int)), None)
    return ModelShapes(
        arch=arch,
        head=head,
        modules=tuple(modules),
        hidden=hidden,
        output_head=_output_head(model, head),
        shapes_from="hf",
        notes=notes,
        parameters=tuple(parameters),
        config=config,
    )


def _output_head(model: Any, head: str) -> str | None:
    """The module PEFT's all-linear leaves out: the output embeddings, else score/classifier (seq-cls)."""
    out = model.get_output_embeddings()
    if out is None and head == "seq-cls":
        out = next((getattr(model, n) for n in SEQ_CLS_HEADS if getattr(model, n, None) is not None), None)
    return None if out is None else next(name for name, module in model.named_modules() if module is out)


@contextlib.contextmanager
def _quiet():
    """transformers' config validation warnings (token ids outside a test vocabulary …): not ours to show."""
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
