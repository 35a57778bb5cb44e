"""lorascope/names.py: the (layer, module) split and the one prefix rule that pairs two checkpoints' names."""

import pytest

from lorascope.names import (
    ADAPTER_PREFIXES,
    PEFT_PREFIX,
    NameIndex,
    canonical,
    module_type,
    split_name,
    strip_adapter_prefix,
)


@pytest.mark.parametrize(
    "name, layer, module",
    [
        ("model.layers.3.self_attn.q_proj", 3, "self_attn.q_proj"),
        ("transformer.h.11.attn.c_proj", 11, "attn.c_proj"),
        ("transformer.h.11.mlp.c_proj", 11, "mlp.c_proj"),  # GPT-2's two c_proj stay apart
        ("lm_head", None, "lm_head"),
        ("model.layers.0", 0, "model.layers.0"),  # nothing after the layer: the name is its own module
    ],
)
def test_split_name_takes_the_first_integer_as_the_layer(name, layer, module):
    assert split_name(name) == (layer, module)


def test_module_type_groups_experts_and_blocks():
    assert (
        module_type("mlp.experts.7.w1") == "mlp.experts.*.w1"
        and module_type("self_attn.q_proj") == "self_attn.q_proj"
    )


def test_the_peft_prefix_is_the_one_adapter_prefix_stripped():
    assert PEFT_PREFIX == "base_model.model." and ADAPTER_PREFIXES == (PEFT_PREFIX,)
    assert strip_adapter_prefix("base_model.model.model.layers.0.q") == "model.layers.0.q"
    assert strip_adapter_prefix("model.layers.0.q") == "model.layers.0.q"


def test_canonical_removes_every_leading_wrapper_and_keeps_a_bare_name():
    assert canonical("base_model.model.model.layers.0.mlp.up_proj") == "layers.0.mlp.up_proj"
    assert canonical("module._orig_mod.transformer.h.0.attn") == "h.0.attn"
    assert canonical("model.") == "model."  # a prefix alone is not removed down to nothing
    assert canonical("base_model_model_model_layers_0_q", sep="_") == "layers_0_q"


def test_name_index_pairs_by_prefix_only_and_refuses_ambiguity():
    index = NameIndex(["model.layers.0.mlp.up_proj", "lm_head"])
    assert index.find("base_model.model.model.layers.0.mlp.up_proj") == "model.layers.0.mlp.up_proj"
    assert index.find("layers.0.mlp.up_proj") == "model.layers.0.mlp.up_proj"
    assert index.find("lm_head") == "lm_head"
    missing = index.match("vision_tower.layers.0.mlp.up_proj")  # a shared suffix is no match
    assert missing.name is None and "wrapper prefixes" in missing.reason
    twins = NameIndex(["model.x.w", "transformer.x.w"])
    hit = twins.match("module.x.w")
    assert (
        hit.name is None and hit.ambiguous == ("model.x.w", "transformer.x.w") and "ambiguous" in hit.reason
    )
    assert twins.find("model.x.w") == "model.x.w"  # an exact name is never ambiguous
