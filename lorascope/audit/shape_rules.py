"""Owns lorascope's built-in shape table: modules and weight shapes from a config.json without transformers.

The fallback where transformers is not installed (and what ``--shapes rules`` asks for): transformers, which
builds the architecture itself, is the authority wherever it is (``shape_source``). One rule per
``model_type`` in ``ARCHITECTURES`` mirrors the module tree transformers builds, including the defaults its
config classes fill in for keys a config.json leaves out (``DEFAULTS``: Qwen3's head_dim of 128, Gemma's tied
embeddings). A head (``causal-lm``, ``masked-lm``, ``seq-cls``) puts the backbone under the architecture's
prefix, the way ``…ForCausalLM`` wraps ``…Model``.

Mixtral follows the checkpoint layout — one Linear per expert (``block_sparse_moe.experts.{e}.w1/w2/w3``)
and a Linear router ``block_sparse_moe.gate`` — which Mixtral checkpoints and adapters trained on them name;
transformers 5 fuses the experts into 3-D parameters instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import LorascopeError
from .shapes import ModelShapes, ModuleShape, head_of, model_type_of

# Config keys transformers' config classes default when a config.json leaves them out. head_dim None means
# hidden_size // num_attention_heads.
_DECODER = {
    "num_key_value_heads": None,
    "head_dim": None,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(_DECODER),
    "mistral": {**_DECODER, "num_key_value_heads": 8},
    "mixtral": {**_DECODER, "num_key_value_heads": 8, "num_local_experts": 8},
    "qwen2": {**_DECODER, "num_key_value_heads": 32},
    "qwen3": {**_DECODER, "num_key_value_heads": 32, "head_dim": 128},
    "gemma": {**_DECODER, "num_key_value_heads": 16, "head_dim": 256, "tie_word_embeddings": True},
    "gemma2": {**_DECODER, "num_key_value_heads": 4, "head_dim": 256, "tie_word_embeddings": True},
    "phi3": dict(_DECODER),
    "gpt2": {"n_inner": None, "tie_word_embeddings": True, "n_positions": 1024},
    "bert": {"type_vocab_size": 2, "tie_word_embeddings": True, "max_position_embeddings": 512},
    "distilbert": {"tie_word_embeddings": True, "max_position_embeddings": 512},
}


class Cfg:
    """A config dict read with defaults and aliases; a missing required key is a LorascopeError naming it."""

    def __init__(self, data: dict[str, Any], defaults: dict[str, Any], where: str):
        self.data, self.defaults, self.where = data, defaults, where

    def get(self, *keys: str, default: Any = ...) -> Any:
        for key in keys:
            if self.data.get(key) is not None:
                return self.data[key]
        for key in keys:
            if key in self.defaults:
                return self.defaults[key]
        if default is not ...:
            return default
        raise LorascopeError(
            f"{self.where}: key {keys[0]!r} is missing; the {self.data.get('model_type')} shape rules "
            f"need it (also accepted: {', '.join(keys[1:]) or 'no alias'})."
        )

    def int(self, *keys: str, default: Any = ...) -> int:
        value = self.get(*keys, default=default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise LorascopeError(f"{self.where}: {keys[0]!r} must be a positive integer, found {value!r}.")
        return value

    def num_labels(self) -> int:
        if self.data.get("num_labels") is not None:
            return self.int("num_labels")
        id2label = self.data.get("id2label")
        return len(id2label) if isinstance(id2label, dict) and id2label else 2


def linear(name: str, out: int, inn: int, bias: bool = False) -> ModuleShape:
    return ModuleShape(name, "linear", (out, inn), out * inn + (out if bias else 0), out if bias else 0)


def conv1d(name: str, out: int, inn: int) -> ModuleShape:
    """GPT-2's Conv1D: stored (in, out) with a bias; counted in the logical (out, in) orientation."""
    return ModuleShape(name, "conv1d", (out, inn), out * inn + out, out)


def embedding(name: str, num: int, dim: int) -> ModuleShape:
    return ModuleShape(name, "embedding", (num, dim), num * dim)


