"""MiniGPT: Llama names and shapes, logits equal to transformers' LlamaForCausalLM, config validation."""

from __future__ import annotations

import math

import pytest
import torch

from lorascope.train.folders import load_minigpt, save_minigpt
from lorascope.train.model import MiniGPTConfig, apply_rotary, build, config_from_hf, hf_config, sized_config
from lorascope.train.tokenizer import WordTokenizer

GQA = MiniGPTConfig(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=16,
)


def test_llama_parameter_names_and_gqa_shapes():
    names = {k: tuple(v.shape) for k, v in build(GQA, 0).state_dict().items()}
    assert names["model.embed_tokens.weight"] == (50, 32)
    assert names["model.layers.1.self_attn.q_proj.weight"] == (32, 32)
    assert names["model.layers.1.self_attn.k_proj.weight"] == (16, 32)  # 2 kv heads of 8
    assert names["model.layers.1.self_attn.v_proj.weight"] == (16, 32)
    assert names["model.layers.0.mlp.down_proj.weight"] == (32, 48)
    assert names["model.layers.0.input_layernorm.weight"] == (32,)
    assert names["model.norm.weight"] == (32,) and names["lm_head.weight"] == (50, 32)
    assert len(names) == 2 + 2 * 9 + 1


def test_rotary_rotates_pairs_by_position_times_frequency():
    # head_dim 4: pairs (x0, x2) and (x1, x3) rotate by t·θ^0 and t·θ^(-1/2) (half-split layout)
    from lorascope.train.model import rotary_tables

    cos, sin = rotary_tables(4, 100.0, torch.arange(3))
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(3, 4)
    y = apply_rotary(x, cos, sin)
    for t in range(3):
        assert y[t, 0].item() == pytest.approx(math.cos(t)) and y[t, 2].item() == pytest.approx(math.sin(t))
    x = torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(3, 4)
    y = apply_rotary(x, cos, sin)
    assert y[2, 1].item() == pytest.approx(math.cos(2 * 0.1)) and y[2, 3].item() == pytest.approx(
        math.sin(2 * 0.1)
    )


def test_causal_and_deterministic():
    m = build(GQA, 3).eval()
    assert torch.equal(build(GQA, 3).state_dict()["lm_head.weight"], m.state_dict()["lm_head.weight"])
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 6:] = 7
    with torch.no_grad():
        a, b = m(ids), m(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) and not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("field,value", [("hidden_size", 30), ("num_key_value_heads", 3), ("vocab_size", 0)])
def test_config_validation_names_the_field(field, value):
    kwargs = {**GQA.__dict__, field: value}
    with pytest.raises(ValueError, match=field):
        MiniGPTConfig(**kwargs)


def test_size_presets_and_overrides():
    cfg = sized_config("small", 100, num_hidden_layers=3, hidden_size=None)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (64, 3, 100)
    with pytest.raises(ValueError, match="size"):
        sized_config("huge", 100)


def test_hf_config_roundtrip_and_rope_keys():
    hf = hf_config(GQA, 2, 3, 0)
    assert hf["model_type"] == "llama" and hf["rope_parameters"] == {
        "rope_type": "default",
        "rope_theta": 10000.0,
    }
    assert hf["tie_word_embeddings"] is False and hf["head_dim"] == 8
    assert config_from_hf(hf) == GQA


def test_save_load_roundtrip_is_exact(tmp_path):
    m = build(GQA, 1)
    tok = WordTokenizer(tuple(f"w{i}" for i in range(46)))
    save_minigpt(tmp_path / "m", m, tok, None)
    base = load_minigpt(tmp_path / "m")
    assert base.world is None and base.tokenizer == tok
    for k, v in m.state_dict().items():
        assert torch.equal(v, base.model.state_dict()[k]), k


@pytest.mark.hf
@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_transformers_llama(tmp_path, tied):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    cfg = MiniGPTConfig(**{**GQA.__dict__, "tie_word_embeddings": tied})
    m = build(cfg, 2).eval()
    tok = WordTokenizer(tuple(f"w{i}" for i in range(46)))
    save_minigpt(tmp_path / "m", m, tok, None)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "m"), dtype=torch.float32).eval()
    ids = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = m(ids), hf(input_ids=ids).logits
    assert ours.abs().max() > 0.1  # a model that outputs something, so the comparison means something
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
