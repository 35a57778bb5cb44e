"""Where shapes come from: transformers wherever it is installed, the built-in table (said so) only without
it, a checkpoint's headers without a config; what a SOURCE is, and the errors a user sees for bad ones."""

import json

import pytest

from lorascope.audit import shape_source
from lorascope.audit.shape_rules import rule_shapes
from lorascope.audit.shape_source import load_model, read_config, shapes_from_config, source_kind
from lorascope.errors import LorascopeError


def test_source_kinds(tmp_path, real_fixtures, config_dir):
    assert source_kind(config_dir / "gpt2.json") == "config"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((config_dir / "gpt2.json").read_text())
    assert source_kind(folder) == "config"
    assert load_model(folder, shapes="rules").total == 124_439_808
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