def norm(name: str, dim: int, bias: bool = False) -> ModuleShape:
    return ModuleShape(name, "other", (dim,), dim * (2 if bias else 1), dim if bias else 0)


def tied_linear(name: str, out: int, inn: int, to: str, bias: bool = False, shared_bias: bool = False):
    """An output layer whose weight is the input embedding (counted once, there); only its bias is its own,
    unless ``shared_bias``: then its bias too belongs to another module (BERT's ``cls.predictions.bias``)."""
    shared = out * inn + (out if shared_bias else 0)
    return ModuleShape(name, "linear", (out, inn), out if bias else 0, out if bias else 0, to, shared)


# A rule builds (backbone modules, head modules, the output head's name) for a config and a head.
Build = Callable[[Cfg, str], tuple]


def _lm_head(cfg: Cfg, head: str, h: int, embedding_name: str) -> tuple[list[ModuleShape], str | None]:
    """The causal-LM head (tied to ``embedding_name`` where the config ties it), or a ``score`` classifier."""
    if head == "seq-cls":
        return [linear("score", cfg.num_labels(), h)], "score"
    if head == "base":
        return [], None
    vocab = cfg.int("vocab_size")
    tied = cfg.get("tie_word_embeddings")
    head = tied_linear("lm_head", vocab, h, embedding_name) if tied else linear("lm_head", vocab, h)
    return [head], "lm_head"


@dataclass(frozen=True)
class DecoderRule:
    """How one Llama-like architecture differs from Llama."""

    qkv_bias: str | bool = "attention_bias"  # a config key, or a fixed answer
    o_bias: str | bool = "attention_bias"
    mlp_bias: str | bool = "mlp_bias"
    fused: bool = False  # phi3: qkv_proj and gate_up_proj
    experts: bool = False  # mixtral: block_sparse_moe with a router and per-expert w1/w2/w3
    qk_norm: bool = False  # qwen3: RMSNorm over head_dim on q and k
    sandwich_norms: bool = False  # gemma2: pre/post feed-forward norms as well

    def build(self, cfg: Cfg, head: str):
        h, heads = cfg.int("hidden_size"), cfg.int("num_attention_heads")
        kv = cfg.int("num_key_value_heads", default=None) or heads
        hd = cfg.int("head_dim", default=None) or h // heads
        inter = cfg.int("intermediate_size")
        flags = (self.qkv_bias, self.o_bias, self.mlp_bias)
        qkv_b, o_b, mlp_b = (bool(cfg.get(v)) if isinstance(v, str) else v for v in flags)
        mods = [embedding("embed_tokens", cfg.int("vocab_size"), h)]
        for i in range(cfg.int("num_hidden_layers")):
            p = f"layers.{i}."
            mods.append(norm(p + "input_layernorm", h))
            if self.fused:
                mods.append(linear(p + "self_attn.qkv_proj", heads * hd + 2 * kv * hd, h, qkv_b))
            else:
                for name, out in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
                    mods.append(linear(f"{p}self_attn.{name}", out, h, qkv_b))
            mods.append(linear(p + "self_attn.o_proj", h, heads * hd, o_b))
            if self.qk_norm:
                mods += [norm(p + "self_attn.q_norm", hd), norm(p + "self_attn.k_norm", hd)]
            mods.append(norm(p + "post_attention_layernorm", h))
            if self.sandwich_norms:
                mods.append(norm(p + "pre_feedforward_layernorm", h))
            if self.experts:
                n_exp = cfg.int("num_local_experts", "num_experts")
                mods.append(linear(p + "block_sparse_moe.gate", n_exp, h))
                for e in range(n_exp):
                    q = f"{p}block_sparse_moe.experts.{e}."
                    for name, out, inn in (("w1", inter, h), ("w2", h, inter), ("w3", inter, h)):
                        mods.append(linear(q + name, out, inn))
            else:
                ups = [("gate_up_proj", 2 * inter)] if self.fused else [("gate_proj", inter),
                                                                         ("up_proj", inter)]  # fmt: skip
                mods += [linear(f"{p}mlp.{name}", out, h, mlp_b) for name, out in ups]
                mods.append(linear(p + "mlp.down_proj", h, inter, mlp_b))
            if self.sandwich_norms:
                mods.append(norm(p + "post_feedforward_layernorm", h))
        mods.append(norm("norm", h))
        return (mods, *_lm_head(cfg, head, h, "model.embed_tokens"))


