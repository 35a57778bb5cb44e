"""lorascope's own shape rules: a model's modules and weight shapes from its config.json, without transformers.

One rule per ``model_type`` in ``ARCHITECTURES`` (llama, mistral, mixtral, qwen2, qwen3, gemma, gemma2, phi3,
gpt2, bert, distilbert). Each mirrors the module tree transformers builds for that architecture, including
the defaults its config classes fill in for keys a config.json leaves out (``DEFAULTS``: e.g. Qwen3's
head_dim of 128, Gemma's tied embeddings). Heads (``causal-lm``, ``masked-lm``, ``seq-cls``, ``base``) add
their modules under the architecture's prefix, the way ``…ForCausalLM`` wraps ``…Model``.

Mixtral follows the checkpoint layout — one Linear per expert (``block_sparse_moe.experts.{e}.w1/w2/w3``)
and a Linear router ``block_sparse_moe.gate`` — which is what Mixtral checkpoints and adapters trained on
them name. transformers 5 fuses the experts into 3-D parameters instead (see hf_shapes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import LorascopeError
from .layout import ModelShapes, ModuleShape

# Config keys transformers' config classes default when a config.json leaves them out. head_dim None means
# hidden_size // num_attention_heads.
_DECODER = {"num_key_value_heads": None, "head_dim": None, "tie_word_embeddings": False,
            "attention_bias": False, "mlp_bias": False}
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

# The head an `architectures` entry names, by the end of its class name.
HEAD_SUFFIXES = (
    ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"),
    ("ForSequenceClassification", "seq-cls"), ("Model", "base"),
)
HEADS = ("base", "causal-lm", "masked-lm", "seq-cls")


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
        raise LorascopeError(f"{self.where}: key {keys[0]!r} is missing; the {self.data.get('model_type')} shape rules "
                             f"need it (also accepted: {', '.join(keys[1:]) or 'no alias'}).")

    def int(self, *keys: str, default: Any = ...) -> int:
        value = self.get(*keys, default=default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
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


def tied_linear(name: str, out: int, inn: int, to: str, bias: bool = False,
                shared_bias: bool = False) -> ModuleShape:
    """An output layer whose weight is the input embedding (counted once, there); only its bias is its own,
    unless ``shared_bias``: then its bias too belongs to another module (BERT's ``cls.predictions.bias``)."""
    return ModuleShape(name, "linear", (out, inn), out if bias else 0, out if bias else 0, tied_to=to,
                       shared=out * inn + (out if shared_bias else 0))


# ---------------------------------------------------------------- decoder-only transformers (Llama family)


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

    def flag(self, cfg: Cfg, value: str | bool) -> bool:
        return bool(cfg.get(value)) if isinstance(value, str) else value


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


def _decoder(rule: DecoderRule) -> Callable[[Cfg], list[ModuleShape]]:
    def build(cfg: Cfg) -> list[ModuleShape]:
        h = cfg.int("hidden_size")
        heads = cfg.int("num_attention_heads")
        kv = cfg.int("num_key_value_heads", default=None) or heads
        hd = cfg.int("head_dim", default=None) or h // heads
        inter = cfg.int("intermediate_size")
        vocab = cfg.int("vocab_size")
        qkv_b, o_b, mlp_b = (rule.flag(cfg, v) for v in (rule.qkv_bias, rule.o_bias, rule.mlp_bias))
        mods = [embedding("embed_tokens", vocab, h)]
        for i in range(cfg.int("num_hidden_layers")):
            p = f"layers.{i}."
            mods.append(norm(p + "input_layernorm", h))
            if rule.fused:
                mods.append(linear(p + "self_attn.qkv_proj", heads * hd + 2 * kv * hd, h, qkv_b))
            else:
                mods += [linear(p + "self_attn.q_proj", heads * hd, h, qkv_b),
                         linear(p + "self_attn.k_proj", kv * hd, h, qkv_b),
                         linear(p + "self_attn.v_proj", kv * hd, h, qkv_b)]
            mods.append(linear(p + "self_attn.o_proj", h, heads * hd, o_b))
            if rule.qk_norm:
                mods += [norm(p + "self_attn.q_norm", hd), norm(p + "self_attn.k_norm", hd)]
            mods.append(norm(p + "post_attention_layernorm", h))
            if rule.sandwich_norms:
                mods.append(norm(p + "pre_feedforward_layernorm", h))
            if rule.experts:
                n_exp = cfg.int("num_local_experts", "num_experts")
                mods.append(linear(p + "block_sparse_moe.gate", n_exp, h))
                for e in range(n_exp):
                    q = f"{p}block_sparse_moe.experts.{e}."
                    mods += [linear(q + "w1", inter, h), linear(q + "w2", h, inter), linear(q + "w3", inter, h)]
            elif rule.fused:
                mods += [linear(p + "mlp.gate_up_proj", 2 * inter, h, mlp_b), linear(p + "mlp.down_proj", h, inter, mlp_b)]
            else:
                mods += [linear(p + "mlp.gate_proj", inter, h, mlp_b), linear(p + "mlp.up_proj", inter, h, mlp_b),
                         linear(p + "mlp.down_proj", h, inter, mlp_b)]
            if rule.sandwich_norms:
                mods.append(norm(p + "post_feedforward_layernorm", h))
        mods.append(norm("norm", h))
        return mods

    return build


def _decoder_heads() -> dict[str, Callable[[Cfg, str], tuple[list[ModuleShape], str | None]]]:
    def causal_lm(cfg: Cfg, prefix: str):
        h, vocab = cfg.int("hidden_size"), cfg.int("vocab_size")
        if cfg.get("tie_word_embeddings"):
            return [tied_linear("lm_head", vocab, h, prefix + "embed_tokens")], "lm_head"
        return [linear("lm_head", vocab, h)], "lm_head"

    def seq_cls(cfg: Cfg, prefix: str):
        return [linear("score", cfg.num_labels(), cfg.int("hidden_size"))], "score"

    return {"causal-lm": causal_lm, "seq-cls": seq_cls}


# ---------------------------------------------------------------- GPT-2


def _gpt2(cfg: Cfg) -> list[ModuleShape]:
    h = cfg.int("n_embd", "hidden_size")
    inner = cfg.int("n_inner", default=None) or 4 * h
    mods = [embedding("wte", cfg.int("vocab_size"), h), embedding("wpe", cfg.int("n_positions", "max_position_embeddings"), h)]
    for i in range(cfg.int("n_layer", "num_hidden_layers")):
        p = f"h.{i}."
        mods += [norm(p + "ln_1", h, bias=True), conv1d(p + "attn.c_attn", 3 * h, h), conv1d(p + "attn.c_proj", h, h),
                 norm(p + "ln_2", h, bias=True), conv1d(p + "mlp.c_fc", inner, h), conv1d(p + "mlp.c_proj", h, inner)]
    mods.append(norm("ln_f", h, bias=True))
    return mods


def _gpt2_heads():
    def causal_lm(cfg: Cfg, prefix: str):
        h, vocab = cfg.int("n_embd", "hidden_size"), cfg.int("vocab_size")
        if cfg.get("tie_word_embeddings"):
            return [tied_linear("lm_head", vocab, h, prefix + "wte")], "lm_head"
        return [linear("lm_head", vocab, h)], "lm_head"

    def seq_cls(cfg: Cfg, prefix: str):
        return [linear("score", cfg.num_labels(), cfg.int("n_embd", "hidden_size"))], "score"

    return {"causal-lm": causal_lm, "seq-cls": seq_cls}


# ---------------------------------------------------------------- BERT and DistilBERT


def _bert(cfg: Cfg, pooler: bool = True) -> list[ModuleShape]:
    h, inter = cfg.int("hidden_size"), cfg.int("intermediate_size")
    mods = [embedding("embeddings.word_embeddings", cfg.int("vocab_size"), h),
            embedding("embeddings.position_embeddings", cfg.int("max_position_embeddings"), h),
            embedding("embeddings.token_type_embeddings", cfg.int("type_vocab_size"), h),
            norm("embeddings.LayerNorm", h, bias=True)]
    for i in range(cfg.int("num_hidden_layers")):
        p = f"encoder.layer.{i}."
        mods += [linear(p + "attention.self.query", h, h, True), linear(p + "attention.self.key", h, h, True),
                 linear(p + "attention.self.value", h, h, True), linear(p + "attention.output.dense", h, h, True),
                 norm(p + "attention.output.LayerNorm", h, bias=True), linear(p + "intermediate.dense", inter, h, True),
                 linear(p + "output.dense", h, inter, True), norm(p + "output.LayerNorm", h, bias=True)]
    if pooler:
        mods.append(linear("pooler.dense", h, h, True))
    return mods


def _bert_heads():
    def masked_lm(cfg: Cfg, prefix: str):
        h, vocab = cfg.int("hidden_size"), cfg.int("vocab_size")
        # BertLMPredictionHead owns the output bias; the decoder shares it and the word embeddings.
        mods = [ModuleShape("cls.predictions", "other", (), vocab, vocab),
                linear("cls.predictions.transform.dense", h, h, True),
                norm("cls.predictions.transform.LayerNorm", h, bias=True),
                tied_linear("cls.predictions.decoder", vocab, h, prefix + "embeddings.word_embeddings",
                            shared_bias=True)]
        if not cfg.get("tie_word_embeddings"):
            mods[-1] = ModuleShape("cls.predictions.decoder", "linear", (vocab, h), vocab * h)
        return mods, "cls.predictions.decoder"

    def seq_cls(cfg: Cfg, prefix: str):
        return [linear("classifier", cfg.num_labels(), cfg.int("hidden_size"), True)], "classifier"

    return {"masked-lm": masked_lm, "seq-cls": seq_cls}


def _distilbert(cfg: Cfg) -> list[ModuleShape]:
    h, inner = cfg.int("dim", "hidden_size"), cfg.int("hidden_dim", "intermediate_size")
    mods = [embedding("embeddings.word_embeddings", cfg.int("vocab_size"), h),
            embedding("embeddings.position_embeddings", cfg.int("max_position_embeddings"), h),
            norm("embeddings.LayerNorm", h, bias=True)]
    for i in range(cfg.int("n_layers", "num_hidden_layers")):
        p = f"transformer.layer.{i}."
        mods += [linear(p + "attention.q_lin", h, h, True), linear(p + "attention.k_lin", h, h, True),
                 linear(p + "attention.v_lin", h, h, True), linear(p + "attention.out_lin", h, h, True),
                 norm(p + "sa_layer_norm", h, bias=True), linear(p + "ffn.lin1", inner, h, True),
                 linear(p + "ffn.lin2", h, inner, True), norm(p + "output_layer_norm", h, bias=True)]
    return mods


def _distilbert_heads():
    def masked_lm(cfg: Cfg, prefix: str):
        h, vocab = cfg.int("dim", "hidden_size"), cfg.int("vocab_size")
        head = (tied_linear("vocab_projector", vocab, h, prefix + "embeddings.word_embeddings", bias=True)
                if cfg.get("tie_word_embeddings") else linear("vocab_projector", vocab, h, True))
        return [linear("vocab_transform", h, h, True), norm("vocab_layer_norm", h, bias=True), head], "vocab_projector"

    def seq_cls(cfg: Cfg, prefix: str):
        h = cfg.int("dim", "hidden_size")
        return [linear("pre_classifier", h, h, True), linear("classifier", cfg.num_labels(), h, True)], "classifier"

    return {"masked-lm": masked_lm, "seq-cls": seq_cls}


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class ArchRule:
    """One architecture: its backbone modules, the prefix heads put them under, and its heads."""

    backbone: Callable[[Cfg], list[ModuleShape]]
    prefix: str  # where a head model keeps the backbone: 'model.' for LlamaForCausalLM
    heads: dict[str, Callable[[Cfg, str], tuple[list[ModuleShape], str | None]]]
    default_head: str  # when the config names no architectures
    hidden_keys: tuple[str, ...] = ("hidden_size",)
    backbone_with_head: Callable[[Cfg, str], list[ModuleShape]] | None = None  # when a head changes the backbone


ARCHITECTURES: dict[str, ArchRule] = {
    **{name: ArchRule(_decoder(rule), "model.", _decoder_heads(), "causal-lm") for name, rule in DECODERS.items()},
    "gpt2": ArchRule(_gpt2, "transformer.", _gpt2_heads(), "causal-lm", ("n_embd", "hidden_size")),
    "bert": ArchRule(_bert, "bert.", _bert_heads(), "base",
                     backbone_with_head=lambda cfg, head: _bert(cfg, pooler=head != "masked-lm")),
    "distilbert": ArchRule(_distilbert, "distilbert.", _distilbert_heads(), "base", ("dim", "hidden_size")),
}


def head_of(config: dict[str, Any], arch: str) -> str:
    """The head a config's ``architectures`` names (LlamaForCausalLM -> 'causal-lm'), else the architecture's default."""
    names = config.get("architectures") or []
    for cls in names if isinstance(names, list) else []:
        for suffix, head in HEAD_SUFFIXES:
            if isinstance(cls, str) and cls.endswith(suffix):
                return head
    rule = ARCHITECTURES.get(arch)
    return rule.default_head if rule else "base"


def model_type_of(config: dict[str, Any], where: str) -> str:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise LorascopeError(f"{where}: key 'model_type' is missing or not a string; a config.json names its "
                             "architecture there (e.g. \"model_type\": \"llama\").")
    return model_type


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
            f"{where}: model_type {arch!r} has no shape rules in lorascope (known: {', '.join(sorted(ARCHITECTURES))}). "
            "Install the hf extra (pip install 'lorascope[hf]') to take the shapes from transformers instead."
        )
    rule = ARCHITECTURES[arch]
    head = head or head_of(config, arch)
    if head != "base" and head not in rule.heads:
        raise LorascopeError(f"{where}: head {head!r} is not known for {arch}; expected one of: "
                             f"{', '.join(['base', *rule.heads])}.")
    cfg = Cfg(config, DEFAULTS.get(arch, {}), where)
    backbone = rule.backbone_with_head(cfg, head) if rule.backbone_with_head else rule.backbone(cfg)
    if head == "base":
        modules, output = backbone, None
    else:
        head_modules, output = rule.heads[head](cfg, rule.prefix)
        modules = [_prefixed(m, rule.prefix) for m in backbone] + head_modules
    return ModelShapes(arch=arch, head=head, modules=tuple(modules), hidden=cfg.int(*rule.hidden_keys),
                       output_head=output, shapes_from="rules", config=config)


def _prefixed(m: ModuleShape, prefix: str) -> ModuleShape:
    return replace(m, name=prefix + m.name)
