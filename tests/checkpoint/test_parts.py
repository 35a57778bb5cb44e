"""lorascope/checkpoint/parts.py: the key grammar of single-file adapters — module, canonical part, format."""

import pytest

from lorascope.checkpoint.parts import group_keys, split_key, unsupported_kind


@pytest.mark.parametrize(
    "key, module, part, fmt, view",
    [
        ("lora_unet_down_blocks_0.lora_up.weight", "lora_unet_down_blocks_0", "up", "kohya", "flatten"),
        ("lora_te_text_model_x.lora_mid.weight", "lora_te_text_model_x", "mid", "kohya", "as_is"),
        ("unet.a.b.lora.down.weight", "unet.a.b", "down", "diffusers", "flatten"),
        ("transformer.x.lora_A.weight", "transformer.x", "down", "lora-ab", "flatten"),
        ("transformer.emb.lora_embedding_A", "transformer.emb", "up", "lora-ab", "transpose"),
        ("lora_unet_x.hada_w1_a", "lora_unet_x", "hada_w1_a", None, None),
    ],
)
def test_keys_split_into_module_and_canonical_part(key, module, part, fmt, view):
    found = split_key(key)
    assert found.module == module and found.part.part == part
    if fmt is not None:
        assert found.part.grammar == fmt and found.part.view == view


def test_grouping_keeps_vectors_unknowns_unsupported_and_duplicates_apart():
    keys = [
        "m.lora_A.weight",
        "m.lora_B.weight",
        "m.lora_B.bias",
        "something.stuff",
        "m.lora_up.weight",
        "lora_unet_x.lokr_w1",
        "lora_unet_x.lokr_w2",
    ]
    grouped = group_keys(keys)
    assert set(grouped.modules["m"]) == {"down", "up"} and [v.key for v in grouped.vectors] == [
        "m.lora_B.bias"
    ]
    assert grouped.unknown == ["something.stuff"] and grouped.duplicates == [
        "m: up in m.lora_B.weight and m.lora_up.weight"
    ]
    assert set(grouped.modules["lora_unet_x"]) == {"lokr_w1", "lokr_w2"}


def test_algorithms_lorascope_does_not_read_are_named():
    assert unsupported_kind("lora_unet_x.oft_blocks") == "LyCORIS OFT / BOFT (orthogonal blocks)"
    assert unsupported_kind("lora_unet_x.a1.weight") == "LyCORIS GLoRA (a1, a2, b1, b2)"
    assert unsupported_kind("m.lora_A.weight") is None
