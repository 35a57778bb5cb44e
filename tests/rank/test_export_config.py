"""lorascope/rank/export_config.py: an exported adapter's config resolves every module to its own rank under
PEFT's rules, and selects only the exported modules."""

import re

import pytest

from lorascope.checkpoint.peft_config import module_scale
from lorascope.rank.export_config import adapter_config, rank_patterns, regex_targets, target_problems


def test_every_module_resolves_to_r_alpha_and_scale_one():
    ranks = {"model.layers.0.q": 8, "model.layers.0.v": 2, "model.layers.10.q": 4, "layers.0.q": 3}
    cfg = adapter_config(ranks, fan_in_fan_out=False, base_path="/base", task_type="CAUSAL_LM")
    assert cfg["r"] == cfg["lora_alpha"] == 8 and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["base_model_name_or_path"] == "/base" and cfg["target_modules"] == sorted(ranks)
    for name, r in ranks.items():
        assert module_scale(cfg, name) == (r, float(r), 1.0), name


def test_patterns_are_longest_first_and_the_source_config_wins():
    assert list(rank_patterns({"a.b": 2, "x.a.b": 4, "c": 8}, 8)) == ["x.a.b", "a.b"]
    assert list(rank_patterns({"a.b": 2}, 2, explicit_all=True, escape=True)) == [re.escape("a.b")]
    cfg = adapter_config({"q": 4}, True, source={"task_type": "SEQ_CLS", "base_model_name_or_path": "src"})
    assert cfg["task_type"] == "SEQ_CLS" and cfg["base_model_name_or_path"] == "src" and cfg["fan_in_fan_out"]
    with pytest.raises(ValueError, match="no module to export"):
        adapter_config({}, False)


def test_target_modules_that_would_catch_other_modules_become_a_regex():
    assert target_problems(["q"], ["a.q"], ["a.q", "b.q", "a.k"]) == ["b.q"]
    pattern = regex_targets(["a.q", "x.y"])
    assert (
        re.fullmatch(pattern, "a.q") and not re.fullmatch(pattern, "b.q") and not re.fullmatch(pattern, "a_q")
    )
