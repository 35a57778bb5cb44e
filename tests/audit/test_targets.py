"""PEFT's target matching: names by suffix, regex full match, all-linear, layers_to_transform, presets,
errors."""

import pytest

from lorascope.audit.shape_source import rule_shapes
from lorascope.audit.shapes import ModelShapes, ModuleShape
from lorascope.audit.targets import (
    TargetSpec,
    check_match,
    match_targets,
    parse_targets,
    peft_layer_index,
)
from lorascope.errors import LorascopeError


@pytest.fixture(scope="module")
def tiny_gpt2(hf):
    def build(layers=2, head="causal-lm"):
        tiny = {"model_type": "gpt2", "n_embd": 8, "n_layer": layers, "n_head": 2, "vocab_size": 10}
        return hf({**tiny, "n_positions": 4}, head)

    return build


def tiny_llama(layers=3):
    return rule_shapes(
        {
            "model_type": "llama",
            "hidden_size": 8,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 12,
            "num_hidden_layers": layers,
            "vocab_size": 10,
        }
    )


def test_parse_targets_forms():
    assert parse_targets("q_proj, v_proj").names == ("q_proj", "v_proj")
    assert parse_targets("attn.c_proj").names == ("attn.c_proj",)  # a dot alone is a name separator
    assert parse_targets("ALL-LINEAR").preset == "all-linear"
    assert parse_targets("mlp").preset == "mlp"
    assert parse_targets(r".*\.(q|v)_proj").regex == r".*\.(q|v)_proj"
    assert parse_targets("re:q_proj").regex == "q_proj"
    assert parse_targets(["q_proj", "k_proj"]).names == ("q_proj", "k_proj")
    assert parse_targets(None) == TargetSpec()
    with pytest.raises(LorascopeError, match=r"--targets '\.\*\(q' is not a valid regular expression"):
        parse_targets(".*(q")
    with pytest.raises(LorascopeError, match="empty target name"):
        parse_targets("q_proj,,v_proj")


def test_name_matches_by_dotted_suffix_and_c_proj_reaches_two_types(tiny_gpt2):
    m = tiny_gpt2()
    match = match_targets(m, parse_targets("c_proj"))
    assert match.modules == (
        "transformer.h.0.attn.c_proj",
        "transformer.h.0.mlp.c_proj",
        "transformer.h.1.attn.c_proj",
        "transformer.h.1.mlp.c_proj",
    )
    assert set(match.groups()) == {"attn.c_proj", "mlp.c_proj"}
    assert match_targets(m, parse_targets("attn.c_proj")).modules == (
        "transformer.h.0.attn.c_proj",
        "transformer.h.1.attn.c_proj",
    )
    # a suffix must end at a dot: 'proj' is not a name of any module
    assert match_targets(m, parse_targets("proj")).modules == ()


def test_regex_is_a_full_match():
    m = tiny_llama()
    assert (
        match_targets(m, parse_targets("re:q_proj")).modules == ()
    )  # a bare name as a regex matches nothing
    match = match_targets(m, parse_targets(r"model\.layers\.[01]\.self_attn\.(q|v)_proj"))
    assert match.modules == tuple(f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in ("q", "v"))


def test_all_linear_leaves_out_the_output_layer_even_when_tied(tiny_gpt2):
    m = tiny_gpt2()
    assert m.by_name()["lm_head"].tied_to == "transformer.wte"
    match = match_targets(m, TargetSpec(preset="all-linear"))
    assert "lm_head" not in match.modules and len(match.modules) == 2 * 4
    assert "leaves out the output layer lm_head" in match.label
    base = tiny_gpt2(head="base")  # no output layer to leave out
    assert len(match_targets(base, TargetSpec(preset="all-linear")).modules) == 8