DECODERS: dict[str, DecoderRule] = {
    "llama": DecoderRule(),
    "mistral": DecoderRule(qkv_bias=False, o_bias=False, mlp_bias=False),
    "mixtral": DecoderRule(qkv_bias=False, o_bias=False, mlp_bias=False, experts=True),
    "qwen2": DecoderRule(qkv_bias=True, o_bias=False, mlp_bias=False),
    "qwen3": DecoderRule(mlp_bias=False, qk_norm=True),
    "gemma": DecoderRule(mlp_bias=False),
    "gemma2": DecoderRule(mlp_bias=False, sandwich_norms=True),
    "phi3": DecoderRule(qkv_bias=False, o_bias=False, mlp_bias=False, fused=True),
}


def _gpt2(cfg: Cfg, head: str):
    h = cfg.int("n_embd", "hidden_size")
    inner = cfg.int("n_inner", default=None) or 4 * h
    positions = cfg.int("n_positions", "max_position_embeddings")
    mods = [embedding("wte", cfg.int("vocab_size"), h), embedding("wpe", positions, h)]
    for i in range(cfg.int("n_layer", "num_hidden_layers")):
        p = f"h.{i}."
        mods += [norm(p + "ln_1", h, bias=True), conv1d(p + "attn.c_attn", 3 * h, h)]
        mods += [conv1d(p + "attn.c_proj", h, h), norm(p + "ln_2", h, bias=True)]
        mods += [conv1d(p + "mlp.c_fc", inner, h), conv1d(p + "mlp.c_proj", h, inner)]
    mods.append(norm("ln_f", h, bias=True))
    return (mods, *_lm_head(cfg, head, h, "transformer.wte"))


def _encoder_embeddings(cfg: Cfg, h: int, token_types: bool) -> list[ModuleShape]:
    mods = [
        embedding("embeddings.word_embeddings", cfg.int("vocab_size"), h),
        embedding("embeddings.position_embeddings", cfg.int("max_position_embeddings"), h),
    ]
    if token_types:
        mods.append(embedding("embeddings.token_type_embeddings", cfg.int("type_vocab_size"), h))
    return [*mods, norm("embeddings.LayerNorm", h, bias=True)]


def _bert(cfg: Cfg, head: str):
    h, inter, vocab = cfg.int("hidden_size"), cfg.int("intermediate_size"), cfg.int("vocab_size")
    mods = _encoder_embeddings(cfg, h, token_types=True)
    for i in range(cfg.int("num_hidden_layers")):
        p = f"encoder.layer.{i}."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            mods.append(linear(f"{p}attention.{name}", h, h, True))
        mods += [norm(p + "attention.output.LayerNorm", h, bias=True)]
        mods += [linear(p + "intermediate.dense", inter, h, True), linear(p + "output.dense", h, inter, True)]
        mods += [norm(p + "output.LayerNorm", h, bias=True)]
    if head != "masked-lm":
        mods.append(linear("pooler.dense", h, h, True))
    if head == "seq-cls":
        return mods, [linear("classifier", cfg.num_labels(), h, True)], "classifier"
    if head == "base":
        return mods, [], None
    # BertLMPredictionHead owns the output bias; the decoder shares it and the word embeddings.
    decoder = "cls.predictions.decoder"
    tied = tied_linear(decoder, vocab, h, "bert.embeddings.word_embeddings", shared_bias=True)
    untied = ModuleShape(decoder, "linear", (vocab, h), vocab * h)
    return (
        mods,
        [
            ModuleShape("cls.predictions", "other", (), vocab, vocab),
            linear("cls.predictions.transform.dense", h, h, True),
            norm("cls.predictions.transform.LayerNorm", h, bias=True),
            tied if cfg.get("tie_word_embeddings") else untied,
        ],
        decoder,
    )


