"""Owns where a model's shapes come from: the one shape source of the audit, and all of its file reading.

A config.json (or a model folder) is built by transformers on the meta device — no memory, no download —
wherever transformers is installed: it is the authority, exact for every architecture it knows, and its
errors stand. Only where it is absent does lorascope's built-in rule stand in (``rule_shapes``: the Llama
family of decoders from their config fields), and the result carries a note that says so; ``--shapes rules``
asks for the rule explicitly. A checkpoint without a config has nothing for transformers to build from: its
tensor headers are read (``headers``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..checkpoint import open_store
from ..checkpoint.configs import read_config
from ..checkpoint.peft import is_peft_folder
from ..errors import LorascopeError
from .headers import store_shapes
from .shapes import ModelShapes, ModuleShape, ParamShape, head_of, model_type_of

SHAPE_SOURCES = ("auto", "hf", "rules")  # auto: transformers where installed, else the built-in rule
AUTO_CLASSES = {"base": "AutoModel", "causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
                "seq-cls": "AutoModelForSequenceClassification"}  # fmt: skip
HIDDEN_KEYS = ("hidden_size", "n_embd", "dim", "d_model")
SEQ_CLS_HEADS = ("score", "classifier")  # PEFT's SEQ_CLS_HEAD_NAMES: all-linear leaves them out (no LM head)
# config.json keys about files or tooling, not the architecture (auto_map would ask for remote code)
IGNORED_KEYS = ("auto_map", "_name_or_path", "transformers_version", "architectures", "model_type")
# Keys that set the shapes of most architectures; transformers fills any that are missing with its defaults.
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# The built-in rule's architectures: model_type -> (what its transformers config class fills in for keys a
# config.json leaves out, how its layers differ from a bias-free Llama: the config keys it reads for biases,
# q/k/v always biased, q/k RMSNorm, sandwich norms, fused qkv_proj and gate_up_proj). Mixtral's experts
# (num_local_experts) follow the checkpoint layout, one Linear per expert, as adapters trained on it hold.
DECODERS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "llama": ({}, ("attention_bias", "mlp_bias")),
    "mistral": ({"num_key_value_heads": 8}, ()),
    "mixtral": ({"num_key_value_heads": 8, "num_local_experts": 8}, ()),
    "qwen2": ({"num_key_value_heads": 32}, ("qkv_bias",)),
    "qwen3": ({"num_key_value_heads": 32, "head_dim": 128}, ("attention_bias", "qk_norm")),
    "gemma": ({"num_key_value_heads": 16, "head_dim": 256, "tie_word_embeddings": True}, ("attention_bias",)),
    "gemma2": ({"num_key_value_heads": 4, "head_dim": 256, "tie_word_embeddings": True},
               ("attention_bias", "sandwich_norms")),
    "phi3": ({}, ("fused",)),
}  # fmt: skip
RULE_HEADS = ("base", "causal-lm", "seq-cls")
EXPERTS_NOTE = (
    "experts are counted as one Linear per expert (w1, w2, w3), as transformers 4.x builds Mixtral and as "
    "adapters trained on it hold them; transformers 5 fuses each layer's experts into parameters, and counts "
    "on a model it builds differ: install the transformers you train with (pip install 'lorascope[hf]')."
)


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
    kind, p = source_kind(path), Path(path).expanduser()
    if kind == "adapter":
        raise LorascopeError(
            f"{p} is a PEFT adapter folder; give the base model's config.json or folder here."
        )
    if kind == "checkpoint":
        return store_shapes(open_store(p), str(p))
    return shapes_from_config(read_config(p), shapes, head, str(p / "config.json" if p.is_dir() else p))


def shapes_from_config(
    config: dict[str, Any], shapes: str = "auto", head: str | None = None, where: str = "config.json"
) -> ModelShapes:
    """Module shapes of the model a config describes: by transformers (``hf``; ``auto`` where it is installed)
    or by the built-in rule (``rules``; ``auto`` where transformers is absent, with a note).

    Raises:
        LorascopeError: an unknown ``shapes``; ``hf`` without transformers; what transformers or the rule
            refuse (an unknown architecture or head, a bad config value).
    """
    if shapes not in SHAPE_SOURCES:
        raise LorascopeError(
            f"--shapes {shapes!r} is not known; expected one of: {', '.join(SHAPE_SOURCES)}."
        )
    if shapes != "rules" and transformers_available():
        return hf_shapes(config, head, where)
    if shapes == "hf":
        raise LorascopeError(
            "--shapes hf needs transformers: pip install 'lorascope[hf]' (or use --shapes rules)."
        )
    model = rule_shapes(config, head, where)
    if shapes == "rules":
        return model
    note = (
        "transformers is not installed, so the shapes come from lorascope's built-in rule for the "
        f"{len(DECODERS)} Llama-family architectures; pip install 'lorascope[hf]' to have transformers build "
        "the model."
    )
    return replace(model, notes=(note, *model.notes))


def transformers_available() -> bool:
    """Whether transformers can be imported (the hf extra is installed)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def hf_shapes(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> ModelShapes:
    """A model's modules from its config, as the installed transformers builds it on the meta device; the head
    picks the Auto class (``AUTO_CLASSES``), by default the one ``architectures`` names.

    Raises:
        LorascopeError: transformers does not know the architecture or head, or rejects the config.
    """
    import torch
    import transformers

    arch = model_type_of(config, where)
    head, version = head or head_of(config, arch), f"transformers {transformers.__version__}"
    if head not in AUTO_CLASSES:
        raise LorascopeError(f"head {head!r} is not known; expected one of: {', '.join(AUTO_CLASSES)}.")
    try:
        with _quiet():
            kwargs = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
            hf_config = transformers.AutoConfig.for_model(arch, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers validates configs with many exception types
        why, fix = " ".join(str(exc).split())[:300], "Check the values in the config, or use --shapes rules."
        if "Unrecognized model identifier" in why:
            why, fix = "it does not know this model_type", "Check the model_type in the config, or update it."
        raise LorascopeError(
            f"{where}: {version} cannot build a config for model_type {arch!r} ({why}). {fix}"
        ) from None
    try:
        with torch.device("meta"), _quiet():
            model = getattr(transformers, AUTO_CLASSES[head]).from_config(hf_config)
    except Exception as exc:  # noqa: BLE001 - a config transformers accepted but cannot build a model from
        if "Unrecognized configuration class" in str(exc):
            missing = f"{version} has no {AUTO_CLASSES[head]} for model_type {arch!r}"
            raise LorascopeError(f"{where}: {missing}; pick another --head.") from None
        raise LorascopeError(
            f"{where}: {version} could not build a {arch!r} model from this config ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}). Check its values, or use --shapes rules."
        ) from None
    shapes = shapes_of_model(model, arch, head)
    aliases = getattr(model.config, "attribute_map", {}) or {}
    defaulted = [k for k in SHAPE_KEYS if isinstance(getattr(model.config, k, None), int)
                 and k not in config and aliases.get(k) not in config]  # fmt: skip
    if defaulted:
        shown = ", ".join(f"{k}={getattr(model.config, k)}" for k in defaulted)
        note = f"{where} does not set {', '.join(defaulted)}; transformers' defaults for {arch} were used "
        shapes = replace(shapes, notes=(f"{note}({shown}). Counts follow them.", *shapes.notes))
    return shapes


def shapes_of_model(model: Any, arch: str, head: str) -> ModelShapes:
    """Every module of a torch model that owns parameters, shared (tied) parameters counted once, in
    definition order; 3-D parameters and 2-D ones outside LoRA-wrappable layers as ``ParamShape``."""
    import torch
    import transformers
    from transformers.pytorch_utils import Conv1D

    owner: dict[int, str] = {}  # id of a parameter -> the first module that holds it
    modules, parameters = [], []
    for name, module in model.named_modules():
        if not (own := list(module.named_parameters(recurse=False))):
            continue
        params = bias = shared = 0
        tied_to = None
        for pname, p in own:
            if id(p) in owner:  # a tied weight (or a shared bias) another module owns
                shared += p.numel()
                tied_to = owner[id(p)] if pname == "weight" else tied_to
                continue
            owner[id(p)], params = name, params + p.numel()
            bias = p.numel() if pname == "bias" else bias
            if p.ndim == 3 or (
                p.ndim == 2 and not isinstance(module, (torch.nn.Linear, torch.nn.Embedding, Conv1D))
            ):
                parameters.append(ParamShape(f"{name}.{pname}", tuple(p.shape)))
        if isinstance(module, Conv1D):
            kind, shape = "conv1d", (module.nf, module.weight.shape[0])  # stored (in, out)
        elif isinstance(module, torch.nn.Linear):
            kind, shape = "linear", (module.out_features, module.in_features)
        elif isinstance(module, torch.nn.Embedding):
            kind, shape = "embedding", (module.num_embeddings, module.embedding_dim)
        else:
            weight = getattr(module, "weight", None)
            kind, shape = "other", tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        modules.append(ModuleShape(name, kind, shape, params, bias, tied_to, shared))
    fused = [f"{p.name} {p.shape}" for p in parameters if len(p.shape) == 3]
    notes = (
        f"transformers {transformers.__version__} stores the experts fused as 3-D parameters ({fused[0]}"
        f"{' …' if len(fused) > 1 else ''}); PEFT reaches them only as target_parameters, with one LoRA of "
        "rank r·E over all E experts (and 2r for a fused gate_up). --shapes rules counts the checkpoint "
        "layout instead: one Linear per expert, as adapters trained on that layout hold.",
    ) if fused else ()  # fmt: skip
    output = model.get_output_embeddings()  # what PEFT's all-linear leaves out: else score / classifier
    if output is None and head == "seq-cls":
        output = next((getattr(model, n) for n in SEQ_CLS_HEADS if getattr(model, n, None) is not None), None)
    output_head = (
        next((n for n, m in model.named_modules() if m is output), None) if output is not None else None
    )
    hidden = next((v for k in HIDDEN_KEYS if isinstance(v := getattr(model.config, k, None), int)), None)
    return ModelShapes(arch, head, tuple(modules), hidden, output_head, "hf", notes, tuple(parameters))


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


def rule_shapes(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> ModelShapes:
    """A model's modules from its config by lorascope's one rule for the Llama family (``DECODERS``): the
    module tree transformers builds from hidden_size, intermediate_size, num_attention_heads,
    num_key_value_heads, head_dim, vocab_size, num_hidden_layers, num_local_experts, the bias keys and
    tie_word_embeddings. A head puts the backbone under ``model.``, as ``…ForCausalLM`` wraps ``…Model``.

    Raises:
        LorascopeError: an architecture or head outside the rule, or a missing or invalid config key.
    """
    arch = model_type_of(config, where)
    if arch not in DECODERS:
        raise LorascopeError(
            f"{where}: model_type {arch!r} has no shape rules in lorascope (known: {', '.join(DECODERS)}). "
            "Install the hf extra (pip install 'lorascope[hf]') to take the shapes from transformers instead."
        )
    head = head or head_of(config, arch)
    if head not in RULE_HEADS:
        expected = ", ".join(RULE_HEADS)
        raise LorascopeError(f"{where}: head {head!r} is not known for {arch}; expected one of: {expected}.")
    defaults, quirks = DECODERS[arch]
    c = {**defaults, **{k: v for k, v in config.items() if v is not None}}

    def size(key: str, default: Any = ...) -> Any:
        value = c.get(key, default)
        if value is ...:
            raise LorascopeError(f"{where}: key {key!r} is missing; the {arch} shape rules need it.")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise LorascopeError(f"{where}: {key!r} must be a positive integer, found {value!r}.")
        return value

    def linear(name: str, out: int, inn: int, bias: bool = False) -> ModuleShape:
        return ModuleShape(name, "linear", (out, inn), out * inn + out * bias, out * bias)

    def norm(name: str, dim: int) -> ModuleShape:
        return ModuleShape(name, "other", (dim,), dim)

    h, heads, inter, vocab = (size(k) for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                                  "vocab_size"))  # fmt: skip
    q, kv = heads * (hd := size("head_dim", None) or h // heads), size("num_key_value_heads", heads) * hd
    experts, fused = size("num_local_experts", None), "fused" in quirks
    o_bias, mlp_bias = (k in quirks and bool(c.get(k)) for k in ("attention_bias", "mlp_bias"))
    qkv_bias = o_bias or "qkv_bias" in quirks
    sandwich = (
        ("pre_feedforward_layernorm", "post_feedforward_layernorm") if "sandwich_norms" in quirks else ()
    )
    attn = [("qkv_proj", q + 2 * kv)] if fused else [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]
    ups = [("gate_up_proj", 2 * inter)] if fused else [("gate_proj", inter), ("up_proj", inter)]
    mods = [ModuleShape("embed_tokens", "embedding", (vocab, h), vocab * h)]
    for p in (f"layers.{i}." for i in range(size("num_hidden_layers"))):
        mods += [
            norm(p + "input_layernorm", h),
            *(linear(f"{p}self_attn.{n}", o, h, qkv_bias) for n, o in attn),
        ]
        mods += [linear(p + "self_attn.o_proj", h, q, o_bias)]
        mods += [norm(f"{p}self_attn.{n}_norm", hd) for n in ("q", "k") if "qk_norm" in quirks]
        mods += [norm(p + n, h) for n in ("post_attention_layernorm", *sandwich[:1])]
        if experts:  # a router, and per expert w1 (gate), w2 (down), w3 (up)
            mods.append(linear(p + "block_sparse_moe.gate", experts, h))
            for e in (f"{p}block_sparse_moe.experts.{e}." for e in range(experts)):
                mods += [linear(e + "w1", inter, h), linear(e + "w2", h, inter), linear(e + "w3", inter, h)]
        else:
            mods += [linear(f"{p}mlp.{n}", o, h, mlp_bias) for n, o in ups]
            mods += [linear(p + "mlp.down_proj", h, inter, mlp_bias)]
        mods += [norm(p + n, h) for n in sandwich[1:]]
    mods.append(norm("norm", h))
    notes = (EXPERTS_NOTE,) if experts else ()
    if head == "base":
        return ModelShapes(arch, head, tuple(mods), h, notes=notes)
    mods = [replace(m, name="model." + m.name) for m in mods]
    if head == "seq-cls":
        labels = size("num_labels", None) or len(c.get("id2label") or {}) or 2
        return ModelShapes(arch, head, (*mods, linear("score", labels, h)), h, "score", notes=notes)
    tied = ModuleShape("lm_head", "linear", (vocab, h), 0, 0, "model.embed_tokens", vocab * h)
    lm_head = tied if c.get("tie_word_embeddings") else linear("lm_head", vocab, h)
    return ModelShapes(arch, head, (*mods, lm_head), h, "lm_head", notes=notes)
