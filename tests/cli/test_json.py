"""`--json`: every command prints one document on stdout that docs/cli-json.schema.json accepts (checked with
the ``jsonschema`` package), with what it computed and where it wrote it; failures print an ``ok: false``
document.

train, train-sweep and demo are checked where their runs are trained (tests/train/test_cli.py,
tests/train/test_demo.py); ``test_every_command_is_covered`` makes sure no command is left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli.schema import SCHEMA, document
from click.testing import CliRunner

from lorascope.cli import COMMANDS, main

CHECKED_ELSEWHERE = {
    "train": "tests/train/test_cli.py",
    "train-sweep": "tests/train/test_cli.py",
    "demo": "tests/train/test_demo.py",
}
CHECKED_HERE = {"spectrum", "sweep", "select", "report", "compare", "intruders", "params", "audit"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_command_is_covered():
    from lorascope.cli import LazyGroup  # noqa: F401 - the group resolves each command lazily

    assert CHECKED_HERE | set(CHECKED_ELSEWHERE) == set(COMMANDS)
    schema = json.loads(SCHEMA.read_text())
    assert set(schema["properties"]["command"]["enum"]) == set(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(None, name)
        assert "as_json" in {p.name for p in command.params}, name
        covered = {json.dumps(c["if"]["properties"]["command"]) for c in schema["allOf"][1:]}
        assert any(name in c for c in covered), f"no schema branch for {name}"
    for name, where in CHECKED_ELSEWHERE.items():
        text = (Path(__file__).parents[2] / where).read_text()
        assert f'document(res.stdout, "{name}")' in text, (name, where)


def test_spectrum(folders, tmp_path):
    res = run("spectrum", folders["base"], folders["run"] / "adapter", "--out", tmp_path / "s", "--json")
    doc = document(res.stdout, "spectrum")
    assert doc["written"] == {"results": str(tmp_path / "s"), "report": str(tmp_path / "s" / "report.html")}
    modules = pd.read_csv(tmp_path / "s" / "modules.csv")
    assert doc["modules"] == len(modules) == 4 and doc["kind"] == "adapter+base"
    assert {t["module_type"] for t in doc["module_types"]} == {"self_attn.q_proj", "self_attn.v_proj"}
    assert "results written to" in res.stderr and "Median per module type" not in res.output


def test_sweep_and_select(folders, tmp_path):
    res = run("sweep", folders["results"], "--ranks", "1,2,4", "--out", tmp_path / "sw", "--json")
    doc = document(res.stdout, "sweep")
    assert doc["ranks"] == [1, 2, 4] and doc["modules"] == 4 and doc["functional"] is None
    uniform = pd.read_csv(tmp_path / "sw" / "sweep_uniform.csv")
    assert [row["k"] for row in doc["uniform"]] == uniform["k"].tolist()
    res = run(
        "select",
        tmp_path / "sw",
        "--energy",
        "0.9",
        "--export",
        tmp_path / "small",
        "--out",
        tmp_path / "sel",
        "--json",
    )
    doc = document(res.stdout, "select")
    assert doc["written"]["adapter"] == str(tmp_path / "small") and doc["export"]["modules"] == 4
    selection = pd.read_csv(tmp_path / "sel" / "selection.csv").set_index("name")
    assert {r["name"]: r["rank"] for r in doc["ranks"]} == selection["rank"].to_dict()
    assert all(r["energy"] >= 0.9 for r in doc["ranks"])


def test_report_of_each_kind(folders, tmp_path):
    for kind, sections in [
        ("results", "headline"),
        ("compare", None),
        ("train-sweep", "answer"),
        ("run", "history"),
        ("demo", "answer"),
    ]:
        res = run("report", folders[kind], "--out", tmp_path / f"{kind}.html", "--json")
        doc = document(res.stdout, "report")
        assert doc["written"]["report"] == str(tmp_path / f"{kind}.html")
        assert sections is None or sections in doc["sections"], (kind, doc["sections"])
    res = run(
        "report",
        folders["results"],
        folders["demo"] / "spectra" / folders["run"].name,
        "--label",
        "a",
        "--label",
        "b",
        "--out",
        tmp_path / "two.html",
        "--json",
    )
    doc = document(res.stdout, "report")
    assert doc["sections"][0] == "answer" and "runs" in doc["sections"]  # both analyzed a run's adapter
    assert "functional" not in doc["sections"]  # neither folder holds a functional sweep


def test_compare_and_intruders(folders, tmp_path):
    res = run("compare", folders["run2"], folders["run"], "--out", tmp_path / "c", "--json")
    doc = document(res.stdout, "compare")
    assert doc["totals"]["modules"] == 4 and len(doc["labels"]) == 2
    assert "mean_cosine" in doc["headline"]
    res = run("intruders", folders["base"], folders["run"], "--out", tmp_path / "i", "--json")
    doc = document(res.stdout, "intruders")
    update = next(iter(doc["headline"]["updates"].values()))
    table = pd.read_csv(tmp_path / "i" / "intruder_modules.csv")
    assert update["intruders"] == int(table["intruders"].sum()) and update["modules"] == 4


def test_params_and_audit(folders, tmp_path):
    res = run("params", folders["run"], "--json")
    doc = document(res.stdout, "params")
    assert doc["written"] == {} and doc["counts"]["actual"] == 4 * 4 * (24 + 24)  # 4 modules, r = 4, 24 × 24
    (tmp_path / "claims.yaml").write_text(
        yaml.safe_dump(
            {
                "shapes": "rules",
                "claims": [
                    {
                        "name": "q and v",
                        "model": str(folders["base"] / "config.json"),
                        "rank": 4,
                        "targets": "q_proj,v_proj",
                        "claimed": "1",
                    }
                ],
            }
        )
    )
    res = run("audit", tmp_path / "claims.yaml", "--out", tmp_path / "a", "--json")
    assert res.exit_code == 0, res.output  # a wrong claim is a finding, not an error
    doc = document(res.stdout, "audit")
    assert doc["verdicts"] == {"wrong": 1}
    assert doc["written"]["table"] == str(tmp_path / "a" / "audit.csv")
    assert [c["name"] for c in doc["claims"]] == ["q and v"] and sum(doc["verdicts"].values()) == 1


@pytest.mark.parametrize(
    "args, exit_code, words",
    [
        (["spectrum", "does-not-exist"], 2, "does-not-exist"),
        (["sweep", "--ranks", "x"], 2, ""),
        (["report", "PARAMS"], 2, "parameter-count folder"),
        (["select", "DEMO", "--energy", "0.9"], 2, "give one run folder"),
    ],
)
def test_failures_are_documents_too(folders, args, exit_code, words):
    named = {"PARAMS": str(folders["params"]), "DEMO": str(folders["demo"])}
    args = [named.get(a, a) for a in args]
    res = run(*args, "--json")
    assert res.exit_code == exit_code, res.output
    doc = document(res.stdout, args[0], ok=False)
    assert doc["error"]["exit_code"] == exit_code and words in doc["error"]["message"]
    assert "Traceback" not in res.output
