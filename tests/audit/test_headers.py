"""Shapes from checkpoint headers alone: GPT-2- and Llama-style files written in tmp_path, and checkpoints
saved from bitsandbytes 4-bit and 8-bit models, counted by their logical shapes or refused.

The quantized files are built by hand with the key layout bitsandbytes writes through transformers'
save_pretrained (``QuantState.as_dict(packed=True)`` for 4-bit, ``Linear8bitLt._save_to_state_dict`` for
8-bit). Where bitsandbytes is installed, a real quantized save is compared with the hand-built layout key by
key, and its count with PEFT's get_nb_trainable_parameters of the loaded quantized model.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from builders import save_st

from lorascope.audit import LoraSettings, audit_source, count_lora
from lorascope.audit.headers import bnb_layout, checkpoint_shapes
from lorascope.audit.shape_source import load_model
from lorascope.audit.targets import parse_targets
from lorascope.errors import LorascopeError


def test_llama_style_checkpoint(tmp_path):
    tensors = {
        "model.embed_tokens.weight": torch.zeros(10, 8),
        "lm_head.weight": torch.zeros(10, 8),
        "model.norm.weight": torch.zeros(8),
        "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(2),
    }
    for i in range(2):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.zeros(8, 8)
        tensors[f"model.layers.{i}.self_attn.k_proj.weight"] = torch.zeros(4, 8)
    path = save_st(tmp_path / "model.safetensors", tensors)
    model = load_model(path)
    assert model.shapes_from == "headers" and model.output_head == "lm_head" and model.hidden == 8
    assert model.total == 10 * 8 * 2 + 8 + 2 * (64 + 32)  # the rotary buffer is not a parameter
    assert model.by_name()["model.embed_tokens"].kind == "embedding"
    assert count_lora(model, LoraSettings(rank=2, targets=parse_targets("k_proj"))).trainable == 2 * 2 * (
        4 + 8
    )


def test_gpt2_conv1d_is_transposed_and_buffers_skipped():
    shapes = {
        "wte.weight": ((50, 8), True),
        "h.0.attn.c_attn.weight": ((8, 24), True),
        "h.0.attn.c_attn.bias": ((24,), True),
        "h.0.attn.bias": ((1, 1, 4, 4), True),
        "h.0.mlp.c_fc.weight": ((8, 32), True),
        "step": ((), False),
    }
    model = checkpoint_shapes(shapes)
    assert (
        model.by_name()["h.0.attn.c_attn"].shape == (24, 8)
        and model.by_name()["h.0.attn.c_attn"].kind == "conv1d"
    )
    assert model.total == 50 * 8 + 8 * 24 + 24 + 8 * 32


# ---------------------------------------------------------------- bitsandbytes

CONFIG = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": False,
}
LORA = LoraSettings(rank=8, targets=parse_targets("q_proj,v_proj"))
BLOCK, NESTED_BLOCK = 64, 256


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def tiny_llama(transformers):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))


def quantized_4bit(
    key: str,
    shape: tuple[int, int],
    quant_type: str = "nf4",
    nested: bool = True,
    storage: torch.dtype = torch.uint8,
) -> dict[str, torch.Tensor]:
    """The tensors bitsandbytes saves for one Params4bit weight (values are irrelevant to counting)."""
    n = shape[0] * shape[1]
    per_element = 2 * torch.empty((), dtype=storage).element_size()
    blocks = math.ceil(n / BLOCK)
    out = {
        key: torch.zeros(math.ceil(n / per_element), 1, dtype=storage),
        f"{key}.quant_map": torch.zeros(16, dtype=torch.float32),
    }
    state = {"quant_type": quant_type, "blocksize": BLOCK, "dtype": "float32", "shape": list(shape)}
    if nested:
        out |= {
            f"{key}.absmax": torch.zeros(blocks, dtype=torch.uint8),
            f"{key}.nested_absmax": torch.zeros(math.ceil(blocks / NESTED_BLOCK), dtype=torch.float32),
            f"{key}.nested_quant_map": torch.zeros(256, dtype=torch.float32),
        }
        state |= {"nested_blocksize": NESTED_BLOCK, "nested_dtype": "float32", "nested_offset": 0.05}
    else:
        out[f"{key}.absmax"] = torch.zeros(blocks, dtype=torch.float32)
    packed = torch.tensor(list(json.dumps(state).encode("utf-8")), dtype=torch.uint8)
    out[f"{key}.quant_state.bitsandbytes__{quant_type}"] = packed
    return out


def quantized_8bit(key: str, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    module = key.removesuffix(".weight")
    return {
        key: torch.zeros(shape, dtype=torch.int8),
        f"{module}.SCB": torch.zeros(shape[0], dtype=torch.float32),
        f"{module}.weight_format": torch.tensor(0, dtype=torch.uint8),
    }


def is_quantized_linear(key: str) -> bool:
    """The weights transformers quantizes: every Linear inside the layers (embeddings and lm_head stay)."""
    return ".layers." in key and key.endswith("proj.weight")


def save_quantized(path, state: dict[str, torch.Tensor], quantize) -> None:
    out = {}
    for key, value in state.items():
        kept = {key: value.to(torch.float16)}
        out |= quantize(key, tuple(value.shape)) if is_quantized_linear(key) else kept
    save_st(path, out)


@pytest.mark.parametrize("variant", ["nf4-double", "fp4", "nf4-bf16-storage", "int8"])
def test_quantized_checkpoint_counts_as_the_model(tmp_path, transformers, variant):
    """The quantized file counts exactly as the unquantized model: total, LoRA and share of the model."""
    from lorascope.audit.shape_source import hf_shapes

    quantize = {
        "nf4-double": quantized_4bit,
        "fp4": lambda k, s: quantized_4bit(k, s, "fp4", nested=False),
        "nf4-bf16-storage": lambda k, s: quantized_4bit(k, s, storage=torch.bfloat16),
        "int8": quantized_8bit,
    }[variant]
    state = tiny_llama(transformers).state_dict()
    save_st(tmp_path / "plain.safetensors", {k: v.contiguous() for k, v in state.items()})
    save_quantized(tmp_path / "quantized.safetensors", state, quantize)
    plain = load_model(tmp_path / "plain.safetensors")
    quantized = load_model(tmp_path / "quantized.safetensors")
    config = hf_shapes({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **CONFIG})
    assert quantized.total == plain.total == config.total == sum(p.numel() for p in state.values())
    shapes = {m.name: (m.kind, m.shape, m.params) for m in quantized.modules}
    assert shapes == {m.name: (m.kind, m.shape, m.params) for m in plain.modules}
    ours = count_lora(quantized, LORA)
    assert ours.trainable == count_lora(config, LORA).trainable == 2 * (8 * (64 + 64) + 8 * (64 + 32))
    assert "bitsandbytes" in quantized.notes[-1]


def test_the_issue_lone_4bit_file_is_counted_in_full(tmp_path, transformers):
    """A lone 4-bit file used to count only the unquantized tensors (head, embeddings, norms)."""
    state = tiny_llama(transformers).state_dict()
    save_quantized(tmp_path / "model.safetensors", state, quantized_4bit)
    result = audit_source(tmp_path / "model.safetensors", LORA)
    assert result.count.total == sum(p.numel() for p in state.values())
    unquantized_only = sum(v.numel() for k, v in state.items() if not is_quantized_linear(k))
    assert result.count.total > 1.5 * unquantized_only
    assert result.count.percent == pytest.approx(100 * result.count.trainable / result.count.total)


def test_layout_names_the_state_tensors():
    keys = {
        **quantized_4bit("a.q_proj.weight", (8, 8)),
        **quantized_8bit("a.k_proj.weight", (4, 8)),
        "a.norm.weight": torch.zeros(8),
    }
    layout = bnb_layout(keys)
    assert layout.four_bit == {"a.q_proj.weight": "a.q_proj.weight.quant_state.bitsandbytes__nf4"}
    assert layout.eight_bit == ("a.k_proj.weight",)
    assert layout.state == set(keys) - {"a.q_proj.weight", "a.k_proj.weight", "a.norm.weight"}


def test_refused_where_a_shape_cannot_be_known(tmp_path):
    base = {"model.embed_tokens.weight": torch.zeros(10, 8, dtype=torch.float16)}
    lost = quantized_4bit("model.layers.0.self_attn.q_proj.weight", (8, 8))
    del lost["model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4"]
    save_st(tmp_path / "lost.safetensors", base | lost)
    lost_shape = r"q_proj\.weight is a bitsandbytes 4-bit packed tensor \[32, 1\]"
    with pytest.raises(
        LorascopeError,
        match=lost_shape + r".*no model\.layers\.0\.self_attn\.q_proj\.weight"
        r"\.quant_state.*config\.json",
    ):
        load_model(tmp_path / "lost.safetensors")
    bare = {"model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8, dtype=torch.int8)}
    save_st(tmp_path / "bare.safetensors", base | bare)
    with pytest.raises(
        LorascopeError,
        match=r"up_proj\.weight is an integer weight \[16, 8\] that no known "
        r"quantization layout explains",
    ):
        load_model(tmp_path / "bare.safetensors")
    wrong = quantized_4bit("model.layers.0.self_attn.q_proj.weight", (8, 8))
    wrong["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(20, 1, dtype=torch.uint8)
    save_st(tmp_path / "wrong.safetensors", base | wrong)
    with pytest.raises(LorascopeError, match=r"records the shape \[8, 8\], which does not fit the packed"):
        load_model(tmp_path / "wrong.safetensors")
    garbled = quantized_4bit("model.layers.0.self_attn.q_proj.weight", (8, 8))
    state = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4"
    garbled[state] = torch.zeros(5, dtype=torch.uint8)
    save_st(tmp_path / "garbled.safetensors", base | garbled)
    with pytest.raises(LorascopeError, match="holds no valid shape"):
        load_model(tmp_path / "garbled.safetensors")


@pytest.mark.parametrize("mode", ["4bit-nf4-double", "4bit-fp4", "8bit"])
def test_real_bitsandbytes_save_matches_layout_and_peft(tmp_path, transformers, mode):
    """transformers + bitsandbytes on the CPU: saved keys as the hand-built layout's, the count as PEFT's."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes (test extra) is not installed")
    peft = pytest.importorskip("peft")
    from safetensors import safe_open

    tiny_llama(transformers).save_pretrained(tmp_path / "plain")
    quant = {
        "4bit-nf4-double": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
        "4bit-fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
        "8bit": dict(load_in_8bit=True),
    }[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / "plain", quantization_config=transformers.BitsAndBytesConfig(**quant), device_map="cpu"
        )
        model.save_pretrained(tmp_path / "quantized")
        want, _ = peft.get_peft_model(
            model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
        ).get_nb_trainable_parameters()
    with safe_open(str(tmp_path / "quantized" / "model.safetensors"), "pt") as fh:
        real = {k: (fh.get_slice(k).get_dtype(), tuple(fh.get_slice(k).get_shape())) for k in fh.keys()}
    key, shape = "model.layers.0.self_attn.q_proj.weight", (64, 64)
    if mode == "8bit":
        ours = quantized_8bit(key, shape)
    else:
        ours = quantized_4bit(
            key,
            shape,
            quant_type=quant.get("bnb_4bit_quant_type", "fp4"),
            nested=quant.get("bnb_4bit_use_double_quant", False),
        )
    tags = {torch.uint8: "U8", torch.int8: "I8", torch.float32: "F32"}
    hand = {k: (tags[v.dtype], tuple(v.shape)) for k, v in ours.items()}
    state_key = next((k for k in hand if ".quant_state." in k), None)
    if state_key:  # the JSON's length depends on the offset's digits; its dtype and rank do not
        assert real[state_key][0] == "U8" and len(real[state_key][1]) == 1
        real.pop(state_key), hand.pop(state_key)
    assert {k: v for k, v in real.items() if k.startswith(key.removesuffix(".weight"))} == hand
    quantized = load_model(tmp_path / "quantized" / "model.safetensors")
    assert count_lora(quantized, LORA).trainable == want
    assert quantized.total == load_model(tmp_path / "plain" / "model.safetensors").total
