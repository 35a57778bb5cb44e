"""Where shapes come from: transformers wherever it is installed, the built-in rule (said so) only without
it, a checkpoint's headers without a config; what a SOURCE is, and the errors a user sees for bad ones. The
rule itself: published parameter totals, hand-worked shapes, config defaults, heads, errors, and module by
module the same as transformers builds."""

import json

import pytest

from lorascope.audit import shape_source
from lorascope.audit.shape_source import DECODERS, rule_shapes
from lorascope.audit.shape_source import load_model, read_config, shapes_from_config, source_kind
from lorascope.errors import LorascopeError


def test_source_kinds(tmp_path, real_fixtures, config_dir):
    assert source_kind(config_dir / "gpt2.json") == "config"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((config_dir / "llama-2-7b-hf.json").read_text())
    assert source_kind(folder) == "config"
    assert load_model(folder, shapes="rules").total == 6_738_415_616
    assert source_kind(real_fixtures / "peft" / "anirudh-ak+peft-gpt2") == "adapter"
    with pytest.raises(LorascopeError, match="does not exist"):
        source_kind(tmp_path / "nope")
    with pytest.raises(LorascopeError, match="is a PEFT adapter folder; give the base model"):
        load_model(real_fixtures / "peft" / "anirudh-ak+peft-gpt2")


