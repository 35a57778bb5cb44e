"""The audit's output: layer runs, the terminal, and one row model for a claim in the terminal, CSV and
HTML."""

import io

import pandas as pd
import yaml
from rich.console import Console

from lorascope.audit import AuditOptions, Claim, LoraSettings, audit_source
from lorascope.audit.claims import figure_rows
from lorascope.audit.claims_file import read_claims, run_claims
from lorascope.audit.render import layer_runs, print_claims_table, print_params, render_page, save_audit
from lorascope.audit.targets import parse_targets


def console():
    return Console(file=io.StringIO(), width=140, highlight=False, soft_wrap=True)


def test_layer_runs():
    by_layer = pd.DataFrame(
        {
            "layer": pd.array([0, 1, 2, 4, None], dtype="Int64"),
            "modules": [2, 2, 2, 2, 1],
            "params": [10, 10, 20, 20, 5],
        }
    )
    assert layer_runs(by_layer) == [("0–1", 2, 10), ("2", 2, 20), ("4", 2, 20), ("outside layers", 1, 5)]


def test_params_in_the_terminal(config_dir, hf):
    settings = LoraSettings(rank=8, targets=parse_targets("c_proj"))
    result = audit_source(
        config_dir / "gpt2.json", settings, AuditOptions(shapes="hf"), Claim(lora=12 * 8 * 1536)
    )
    con = console()
    print_params(result, con)
    out = con.file.getvalue()
    assert "shapes from transformers on the meta device" in out
    assert "note: target 'c_proj' matches 2 module types: attn.c_proj, mlp.c_proj" in out
    assert "0–11   │       2 │           43,008" in out  # 8·(768+768) + 8·(768+3072) per layer
    assert "LoRA parameters: reproduced by: mlp.c_proj (12 modules) not counted" in out
    assert "(claim within 0.00%)" in out


def test_one_row_model_for_terminal_csv_and_html(tmp_path, config_dir, hf):
    claim = {
        "name": "post",
        "model": str(config_dir / "gpt2.json"),
        "shapes": "hf",
        "rank": 8,
        "targets": "c_proj",
        "claimed": {"lora": 12 * 8 * 1536, "percent": 0.5},
    }
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump([claim]))
    table = run_claims(read_claims(tmp_path / "claims.yaml"))
    single = audit_source(
        config_dir / "gpt2.json",
        LoraSettings(rank=8, targets=parse_targets("c_proj")),
        AuditOptions(shapes="hf"),
        Claim(lora=12 * 8 * 1536, percent=0.5),
    )
    rows = figure_rows(single.claim)
    shared = ["figure", "claimed_text", "exact_text", "relative_error", "verdict", "explanation", "mistakes"]
    assert table[shared].to_dict("records") == [{k: r[k] for k in shared} for r in rows]
    con = console()
    print_claims_table(table, con)
    terminal = con.file.getvalue()
    html = render_page(table, "audit")
    save_audit(tmp_path / "out", table, html)
    csv = pd.read_csv(tmp_path / "out" / "audit.csv")
    for r in rows:
        assert r["claimed_text"] in terminal and r["verdict"] in terminal
        assert r["explanation"][:40] in html and r["explanation"][:40] in terminal.replace("\n", " ")
    assert list(csv["verdict"]) == [r["verdict"] for r in rows]
    assert list(csv["relative_error"]) == [r["relative_error"] for r in rows]
    assert "claimed_text" not in csv.columns


def test_notes_print_as_written(config_dir, monkeypatch):
    from lorascope.audit import shape_source

    monkeypatch.setattr(shape_source, "transformers_available", lambda: False)
    result = audit_source(
        config_dir / "llama-2-7b-hf.json", LoraSettings(rank=8, targets=parse_targets("q_proj"))
    )
    con = console()
    print_params(result, con)
    assert "pip install 'lorascope[hf]'" in con.file.getvalue()  # not read as a rich style tag