def test_layers_follow_peft_layer_index(tiny_gpt2):
    assert peft_layer_index("model.layers.3.self_attn.q_proj") == 3
    assert (
        peft_layer_index("model.layers.1.block_sparse_moe.experts.7.w1") == 1
    )  # the first number, not the expert
    assert peft_layer_index("h.0.attn.c_attn") is None  # PEFT needs two components before the index
    assert peft_layer_index("transformer.h.0.attn.c_attn", ["h"]) == 0
    m = tiny_llama()
    match = match_targets(m, parse_targets("q_proj"), layers=(0, 2))
    assert match.modules == ("model.layers.0.self_attn.q_proj", "model.layers.2.self_attn.q_proj")
    assert match.outside_layers == 1
    # GPT2Model without a prefix: PEFT finds no layer index, so nothing matches (as PEFT reports)
    assert match_targets(tiny_gpt2(head="base"), parse_targets("c_attn"), layers=(0,)).modules == ()


def test_layers_with_a_regex_or_all_linear_is_refused_like_peft():
    with pytest.raises(LorascopeError, match="--layers cannot be combined with targets regex"):
        match_targets(tiny_llama(), parse_targets(r".*q_proj"), layers=(0,))
    with pytest.raises(LorascopeError, match="all-linear"):
        match_targets(tiny_llama(), TargetSpec(preset="all-linear"), layers=(0,))


def test_modules_to_save_are_never_lora_targets():
    m = tiny_llama()
    match = match_targets(m, TargetSpec(preset="all-linear"), modules_to_save=("down_proj",))
    assert not any(n.endswith("down_proj") for n in match.modules)


def test_presets_per_architecture(hf):
    bert = hf(
        {
            "model_type": "bert",
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "vocab_size": 10,
            "max_position_embeddings": 4,
        }
    )
    mlp = match_targets(bert, TargetSpec(preset="mlp")).modules
    # 'output.dense' as a name would also reach attention.output.dense; the preset does not
    assert mlp == ("encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense")
    assert len(match_targets(bert, parse_targets("output.dense")).modules) == 2 * 1
    attn = match_targets(tiny_llama(1), TargetSpec(preset="attn")).modules
    assert [n.rsplit(".", 1)[1] for n in attn] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    default = match_targets(tiny_llama(1), TargetSpec())  # PEFT's default for llama
    assert [n.rsplit(".", 1)[1] for n in default.modules] == [
        "q_proj",
        "v_proj",
    ] and "PEFT's" in default.label
    phi3 = rule_shapes(
        {
            "model_type": "phi3",
            "hidden_size": 8,
            "num_attention_heads": 2,
            "intermediate_size": 4,
            "num_hidden_layers": 1,
            "vocab_size": 10,
        }
    )
    with pytest.raises(LorascopeError, match="PEFT has no default targets for model_type 'phi3'"):
        match_targets(phi3, TargetSpec())


def test_unmatched_targets_are_loud():
    m = tiny_llama()
    match = match_targets(m, parse_targets("q,q_proj"))
    assert match.unmatched == ("q",)
    with pytest.raises(
        LorascopeError,
        match=r"some LoRA targets matched nothing:\n  - target 'q' matched no module; "
        r"names containing it: self_attn.q_proj",
    ):
        check_match(match, m)
    assert check_match(match, m, allow_unmatched=True) == [
        "target 'q' matched no module; names containing it: self_attn.q_proj"
    ]
    with pytest.raises(LorascopeError, match="matched nothing in this model.*not found in the base model"):
        check_match(match_targets(m, parse_targets("query")), m)


def test_targets_that_reach_a_non_linear_module_are_refused():
    m = tiny_llama()
    with pytest.raises(LorascopeError, match="LoRA cannot wrap: model.layers.0.input_layernorm"):
        check_match(match_targets(m, parse_targets("input_layernorm")), m)


def test_target_parameters_only_on_transformers_trees():
    # a fused-expert parameter in a rules-built model is never converted (PEFT's conversion is for
    # transformers 5)
    fake = ModelShapes(
        "mixtral", "causal-lm", (ModuleShape("m.layers.0.q_proj", "linear", (4, 4), 16),), shapes_from="rules"
    )
    assert (
        match_targets(
            fake,
            parse_targets("w1,q_proj"),
        ).parameters
        == ()
    )
