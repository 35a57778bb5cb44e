"""MiniGPT: a small decoder-only transformer with the Llama architecture and Llama parameter names.

RMSNorm (Zhang & Sennrich 2019), rotary position embeddings (Su et al. 2021, the "rotate half"
layout Hugging Face Llama uses), a SwiGLU MLP (Shazeer 2020) and optional grouped-query attention
(Ainslie et al. 2023). Parameter names are those of ``transformers.LlamaForCausalLM``
(``model.layers.{i}.self_attn.q_proj``, ``mlp.down_proj``, ``model.norm``, ``lm_head``), so a saved
MiniGPT is a Llama checkpoint and every lorascope analysis names its modules the Llama way.

This file owns the network and its configuration only: no file access (see ``folders.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiniGPTConfig:
    """Shape of a MiniGPT; field names are those of ``transformers.LlamaConfig``."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 320  # ≈ 8/3 · hidden, the SwiGLU width of Llama, rounded to 32
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # < heads: grouped-query attention, so k_proj/v_proj are narrower
    max_position_embeddings: int = 64
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False  # separate lm_head, so the head is its own matrix in every analysis
    initializer_range: float = 0.02  # std of the normal init of every Linear and Embedding, as Llama

    def __post_init__(self) -> None:
        for field in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(
                "head_dim = hidden_size / num_attention_heads must be even for rotary embeddings, got "
                f"{self.head_dim}"
            )
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0 or self.initializer_range <= 0:
            raise ValueError("rope_theta, rms_norm_eps and initializer_range must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# Size presets for --size; every field can still be overridden one by one.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "small": dict(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "default": dict(
        hidden_size=128,
        intermediate_size=320,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "large": dict(
        hidden_size=256,
        intermediate_size=672,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}


def sized_config(size: str, vocab_size: int, **overrides: Any) -> MiniGPTConfig:
    """A config from a size preset, with ``overrides`` (None values ignored) on top."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    return MiniGPTConfig(vocab_size=vocab_size, **fields)


def hf_config(cfg: MiniGPTConfig, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict[str, Any]:
    """The ``config.json`` of the equivalent ``LlamaForCausalLM``.

    transformers 5 reads rotary settings from ``rope_parameters``; ``rope_theta`` is written at the top level
    too, where transformers 4 reads it.
    """
    out = asdict(cfg)
    out.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        head_dim=cfg.head_dim,
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        pretraining_tp=1,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        rope_scaling=None,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        torch_dtype="float32",
        use_cache=True,
    )
    return out


def config_from_hf(hf: dict[str, Any]) -> MiniGPTConfig:
    """The MiniGPT config of a Llama ``config.json`` dict (rope_theta from either key layout)."""
    theta = (hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10000.0))
    fields = {f: hf[f] for f in MiniGPTConfig.__dataclass_fields__ if f in hf and f != "rope_theta"}
    if fields.get("num_key_value_heads") is None:
        fields["num_key_value_heads"] = hf["num_attention_heads"]
    return MiniGPTConfig(rope_theta=float(theta), **fields)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · g, computed in float32 (Zhang & Sennrich 2019; Llama's LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rotary_tables(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (T, head_dim) each (Su et al. 2021, Eq. 34; half-split layout).

    inv_freq_i = theta^(−2i / head_dim), angle(t, i) = t · inv_freq_i, duplicated over both halves.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, 1) * (1, hd/2) -> (T, hd/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, hd)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (−x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hd) queries or keys by the (T, hd) tables."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Causal multi-head attention with grouped-query key/value heads (Ainslie et al. 2023)."""

    def __init__(self, cfg: MiniGPTConfig):
        super().__init__()
        hd = cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        group = self.n_heads // self.n_kv  # query heads per key/value head: kv head j serves heads j·group…
        k = k.repeat_interleave(group, dim=1)  # (B, nh, T, hd)
        v = v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) ⊙ up(x)) (Shazeer 2020, Eq. 6)."""

    def __init__(self, cfg: MiniGPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: MiniGPTConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Embeddings, blocks and the final norm: the ``model.`` part of a Llama checkpoint."""

    def __init__(self, cfg: MiniGPTConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MiniGPT(nn.Module):
    """A Llama-architecture causal language model small enough to train on a laptop CPU.

    ``forward(input_ids)`` returns logits (B, T, vocab). Right-padded batches need no attention mask:
    attention is causal, so padding after a token never changes that token's output.
    """

    def __init__(self, cfg: MiniGPTConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {t} exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        cos, sin = rotary_tables(
            self.config.head_dim, self.config.rope_theta, torch.arange(t, device=input_ids.device)
        )
        x = self.model.embed_tokens(input_ids)  # (B, T, d)
        for block in self.model.layers:
            x = block(x, cos.to(x.dtype), sin.to(x.dtype))
        return self.lm_head(self.model.norm(x))  # (B, T, vocab)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build(cfg: MiniGPTConfig, seed: int) -> MiniGPT:
    """A freshly initialized MiniGPT; the same seed gives the same weights on every machine."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return MiniGPT(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