def _distilbert(cfg: Cfg, head: str):
    h, inner = cfg.int("dim", "hidden_size"), cfg.int("hidden_dim", "intermediate_size")
    mods = _encoder_embeddings(cfg, h, token_types=False)
    for i in range(cfg.int("n_layers", "num_hidden_layers")):
        p = f"transformer.layer.{i}."
        for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
            mods.append(linear(f"{p}attention.{name}", h, h, True))
        mods += [norm(p + "sa_layer_norm", h, bias=True), linear(p + "ffn.lin1", inner, h, True)]
        mods += [linear(p + "ffn.lin2", h, inner, True), norm(p + "output_layer_norm", h, bias=True)]
    if head == "seq-cls":
        classifier = [linear("pre_classifier", h, h, True), linear("classifier", cfg.num_labels(), h, True)]
        return mods, classifier, "classifier"
    if head == "base":
        return mods, [], None
    vocab = cfg.int("vocab_size")
    projector = (
        tied_linear("vocab_projector", vocab, h, "distilbert.embeddings.word_embeddings", bias=True)
        if cfg.get("tie_word_embeddings")
        else linear("vocab_projector", vocab, h, True)
    )
    lm = [linear("vocab_transform", h, h, True), norm("vocab_layer_norm", h, bias=True), projector]
    return mods, lm, "vocab_projector"


@dataclass(frozen=True)
class ArchRule:
    """One architecture: its modules, the prefix a head model puts the backbone under, its heads and width."""

    build: Build
    prefix: str  # where a head model keeps the backbone: 'model.' for LlamaForCausalLM
    heads: tuple[str, ...]
    hidden_keys: tuple[str, ...] = ("hidden_size",)


_LM = ("causal-lm", "seq-cls")
ARCHITECTURES: dict[str, ArchRule] = {
    **{name: ArchRule(rule.build, "model.", _LM) for name, rule in DECODERS.items()},
    "gpt2": ArchRule(_gpt2, "transformer.", _LM, ("n_embd", "hidden_size")),
    "bert": ArchRule(_bert, "bert.", ("masked-lm", "seq-cls")),
    "distilbert": ArchRule(_distilbert, "distilbert.", ("masked-lm", "seq-cls"), ("dim", "hidden_size")),
}


def rule_shapes(config: dict[str, Any], head: str | None = None, where: str = "config.json") -> ModelShapes:
    """A model's modules from its config by lorascope's own rules.

    Args:
        config: the parsed config.json.
        head: base | causal-lm | masked-lm | seq-cls; default: what ``architectures`` names.
        where: the file name used in error messages.

    Raises:
        LorascopeError: unknown architecture or head, or a missing or invalid config key.
    """
    arch = model_type_of(config, where)
    if arch not in ARCHITECTURES:
        raise LorascopeError(
            f"{where}: model_type {arch!r} has no shape rules in lorascope (known: "
            f"{', '.join(sorted(ARCHITECTURES))}). Install the hf extra (pip install 'lorascope[hf]') to "
            "take the shapes from transformers instead."
        )
    rule = ARCHITECTURES[arch]
    head = head or head_of(config, arch)
    if head != "base" and head not in rule.heads:
        known = ", ".join(["base", *rule.heads])
        raise LorascopeError(f"{where}: head {head!r} is not known for {arch}; expected one of: {known}.")
    cfg = Cfg(config, DEFAULTS.get(arch, {}), where)
    backbone, head_modules, output = rule.build(cfg, head)
    if head != "base":
        backbone = [replace(m, name=rule.prefix + m.name) for m in backbone]
    return ModelShapes(
        arch=arch,
        head=head,
        modules=(*backbone, *head_modules),
        hidden=cfg.int(*rule.hidden_keys),
        output_head=output,
        shapes_from="rules",
        config=config,
    )
