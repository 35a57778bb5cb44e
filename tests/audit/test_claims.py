"""Claim checks: verdicts within the tolerance, and the search for what explains a wrong figure — single
mistakes first, pairs only where no single one reproduces the claim, and only pairs that reproduce it."""

import pytest

from lorascope.audit.claims import Claim, check_claim, explain_figure, figure_rows
from lorascope.audit.count import LoraSettings, count_lora
from lorascope.audit.shape_source import rule_shapes
from lorascope.audit.targets import parse_targets
from lorascope.errors import LorascopeError


def check(shapes, name, targets, claim, **kw):
    count = count_lora(shapes(name), LoraSettings(targets=parse_targets(targets), **kw))
    return check_claim(count, claim)


def only(result):
    (figure,) = result.figures
    return figure


def test_two_mistakes_at_once(shapes):
    # Mistral attn r=8 alpha=16: square k/v AND alpha read as rank, worked by hand
    f = only(
        check(
            shapes, "mistral-7b-v0.1.mlc-modified", "attn", Claim(lora=32 * 16 * 4 * 8192), rank=8, alpha=16
        )
    )
    assert f.explanation.reproduces and set(f.explanation.keys) == {"square_kv", "alpha_as_rank"}


def test_correct_and_rounded_claims_pass_without_explanation(shapes):
    result = check(
        shapes,
        "llama-2-7b-hf",
        "q_proj,v_proj",
        Claim(lora=4_200_000, percent=0.0622, total=6_740_000_000),
        rank=8,
    )
    assert result.ok and all(f.explanation is None for f in result.figures)
    assert [f.verdict for f in result.figures] == ["ok", "ok", "ok"]


def test_tolerance_decides_and_unexplained_claims_say_so(shapes):
    exact = 4_194_304
    assert (
        only(check(shapes, "llama-2-7b-hf", "q_proj,v_proj", Claim(lora=round(exact * 1.03)), rank=8)).verdict
        == "wrong"
    )
    assert (
        only(
            check(
                shapes,
                "llama-2-7b-hf",
                "q_proj,v_proj",
                Claim(lora=round(exact * 1.03), tolerance=0.05),
                rank=8,
            )
        ).verdict
        == "ok"
    )
    # far below anything a mistake here produces (one layer alone has 24,576)
    f = only(check(shapes, "gpt2", "c_attn", Claim(lora=1_000), rank=8))
    assert f.verdict == "wrong" and not f.explanation.reproduces
    assert f.explanation.text.startswith("not reproduced by any common mistake; closest")
    assert f.error == pytest.approx(1_000 / 294_912 - 1)


def test_claim_validates_fields():
    with pytest.raises(ValueError, match="at least one of lora, percent, total"):
        Claim()
    with pytest.raises(ValueError, match="tolerance must lie between 0 and 1"):
        Claim(lora=1, tolerance=2)


def test_a_pair_is_named_only_where_it_reproduces_the_claim(shapes):
    # README: Llama-2-7B all-linear r=16 claimed as 33M: square MLP and 36 layers, together
    f = only(check(shapes, "llama-2-7b-hf", "all-linear", Claim(lora=33_000_000)))
    e = f.explanation
    assert e.reproduces and set(e.keys) == {"square_mlp", "layers"} and e.error < 0.002
    assert "36 layers counted where the model has 32" in e.text and e.value == 33_030_144
    # a claim nothing reproduces shows the closest single mistake as such, never a pair
    f = only(check(shapes, "gpt2", "c_attn", Claim(lora=1_000), rank=8))
    assert not f.explanation.reproduces and len(f.explanation.keys) == 1 and f.explanation.also == ()


def test_a_right_figure_is_not_searched(configs):
    count = count_lora(
        rule_shapes(configs["llama-2-7b-hf"]), LoraSettings(rank=8, targets=parse_targets("q_proj"))
    )
    assert check_claim(count, Claim(lora=count.trainable)).figures[0].explanation is None
    assert explain_figure(count, Claim(lora=count.trainable * 2), "lora").reproduces  # 'v_proj counted too'


def test_a_configuration_that_reaches_nothing_has_no_count_to_check(shapes):
    count = count_lora(shapes("gpt2"), LoraSettings(targets=parse_targets("q_proj"), allow_unmatched=True))
    with pytest.raises(LorascopeError, match="reach no module of this model, so there is no count"):
        check_claim(count, Claim(lora=1_000))
    assert check_claim(count, Claim(total=124_439_808)).ok  # the model's own size still checks


def test_figure_rows_are_the_row_model(shapes):
    result = check(shapes, "llama-2-7b-hf", "q_proj,v_proj", Claim(lora=8_388_608, percent=0.0622), rank=8)
    wrong, right = figure_rows(result)
    assert (wrong["figure"], wrong["verdict"], wrong["claimed_text"]) == (
        "LoRA parameters",
        "wrong",
        "8,388,608 (8.39M)",
    )
    assert wrong["exact_text"] == "4,194,304 (4.19M)" and wrong["relative_error"] == pytest.approx(1.0)
    assert wrong["mistakes"] and wrong["explanation"].startswith("reproduced by") and wrong["fit"] < 0.02
    assert (right["figure"], right["verdict"], right["explanation"], right["mistakes"]) == (
        "percent of the model",
        "ok",
        "",
        "",
    )
