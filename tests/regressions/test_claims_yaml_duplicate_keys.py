"""A claims file that gives one key twice in a claim (``name: x`` then ``name: y``, or two ``rank`` values)
was audited with whichever PyYAML kept (the last), silently: an ambiguous file must be refused, naming the key
and its lines (exit code 2)."""

from __future__ import annotations

import json

from regressions._util import cli

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 100,
}


def test_a_key_given_twice_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "claims:\n  - name: x\n    model: config.json\n    rank: 8\n    rank: 64\n"
        "    targets: q_proj\n    claimed: {lora: 2048}\n"
    )
    p = cli("audit", claims, "--out", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert "'rank' twice" in p.stderr and "lines 4 and 5" in p.stderr and "unexpected" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_merge_keys_and_overrides_of_merged_keys_stay_allowed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "claims:\n  - &a {name: a, model: config.json, rank: 8, targets: q_proj, claimed: {lora: 2048}}\n"
        "  - <<: *a\n    name: b\n"
    )
    p = cli("audit", claims, "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    assert "twice" not in p.stderr
