"""lorascope/checkpoint/peft_config.py: PEFT's pattern and scale rules, the number checks, and the one writer
of a PEFT adapter folder — checked against PEFT's own LoraConfig and its loader."""

import json
import math

import pytest
import torch

from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.peft_config import (
    CONFIG,
    WEIGHTS,
    lora_config,
    module_scale,
    pattern_key,
    pattern_problems,
    pattern_values,
    positive,
    positive_number,
    write_adapter,
)
from lorascope.errors import LorascopeError


def test_patterns_resolve_as_peft_get_pattern_key_does():
    pytest.importorskip("peft")
    from peft.utils.other import get_pattern_key  # returns the name itself where no key matches

    patterns = {"q_proj": 4, "layers.1.self_attn.v_proj": 16, "mlp.*": 2}
    for name in (
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
        "model.layers.0.mlp.up",
        "model.layers.0.self_attn.o_proj",
    ):
        got = pattern_key(patterns, name)
        assert (got or name) == get_pattern_key(patterns.keys(), name), name
    assert pattern_key(patterns, "model.layers.0.self_attn.o_proj") is None
    with pytest.raises(LorascopeError, match="not a valid regular expression"):
        pattern_key({"(": 1}, "x")


def test_scale_is_alpha_over_r_or_over_sqrt_r():
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"v_proj": 4}, "alpha_pattern": {"v_proj": 12}}
    assert module_scale(cfg, "model.q_proj") == (8, 16.0, 2.0)
    assert module_scale(cfg, "model.v_proj") == (4, 12.0, 3.0)
    assert module_scale({**cfg, "use_rslora": True}, "model.q_proj") == (8, 16.0, 16 / math.sqrt(8))
    assert pattern_values({"r": 4}, "x") == (4, 8.0)  # PEFT's default lora_alpha


def test_numbers_are_checked_finite_and_positive(tmp_path):
    assert positive_number(3, "r", integer=True) == 3 and positive_number(0.5, "alpha") == 0.5
    for bad in (0, -1, float("nan"), float("inf"), True, "8"):
        with pytest.raises(LorascopeError, match="must be a positive"):
            positive_number(bad, "alpha")
    with pytest.raises(LorascopeError, match="must be a positive integer, found 2.5"):
        positive_number(2.5, "r", integer=True)
    with pytest.raises(LorascopeError, match=f"{CONFIG}: 'r' is missing"):
        positive({}, "r", tmp_path)
    assert positive({}, "lora_alpha", tmp_path, default=8) == 8
    assert pattern_problems(
        {"rank_pattern": {"q": 0}, "alpha_pattern": []}, {"rank_pattern": True, "alpha_pattern": False}
    ) == [
        "'rank_pattern' entry 'q' must be a positive integer, found 0",
        "'alpha_pattern' must be a JSON object mapping name patterns to numbers, found []",
    ]


def test_lora_config_is_what_peft_reads():
    peft = pytest.importorskip("peft")
    cfg = lora_config(
        8,
        16,
        ["q_proj", "v_proj"],
        lora_dropout=0.1,
        use_rslora=True,
        task_type="CAUSAL_LM",
        rank_pattern={"v_proj": 4},
        alpha_pattern={"v_proj": 4},
        layers_to_transform=None,
    )
    loaded = peft.LoraConfig(**{k: v for k, v in cfg.items() if k != "peft_type"})
    assert (
        loaded.r == 8
        and loaded.lora_alpha == 16
        and loaded.use_rslora
        and loaded.rank_pattern == {"v_proj": 4}
    )
    assert set(loaded.target_modules) == {"q_proj", "v_proj"} and cfg["peft_type"] == "LORA"
    with pytest.raises(ValueError, match="r must be a positive integer"):
        lora_config(0, 16, ["q_proj"])


def test_written_adapters_read_back_and_have_deterministic_bytes(tmp_path):
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{name}.lora_A.weight": torch.randn(2, 6), f"{name}.lora_B.weight": torch.randn(5, 2)}
    cfg = lora_config(2, 4, ["q_proj"])
    for folder in ("a", "b"):
        write_adapter(tmp_path / folder, cfg, tensors, {"written_by": "lorascope", "z": "1", "a": "2"})
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    assert json.loads((tmp_path / "a" / CONFIG).read_text()) == cfg
    adapter = open_checkpoint(tmp_path / "a")
    (m,) = adapter.modules
    assert (
        m.name == "model.layers.0.self_attn.q_proj" and m.rank == 2 and m.scale == 2.0 and m.shape == (5, 6)
    )
    assert adapter.store.metadata["written_by"] == "lorascope"
