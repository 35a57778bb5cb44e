"""One SOURCE end to end (``audit_source``): counts, bytes, warnings and the JSON of ``--json``."""

import json

import pytest

from lorascope.audit import AuditOptions, Claim, LoraSettings, audit_source
from lorascope.audit.targets import parse_targets
from lorascope.errors import LorascopeError


def test_the_audit_says_what_the_tie_does(config_dir):
    lora = {"rank": 8, "targets": parse_targets("q_proj,v_proj")}
    broken = audit_source(config_dir / "gemma-2-9b.json", LoraSettings(**lora, modules_to_save=("lm_head",)))
    assert broken.count.trainable == 921_976_832
    assert any(
        "separate copy" in w and "917,504,000" in w and "ensure_weight_tying" in w for w in broken.warnings
    )
    shared = audit_source(
        config_dir / "gemma-2-9b.json",
        LoraSettings(**lora, modules_to_save=("lm_head",), ensure_weight_tying=True),
        AuditOptions(shapes="rules"),
    )
    assert shared.count.saved_modules == ("model.embed_tokens",) and shared.count.trainable == 921_976_832
    assert any("shares it" in w for w in shared.warnings)
    assert shared.to_dict()["lora"]["ensure_weight_tying"] is True


def test_a_config_result_and_its_json(config_dir):
    settings = LoraSettings(rank=8, targets=parse_targets("q_proj,v_proj"))
    result = audit_source(
        config_dir / "llama-2-7b-hf.json",
        settings,
        AuditOptions(shapes="rules", dtype="fp32"),
        Claim(lora=4_200_000),
    )
    data = json.loads(json.dumps(result.to_dict()))  # JSON-ready as it is
    assert data["counts"]["trainable"] == 4_194_304 and data["model"]["shapes_from"] == "rules"
    assert data["adapter_file"] == {"dtype": "fp32", "bytes": result.file_bytes, "format": "safetensors"}
    assert data["by_layer"][0] == {"layer": 0, "modules": 2, "params": 131_072}
    assert data["claim"]["ok"] and data["claim"]["figures"][0]["verdict"] == "ok"
    assert [r["part"] for r in data["memory"]["bytes"]][-1] == "total"


def test_an_adapter_claim_needs_the_right_base_model(real_fixtures, config_dir):
    adapter = real_fixtures / "peft" / "Tashu014+lora-imdb-distilbert"
    with pytest.raises(LorascopeError, match="needs the base model's shapes: pass --model"):
        audit_source(adapter, LoraSettings(), claim=Claim(lora=1_000))
    # a distilbert adapter on llama: its config reaches nothing there, so no count to check the claim with
    options = AuditOptions(shapes="rules", model=config_dir / "llama-2-7b-hf.json")
    assert audit_source(adapter, LoraSettings(), options).audit.model_count.trainable == 0
    with pytest.raises(LorascopeError, match="reach no module of this model"):
        audit_source(adapter, LoraSettings(), options, Claim(lora=811_000))
