"""`audit CLAIMS.yaml`: validation with every problem at once, one row per figure, CSV and HTML outputs."""

import pytest
import yaml

from lorascope.audit.claims_file import read_claims, run_claims
from lorascope.audit.render import render_page, save_audit
from lorascope.errors import LorascopeError


def write(tmp_path, data, name="claims.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def claims(config_dir):
    return {
        "tolerance": 0.02,
        "shapes": "rules",
        "claims": [
            {
                "name": "correct",
                "model": str(config_dir / "llama-2-7b-hf.json"),
                "r": 8,
                "target_modules": ["q_proj", "v_proj"],
                "claimed": {"lora": "4.2M", "percent": "0.062%"},
            },
            {
                "name": "square kv",
                "model": str(config_dir / "mistral-7b-v0.1.mlc-modified.json"),
                "rank": 16,
                "targets": "attn",
                "claimed": {"lora": 32 * 16 * 4 * 8192},
                "source": "https://example.org/post",
            },
            {
                "name": "nothing",
                "model": str(config_dir / "gpt2.json"),
                "shapes": "hf",
                "targets": "q_proj",
                "claimed": "1M",
            },  # gpt2: shapes from transformers
        ],
    }


def test_runs_every_claim(tmp_path, config_dir, hf):
    specs = read_claims(write(tmp_path, claims(config_dir)))
    assert [s.name for s in specs] == ["correct", "square kv", "nothing"]
    table = run_claims(specs)
    assert list(table["verdict"]) == ["ok", "ok", "wrong", "error"]
    wrong = table[table["name"] == "square kv"].iloc[0]
    assert wrong["mistakes"] == "square_kv" and "grouped-query attention ignored" in wrong["explanation"]
    assert "target 'q_proj' matched no module" in table[table["name"] == "nothing"].iloc[0]["explanation"]
    html = render_page(table, "audit <test>")
    assert "audit &lt;test&gt;" in html and "https://example.org/post" in html
    assert "grouped-query attention ignored" in html and "matched no module" in html
    assert 'src="http' not in html and 'href="http' not in html and "@import" not in html  # self-contained
    written = save_audit(tmp_path / "out", table, html)
    assert [p.name for p in written] == ["audit.csv", "audit.html"]
    assert (tmp_path / "out" / "audit.csv").read_text().splitlines()[0].startswith("name,model,arch,targets")


def test_relative_model_paths(tmp_path, config_dir):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "llama.json").write_text((config_dir / "llama-2-7b-hf.json").read_text())
    claim = {"model": "cfg/llama.json", "rank": 8, "targets": "q_proj,v_proj", "claimed": {"lora": 4_194_304}}
    (spec,) = read_claims(write(tmp_path, [{**claim, "shapes": "rules"}]))
    assert spec.model == tmp_path / "cfg" / "llama.json"
    assert list(run_claims([spec])["verdict"]) == ["ok"]


def test_all_problems_reported_at_once(tmp_path, config_dir):
    data = {
        "claims": [
            {"model": str(config_dir / "gpt2.json"), "rnak": 8, "claimed": {"lora": "33M"}},
            {"name": "b", "model": "missing.json", "claimed": {"lora": "lots"}},
            {
                "name": "c",
                "model": str(config_dir / "gpt2.json"),
                "targets": ".*(",
                "claimed": {"precent": 1},
            },
            {
                "name": "d",
                "model": str(config_dir / "gpt2.json"),
                "claimed": {"lora": 1},
                "rank": 0,
                "layers": "3-1",
            },
            "just text",
            {
                "name": "f",
                "model": str(config_dir / "gpt2.json"),
                "claimed": {"lora": 0},
                "modules_to_save": 5,
                "dora": "false",
                "allow_unmatched": "no",
            },
        ],
        "colour": "red",
    }
    with pytest.raises(LorascopeError) as err:
        read_claims(write(tmp_path, data))
    text = str(err.value)
    for expected in (
        "top-level key 'colour' is not known",
        "claim 1: key 'rnak' is not known",
        "claim 2 (b): model 'missing.json' does not exist",
        "claim 2 (b): claimed lora 'lots' is not a parameter count",
        "claim 3 (c): targets '.*(' is not a valid regular expression",
        "claimed key 'precent' is not known",
        "claim 4 (d): rank must be a positive integer",
        "claim 5: expected a mapping",
        "claim 6 (f): claimed lora 0 is not a parameter count",
        "claim 6 (f): modules_to_save must be a module name or a list of names, found 5",
        "claim 6 (f): dora must be true or false, found 'false'",  # a string, not YAML's false
        "claim 6 (f): allow_unmatched must be true or false, found 'no'",
    ):
        assert expected in text, (expected, text)


def test_malformed_yaml(tmp_path):
    with pytest.raises(LorascopeError, match="is not valid YAML"):
        read_claims(write(tmp_path, "claims: [\n  - name: x\n    model: : :"))
    with pytest.raises(LorascopeError, match="expected a list of claims, or a mapping with a 'claims:' list"):
        read_claims(write(tmp_path, {"model": "x"}))


def test_a_folder_or_binary_file_is_not_a_claims_file(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(LorascopeError, match="is not a regular file; expected a claims YAML file"):
        read_claims(tmp_path / "folder")
    (tmp_path / "binary.yaml").write_bytes(b"claims:\n  - name: \xff\xfe\n")
    with pytest.raises(LorascopeError, match="is not UTF-8 text"):
        read_claims(tmp_path / "binary.yaml")


def test_layers_the_model_lacks_are_noted_in_the_row_and_the_page(tmp_path, config_dir):
    data = {
        "claims": [
            {
                "name": "deep",
                "model": str(config_dir / "llama-2-7b-hf.json"),
                "shapes": "rules",
                "rank": 16,
                "targets": ["q_proj"],
                "layers": "30-40",
                "claimed": {"lora": 2 * 16 * (4096 + 4096)},
            }
        ]
    }
    table = run_claims(read_claims(write(tmp_path, data)))
    row = table.iloc[0]
    assert row["verdict"] == "ok" and "names layers this model does not have: 32-40" in row["notes"]
    assert "names layers this model does not have: 32-40" in render_page(table, "audit")
