"""The demo pipeline on a tiny configuration: pre-train, sweep, analyze every run, render the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from lorascope.train import demo as demo_module
from lorascope.train.demo import DemoConfig, run_demo


@pytest.fixture
def small(tiny_config, cache, monkeypatch) -> DemoConfig:
    monkeypatch.setenv("LORASCOPE_CACHE", str(cache))
    return DemoConfig(ranks=(1, 4), targets=("v_proj", "all-linear"), steps=8, rank_every=4, task="edit:4",
                      pretrain=tiny_config)


def test_demo_pipeline(small, tiny_base, tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", small, progress=False, log=lines.append)
    names = ["lora-r1-v_proj", "lora-r4-v_proj", "lora-r1-all-linear", "lora-r4-all-linear", "full", "freeze-b1"]
    assert list(result.spectra) == names and result.table["run"].tolist() == names
    assert "from the cache" in lines[0] and len([l for l in lines if l.startswith("[")]) == 6
    for name in names:
        modules = pd.read_csv(tmp_path / "demo" / "spectra" / name / "modules.csv")
        expected_source = "dense" if name in ("full", "freeze-b1") else "lora"
        assert (modules["family"] == expected_source).all(), name
    value_only = pd.read_csv(tmp_path / "demo" / "spectra" / "lora-r4-v_proj" / "modules.csv")
    assert len(value_only) == 2 and value_only["name"].str.endswith("v_proj").all()
    assert (value_only["rank_90"] <= 4).all()
    frozen = pd.read_csv(tmp_path / "demo" / "spectra" / "freeze-b1" / "modules.csv")
    first = frozen["name"].str.startswith("model.layers.0.") | (frozen["name"] == "model.embed_tokens")
    assert (frozen.loc[first, "fro_norm"] == 0).all() and (frozen.loc[~first, "fro_norm"] > 0).all()  # block 0 froze
    assert result.report is not None and result.report.is_file() and result.report.name == "report.html"
    record = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(record["seconds"]) == {"pretrain", "sweep", "analyze", "report"}


def test_demo_command(small, tiny_base, tmp_path, monkeypatch):
    from lorascope.cli import main

    real = demo_module.run_demo
    monkeypatch.setattr(demo_module, "run_demo", lambda out, **kw: real(out, small, **kw))
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "-q"])
    assert res.exit_code == 0, res.output
    assert f"report written to {tmp_path / 'd' / 'report.html'}" in res.output
    assert f"runs written to {tmp_path / 'd' / 'runs'}" in res.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "other"), "-q"])
    assert res.exit_code == 2 and "refusing" in res.output and "Traceback" not in res.output
