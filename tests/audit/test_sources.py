"""What a SOURCE is, and the errors a user sees for bad ones."""

import json

import pytest

from lorascope.audit.sources import load_model, read_config, shapes_from_config, source_kind
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
    import lorascope.audit.hf_shapes as hf

    monkeypatch.setattr(hf, "available", lambda: False)
    with pytest.raises(LorascopeError, match="no shape rules in lorascope"):
        shapes_from_config(cfg, shapes="auto")
    with pytest.raises(LorascopeError, match="--shapes hf needs transformers"):
        shapes_from_config(cfg, shapes="hf")
