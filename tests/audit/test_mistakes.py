"""Claims with each common mistake planted: the figure a person making that mistake computes, worked by hand,
must be judged wrong and the planted mistake named."""

import pytest

from lorascope.audit.claims import Claim, check_claim
from lorascope.audit.count import LoraSettings, count_lora
from lorascope.audit.mistakes import MISTAKES, Scenario, layer_count
from lorascope.audit.shape_source import rule_shapes
from lorascope.audit.targets import parse_targets


def check(shapes, name, targets, claim, **kw):
    count = count_lora(shapes(name), LoraSettings(targets=parse_targets(targets), **kw))
    return check_claim(count, claim)


def only(result):
    (figure,) = result.figures
    return figure


# (config, targets, LoRA options, claimed figures worked by hand, planted mistake, words in the explanation)
PLANTED = [
    # Mistral-7B q,k,v,o r=16 with k and v taken as 4096×4096 (really 1024×4096)
    (
        "mistral-7b-v0.1.mlc-modified",
        "attn",
        {"rank": 16},
        {"lora": 32 * 16 * 4 * (4096 + 4096)},
        "square_kv",
        "grouped-query attention ignored",
    ),
    # … and the percentage of the model computed from that count
    (
        "mistral-7b-v0.1.mlc-modified",
        "attn",
        {"rank": 16},
        {"percent": 100 * 32 * 16 * 4 * 8192 / 7_241_732_096},
        "square_kv",
        "grouped-query attention ignored",
    ),
    # Llama-2-70B q,v r=8: v_proj as 8192×8192
    (
        "llama-2-70b-hf",
        "q_proj,v_proj",
        {"rank": 8},
        {"lora": 80 * 2 * 8 * (8192 + 8192)},
        "square_kv",
        "d×d",
    ),
    # Llama-2-7B MLP r=8 with 4096×4096 projections (really 11008 wide)
    ("llama-2-7b-hf", "mlp", {"rank": 8}, {"lora": 32 * 3 * 8 * (4096 + 4096)}, "square_mlp", "d×d"),
    # … or with the MLP taken as 4·d = 16384 wide
    ("llama-2-7b-hf", "mlp", {"rank": 8}, {"lora": 32 * 3 * 8 * (4096 + 16384)}, "square_mlp", "4·d wide"),
    # the 8-layer edited Llama-2-70B config, claim made for the real 80 layers: q (8192²) and v (1024×8192),
    # r=16
    (
        "llama-2-70b-hf.eLLM-EDITED-8layers",
        "q_proj,v_proj",
        {"rank": 16},
        {"lora": 80 * 16 * ((8192 + 8192) + (1024 + 8192))},
        "layers",
        "80 layers",
    ),
    # GPT-2 counted with its tied output head as a separate matrix: 124,439,808 + 50257·768
    ("gpt2", "c_attn", {"rank": 8}, {"total": 124_439_808 + 50257 * 768}, "tied", "counted twice"),
    # Qwen2.5-7B with its (untied) output head assumed tied: 7,615,616,512 − 152064·3584
    (
        "qwen2.5-7b",
        "q_proj,v_proj",
        {"rank": 8},
        {"total": 7_615_616_512 - 152064 * 3584},
        "tied",
        "taken as tied",
    ),
    # Mistral q,v with r=8 but lora_alpha=32 used as the rank
    (
        "mistral-7b-v0.1.mlc-modified",
        "q_proj,v_proj",
        {"rank": 8, "alpha": 32},
        {"lora": 32 * 32 * ((4096 + 4096) + (1024 + 4096))},
        "alpha_as_rank",
        "lora_alpha=32 read as the rank",
    ),
    # GPT-2 'c_proj' thought to mean attn.c_proj only (it also reaches mlp.c_proj)
    (
        "gpt2",
        "c_proj",
        {"rank": 8},
        {"lora": 12 * 8 * (768 + 768)},
        "targets",
        "reaches it as well as attn.c_proj",
    ),
    # Llama-2-7B configured for q,v; the claim counts all four attention projections
    (
        "llama-2-7b-hf",
        "q_proj,v_proj",
        {"rank": 8, "alpha": 8},
        {"lora": 32 * 4 * 8 * 8192},
        "targets",
        "attn",
    ),
    # GPT-2 all-linear, the claim includes the output head lm_head (768 → 50257)
    (
        "gpt2",
        "all-linear",
        {"rank": 8},
        {"lora": 12 * 8 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768)) + 8 * (768 + 50257)},
        "targets",
        "including the output head lm_head",
    ),
    # rank_pattern v_proj: 32 ignored: every module at r=8
    (
        "llama-2-7b-hf",
        "q_proj,v_proj",
        {"rank": 8, "alpha": 8, "rank_pattern": {"v_proj": 32}},
        {"lora": 32 * 2 * 8 * 8192},
        "rank_pattern",
        "rank_pattern ignored",
    ),
    # DoRA's magnitude vectors (one per output feature) left out
    (
        "qwen3-8b",
        "q_proj,v_proj",
        {"rank": 8, "alpha": 8, "dora": True},
        {"lora": 36 * 8 * ((4096 + 4096) + (4096 + 1024))},
        "dora",
        "magnitude vectors left out",
    ),
    # percent written as a fraction: 0.06224 % given as 0.0006224
    (
        "llama-2-7b-hf",
        "q_proj,v_proj",
        {"rank": 8},
        {"percent": 100 * 4_194_304 / 6_738_415_616 / 100},
        "percent_scale",
        "fraction",
    ),
    # the full 4096×4096 matrices of q and v counted instead of their LoRA factors
    (
        "llama-2-7b-hf",
        "q_proj,v_proj",
        {"rank": 8},
        {"lora": 32 * 2 * 4096 * 4096},
        "full_matrices",
        "full weight",
    ),
]


@pytest.mark.parametrize(
    ("name", "targets", "options", "claimed", "mistake", "words"),
    PLANTED,
    ids=[f"{p[4]}-{p[0]}-{p[1]}" for p in PLANTED],
)
def test_planted_mistake_is_named(shapes, name, targets, options, claimed, mistake, words):
    f = only(check(shapes, name, targets, Claim(**claimed), **options))
    assert f.verdict == "wrong"
    e = f.explanation
    assert e is not None and e.reproduces, e
    assert e.keys == (mistake,), e.text
    assert words in e.text
    assert e.error < 1e-9  # planted exactly


def test_every_mistake_is_planted():
    assert {p[4] for p in PLANTED} == set(MISTAKES)


def test_a_changed_depth_is_extrapolated_exactly(configs):
    """The 8-layer config taken as 80 layers counts what the real 80-layer config counts."""
    small, big = (
        rule_shapes(configs["llama-2-70b-hf.eLLM-EDITED-8layers"]),
        rule_shapes(configs["llama-2-70b-hf"]),
    )
    settings = LoraSettings(rank=16, targets=parse_targets("q_proj,v_proj"))
    count = count_lora(small, settings)
    (deep,) = [s for s in layer_count(Scenario(small, settings), count, "lora") if s.n_layers == 80]
    assert deep.figure("lora") == count_lora(big, settings).trainable and deep.figure("total") == big.total
    assert deep.strict  # 80 is a common depth, not a near one: it must fit a claim closely
