"""`lorascope params` and `lorascope audit` end to end: output, JSON, files written, clean errors."""

import json

import pytest
import yaml
from click.testing import CliRunner

from lorascope.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_params_prints_counts_memory_and_claim(config_dir):
    res = run(
        "params",
        config_dir / "llama-2-7b-hf.json",
        "-r",
        "8",
        "-t",
        "q_proj,v_proj",
        "--shapes",
        "rules",
        "--claim",
        "8.4M",
        "--claim-percent",
        "0.0622",
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "shapes from lorascope's built-in shape table" in out and "6,738,415,616 (6.74B) parameters" in out
    assert "self_attn.v_proj ×32  4096×4096  ← v_proj" in out
    assert "trainable 4,194,304 (4.19M)" in out and "0.06224 % of the model" in out
    assert "adapter file 8,405,600 bytes" in out
    assert "full fine-tuning" in out and "activations, KV cache" in out
    assert "wrong" in out and "reproduced by: targets taken as attn" in out


def test_params_json_and_out(tmp_path, config_dir):
    res = run(
        "params",
        config_dir / "mistral-7b-v0.1.mlc-modified.json",
        "--shapes",
        "rules",
        "-t",
        "attn",
        "--json",
        "--out",
        tmp_path / "p",
        "--dora",
        "--layers",
        "0-1",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # stdout holds the document alone; "written to" goes to stderr
    assert data["counts"]["lora"] == 2 * 16 * 2 * ((4096 + 4096) + (4096 + 1024))
    assert data["counts"]["dora_magnitude"] == 2 * (4096 + 1024 + 1024 + 4096)
    assert data["lora"]["layers"] == [0, 1] and data["model"]["parameters"] == 7_241_732_096
    assert (tmp_path / "p" / "params.json").is_file() and (tmp_path / "p" / "modules.csv").is_file()
    assert f"results written to {tmp_path / 'p'}" in res.stderr
    assert data["ok"] and data["command"] == "params" and data["written"] == {"params": str(tmp_path / "p")}


def test_params_on_an_adapter(real_fixtures, config_dir, hf):
    res = run(
        "params",
        real_fixtures / "peft" / "abrhaleyarefaine1997+gpt2-tigrinya-lora",
        "--model",
        config_dir / "gpt2.json",
        "--shapes",
        "hf",
        "--claim",
        "811K",
        "-r",
        "4",
    )
    assert res.exit_code == 0, res.output
    assert "--rank ignored" in res.output
    assert "c_proj │ attn.c_proj ×12, mlp.c_proj ×12" in res.output
    assert "ok" in res.output


def test_bad_input_exits_cleanly(tmp_path, config_dir):
    cases = [
        (["params", config_dir / "llama-2-7b-hf.json", "-t", "q", "--shapes", "rules"], "matched nothing"),
        (["params", config_dir / "gpt2.json", "--shapes", "rules"], "model_type 'gpt2' has no shape rules"),
        (
            ["params", config_dir / "gpt2.json", "-t", ".*(", "--shapes", "rules"],
            "not a valid regular expression",
        ),
        (
            ["params", config_dir / "gpt2.json", "--claim", "lots", "--shapes", "rules"],
            "--claim 'lots' is not a parameter count",
        ),
        (["params", config_dir / "gpt2.json", "--rank-pattern", "{v_proj: 2}"], "--rank-pattern"),
        (["params", tmp_path / "nothing.json"], "does not exist"),
        (["audit", tmp_path / "nothing.yaml"], "does not exist"),
    ]
    for args, message in cases:
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)


def test_audit_writes_default_folder(tmp_path, monkeypatch, config_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blog.yaml").write_text(
        yaml.safe_dump(
            {
                "shapes": "rules",
                "claims": [
                    {
                        "name": "post",
                        "model": str(config_dir / "llama-2-7b-hf.json"),
                        "rank": 8,
                        "targets": "q_proj,v_proj",
                        "claimed": "4.2M",
                    },
                    {
                        "name": "bad",
                        "model": str(config_dir / "llama-2-7b-hf.json"),
                        "targets": "q",
                        "claimed": "1M",
                    },
                ],
            }
        )
    )
    res = run("audit", "blog.yaml", "-q")
    out = tmp_path / "reports" / "audit-blog"
    assert (out / "audit.csv").is_file() and (out / "audit.html").is_file()
    assert "audit.csv and audit.html written to reports/audit-blog" in res.output
    assert res.exit_code == 2 and "1 claim(s) could not be checked" in res.output and "bad:" in res.output


def test_layers_the_model_lacks_are_named(config_dir):
    res = run("params", config_dir / "llama-2-7b-hf.json", "--shapes", "rules", "--layers", "30-40")
    assert res.exit_code == 0, res.output
    assert "names layers this model does not have: 32-40 (its layers are 0-31)" in res.output
    assert "trainable 524,288" in res.output  # layers 30 and 31 only: 2 × 2 × 16 × (4096 + 4096)


def test_unknown_model_type_and_missing_shape_keys(tmp_path):
    pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    (tmp_path / "weird.json").write_text(json.dumps({"model_type": "weird", "hidden_size": 8}))
    res = run("params", tmp_path / "weird.json", "--shapes", "hf")
    assert res.exit_code == 2 and "cannot build a config for model_type 'weird'" in res.output
    assert len(res.output) < 400  # one paragraph, not transformers' list of every model type
    (tmp_path / "bare.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    res = run("params", tmp_path / "bare.json", "--shapes", "hf")
    assert res.exit_code == 0, res.output
    assert "does not set vocab_size, intermediate_size, num_hidden_layers, num_attention_heads" in res.output
    assert "hidden_size" not in res.output.split("does not set")[1].split(";")[0]


# sizes are checked when the config is read, before transformers
@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_size": "64"}, "'hidden_size' is '64'; expected a whole number from 0 to"),
        ({"num_hidden_layers": 2.5}, "'num_hidden_layers' is 2.5; expected a whole number"),
        ({"intermediate_size": -128}, "'intermediate_size' is -128; expected a whole number"),
        ({"num_hidden_layers": 1e12}, "'num_hidden_layers' is 1000000000000.0"),
    ],
)
def test_config_values_transformers_rejects_are_clean_errors(tmp_path, change, message):
    pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        **change,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    res = run("params", tmp_path / "config.json", "--shapes", "hf")
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def test_params_cli_and_claims_file_take_ensure_weight_tying(config_dir, tmp_path):
    from lorascope.audit.claims_file import read_claims

    args = [
        "params",
        str(config_dir / "gpt2.json"),
        "-r",
        "4",
        "-t",
        "c_attn",
        "--modules-to-save",
        "lm_head",
        "--json",
    ]
    untied = json.loads(run(*args).output)
    tied = json.loads(run(*[*args, "--ensure-weight-tying"]).output)
    vocab_by_hidden = 50257 * 768
    assert untied["counts"]["modules_to_save"] == tied["counts"]["modules_to_save"] == vocab_by_hidden
    assert "separate copy" in untied["warnings"][0] and "transformer.wte" in tied["warnings"][0]
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        yaml.safe_dump(
            {
                "claims": [
                    {
                        "name": "tied",
                        "model": str(config_dir / "gpt2.json"),
                        "rank": 4,
                        "targets": "c_attn",
                        "modules_to_save": ["lm_head"],
                        "ensure_weight_tying": True,
                        "claimed": {"lora": 1},
                    },
                    {
                        "name": "bad",
                        "model": str(config_dir / "gpt2.json"),
                        "ensure_weight_tying": "yes",
                        "claimed": {"lora": 1},
                    },
                ]
            }
        )
    )
    res = run(*["audit", str(claims), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 2 and "ensure_weight_tying must be true or false" in res.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"claims": yaml.safe_load(claims.read_text())["claims"][:1]}))
    assert read_claims(good)[0].settings.ensure_weight_tying is True
