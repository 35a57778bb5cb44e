"""lorascope/cli/audit.py: ``lorascope params`` counts LoRA parameters as r·(in + out) per targeted module."""

import json

from click.testing import CliRunner

from lorascope.cli import main

CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 100,
}


def test_params_counts_a_config_by_hand(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    res = CliRunner().invoke(
        main, ["params", str(tmp_path / "config.json"), "-r", "8", "-t", "q_proj,v_proj", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{") :])
    # q_proj and v_proj are 64 → 64 here (4 KV heads of 16): 2 layers × 2 modules × 8 · (64 + 64)
    assert doc["counts"]["lora"] == 2 * 2 * 8 * (64 + 64) == 4096


def test_a_wrong_claim_is_reported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    res = CliRunner().invoke(
        main, ["params", str(tmp_path / "config.json"), "-r", "8", "-t", "q_proj,v_proj", "--claim", "8192"]
    )
    assert res.exit_code == 0 and "8,192" in res.output and "4,096" in res.output