def test_bad_configs(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LorascopeError, match="bad.json is not valid JSON"):
        read_config(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(LorascopeError, match="must hold a JSON object"):
        read_config(tmp_path / "list.json")
    with pytest.raises(LorascopeError, match="--shapes 'x' is not known"):
        shapes_from_config({"model_type": "llama"}, shapes="x")


def test_unknown_architecture_without_and_with_transformers(monkeypatch):
    cfg = {"model_type": "unheard-of", "hidden_size": 8}
    with pytest.raises(LorascopeError, match="no shape rules in lorascope.*hf extra"):
        shapes_from_config(cfg, shapes="rules")
    monkeypatch.setattr(shape_source, "transformers_available", lambda: False)
    with pytest.raises(LorascopeError, match="no shape rules in lorascope"):
        shapes_from_config(cfg, shapes="auto")
    with pytest.raises(LorascopeError, match="--shapes hf needs transformers"):
        shapes_from_config(cfg, shapes="hf")


def test_the_table_stands_in_only_without_transformers_and_says_so(monkeypatch, configs):
    cfg = configs["llama-2-7b-hf"]
    monkeypatch.setattr(shape_source, "transformers_available", lambda: False)
    fallback = shapes_from_config(cfg, "auto")
    assert fallback.shapes_from == "rules" and fallback.total == rule_shapes(cfg).total == 6_738_415_616
    assert "transformers is not installed" in fallback.notes[0] and "lorascope[hf]" in fallback.notes[0]
    asked = shapes_from_config(cfg, "rules")  # asked for by name: no note
    assert not any("not installed" in n for n in asked.notes)


@pytest.mark.hf
def test_transformers_is_the_authority_where_installed(configs):
    pytest.importorskip("transformers")
    cfg = configs["qwen3-8b"]
    model = shapes_from_config(cfg, "auto")
    assert model.shapes_from == "hf" and model.total == 8_190_735_360
    # a config transformers rejects is an error, not a silent switch to the built-in table (it knows no rope)
    bad = {**cfg, "rope_scaling": {"rope_type": "bogus"}}
    assert rule_shapes(bad).total == 8_190_735_360
    with pytest.raises(LorascopeError, match="could not build a 'qwen3' model from this config.*bogus"):
        shapes_from_config(bad, "auto")
    with pytest.raises(
        LorascopeError, match="has no AutoModelForMaskedLM for model_type 'qwen3'; pick another"
    ):
        shapes_from_config(cfg, "auto", head="masked-lm")


def test_a_checkpoint_is_read_from_its_headers(tmp_path):
    torch = pytest.importorskip("torch")
    from builders import save_st

    path = save_st(
        tmp_path / "model.safetensors",
        {
            "model.embed_tokens.weight": torch.zeros(10, 8),
            "model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 8),
        },
    )
    model = load_model(path, shapes="auto")
    assert model.shapes_from == "headers" and model.total == 10 * 8 + 8 * 8
    assert "shapes from tensor headers" in model.notes[0]


# Parameter totals as published by the model authors / model cards (tied matrices once).
PUBLISHED = {
    "llama-2-7b-hf": 6_738_415_616,
    "llama-2-7b-hf.hpmll-resaved": 6_738_415_616,
    "llama-2-70b-hf": 68_976_648_192,
    "mistral-7b-v0.1.mlc-modified": 7_241_732_096,
    "mixtral-8x7b-v0.1": 46_702_792_704,
    "qwen2.5-7b": 7_615_616_512,
    "qwen3-8b": 8_190_735_360,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini-4k-instruct": 3_821_079_552,
    "gpt2": 124_439_808,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_totals_match_published_counts(shapes, name):
    assert (
        shapes(name).total == PUBLISHED[name]
    )  # the rule where it covers the architecture, else transformers


def test_base_encoders_match_published_counts(shapes):
    assert shapes("bert-base-uncased", head="base").total == 109_482_240
    assert shapes("distilbert-base-uncased", head="base").total == 66_362_880


def shape(model, name):
    return model.by_name()[name].shape


def test_grouped_query_attention_shapes_by_hand(configs):
    m = rule_shapes(configs["llama-2-70b-hf"])  # 64 heads, 8 kv heads, head_dim 8192/64 = 128
    assert shape(m, "model.layers.0.self_attn.q_proj") == (8192, 8192)
    assert shape(m, "model.layers.0.self_attn.k_proj") == (8 * 128, 8192)
    assert shape(m, "model.layers.79.mlp.down_proj") == (8192, 28672)
    g = rule_shapes(configs["gemma-2-9b"])  # head_dim 256 given: q is 16·256 = 4096 wide on a 3584 model
    assert shape(g, "model.layers.0.self_attn.q_proj") == (4096, 3584)
    assert shape(g, "model.layers.0.self_attn.o_proj") == (3584, 4096)
    p = rule_shapes(configs["phi-3-mini-4k-instruct"])  # fused: 3·3072 and 2·8192
    assert shape(p, "model.layers.0.self_attn.qkv_proj") == (9216, 3072)
    assert shape(p, "model.layers.0.mlp.gate_up_proj") == (16384, 3072)
    x = rule_shapes(configs["mixtral-8x7b-v0.1"])
    assert shape(x, "model.layers.0.block_sparse_moe.experts.7.w2") == (4096, 14336)
    assert shape(x, "model.layers.0.block_sparse_moe.gate") == (8, 4096)
    assert any("transformers 5 fuses" in n for n in x.notes)  # the layout it counts is said
    assert not any("transformers 5" in n for n in m.notes + g.notes + p.notes)


def test_gpt2_conv1d_counts_logical_orientation(shapes):
    m = shapes("gpt2")
    attn = m.by_name()["transformer.h.0.attn.c_attn"]
    assert (attn.kind, attn.shape, attn.params) == ("conv1d", (2304, 768), 2304 * 768 + 2304)
    assert shape(m, "transformer.h.0.mlp.c_fc") == (3072, 768)  # n_inner None: 4·n_embd


def test_qwen3_without_head_dim_uses_transformers_default(configs):
    cfg = dict(configs["qwen3-8b"])
    assert "head_dim" not in cfg
    assert shape(rule_shapes(cfg), "model.layers.0.self_attn.k_proj") == (8 * 128, 4096)
    # Qwen3's default head_dim is 128 whatever the width (Qwen3-0.6B: hidden 1024, 16 heads, head_dim 128)
    small = {**cfg, "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 8}
    assert shape(rule_shapes(small), "model.layers.0.self_attn.q_proj") == (16 * 128, 1024)
    # Llama has no such default: hidden // heads
    llama = {
        "model_type": "llama",
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "vocab_size": 10,
    }
    assert shape(rule_shapes(llama), "model.layers.0.self_attn.q_proj") == (1024, 1024)


def test_tied_embeddings_count_once_and_default_per_architecture(configs):
    g = rule_shapes(configs["gemma-2-9b"])  # no tie key: Gemma ties by default
    head = g.by_name()["lm_head"]
    assert head.tied_to == "model.embed_tokens" and head.params == 0
    untied = rule_shapes({**configs["gemma-2-9b"], "tie_word_embeddings": False})
    assert untied.total - g.total == 256000 * 3584
    assert rule_shapes(configs["llama-2-7b-hf"]).tied == ()


def test_heads_and_prefixes(configs):
    base = rule_shapes(configs["llama-2-7b-hf"], head="base")
    assert "layers.0.self_attn.q_proj" in base.by_name() and base.output_head is None
    cls = rule_shapes(
        {**configs["llama-2-7b-hf"], "id2label": {"0": "a", "1": "b", "2": "c"}}, head="seq-cls"
    )
    assert shape(cls, "score") == (3, 4096) and "model.layers.31.mlp.down_proj" in cls.by_name()
    assert cls.output_head == "score" and cls.total == base.total + 3 * 4096


def test_unknown_architecture_names_the_extra(configs):
    with pytest.raises(LorascopeError, match="model_type 'falcon' has no shape rules.*hf extra"):
        rule_shapes({"model_type": "falcon"}, where="cfg.json")
    with pytest.raises(LorascopeError, match="'model_type' is missing"):
        rule_shapes({"hidden_size": 8})


def test_missing_and_bad_keys_are_named(configs):
    cfg = {k: v for k, v in configs["llama-2-7b-hf"].items() if k != "hidden_size"}
    with pytest.raises(LorascopeError, match="llama.json: key 'hidden_size' is missing"):
        rule_shapes(cfg, where="llama.json")
    with pytest.raises(LorascopeError, match="'num_hidden_layers' must be a positive integer, found '32'"):
        rule_shapes({**configs["llama-2-7b-hf"], "num_hidden_layers": "32"})
    with pytest.raises(LorascopeError, match="head 'masked-lm' is not known for llama"):
        rule_shapes(configs["llama-2-7b-hf"], head="masked-lm")


def test_gemma_without_fixture_by_hand():
    gemma1 = {
        "model_type": "gemma",
        "hidden_size": 3072,
        "intermediate_size": 24576,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 256000,
    }
    # Gemma-7B: embeddings 256000·3072 + 28 · (4 · 4096·3072 + 3 · 24576·3072 + 2·3072) + 3072 (tied head)
    assert rule_shapes(gemma1).total == 8_537_680_896
    assert set(DECODERS) == {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"}


@pytest.mark.hf
@pytest.mark.parametrize(
    "name",
    [
        "llama-2-7b-hf",
        "llama-2-70b-hf.eLLM-EDITED-8layers",
        "mistral-7b-v0.1.mlc-modified",
        "mixtral-8x7b-v0.1",
        "qwen2.5-7b-instruct.tt-metal",
        "qwen3-8b",
        "gemma-2-9b",
        "phi-3-mini-4k-instruct",
    ],
)
def test_rules_equal_transformers_module_by_module(configs, name):
    """The table is a stand-in for transformers: every module, shape, bias and tie the same."""
    pytest.importorskip("transformers")
    from lorascope.audit.shape_source import hf_shapes

    cfg = configs[name]
    hf = hf_shapes(cfg)
    rules = rule_shapes(cfg)
    assert rules.total == hf.total
    assert (rules.head, rules.output_head, rules.hidden) == (hf.head, hf.output_head, hf.hidden)
    ours = {m.name: (m.kind, m.shape, m.params, m.bias, m.tied_to, m.shared) for m in rules.modules}
    theirs = {m.name: (m.kind, m.shape, m.params, m.bias, m.tied_to, m.shared) for m in hf.modules}
    if cfg["model_type"] == "mixtral":  # transformers 5 fuses the experts; everything else is the same
        ours = {k: v for k, v in ours.items() if "block_sparse_moe" not in k}
        theirs = {k: v for k, v in theirs.items() if ".mlp." not in k}
        assert len(hf.parameters) == 3 * 32 and "fused as 3-D parameters" in hf.notes[0]
    assert ours == theirs


@pytest.mark.hf
@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_the_rule_reads_the_bias_keys_as_transformers_does(arch, hf):
    """attention_bias and mlp_bias set: each architecture's biases as its transformers modeling code has them
    (read from the config by Llama, Qwen3 and Gemma; fixed by Mistral, Mixtral, Phi-3 and Qwen2)."""
    tiny = {"model_type": arch, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "vocab_size": 11,
            "num_local_experts": 2, "attention_bias": True, "mlp_bias": True, "pad_token_id": 0}  # fmt: skip
    cfg = tiny if arch == "mixtral" else {k: v for k, v in tiny.items() if k != "num_local_experts"}
    rules, theirs = rule_shapes(cfg), hf(cfg)
    biases = {m.name: m.bias for m in rules.modules if m.bias}
    if arch != "mixtral":  # transformers 5 fuses Mixtral's experts; the biases are compared by total below
        assert biases == {m.name: m.bias for m in theirs.modules if m.bias}
    assert rules.total == theirs.total
