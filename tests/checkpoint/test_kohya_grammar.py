"""lorascope/checkpoint/kohya_grammar.py: a flattened stem's tokens split into a vocabulary entry's
components."""

from lorascope.checkpoint.kohya_grammar import keep, parses, path


def test_every_split_of_the_tokens_is_found():
    entry = path("down_blocks.{i}.attentions.{i}.(to_out|to_out.0)")
    tokens = "down_blocks_1_attentions_0_to_out_0".split("_")
    found = list(parses(tokens, entry.parts))
    assert ("down_blocks", "1", "attentions", "0", "to_out_0") not in found  # '_' inside a name is kept whole
    assert found and all(".".join(p).replace(".", "_") == "_".join(tokens) for p in found)
    assert list(parses(["x"], path("down_blocks.{i}").parts)) == []  # an integer index must be an integer


def test_targets_format_the_parse_integers():
    entry = path("double_blocks.{i}.img_attn.qkv", "transformer.transformer_blocks.{0}.attn")
    (parse,) = parses("double_blocks_3_img_attn_qkv".split("_"), entry.parts)
    assert entry.target(parse) == "transformer.transformer_blocks.3.attn"
    assert keep(("a", "0", "b")) == "a.0.b"
