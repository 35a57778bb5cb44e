"""The demo on a tiny configuration, end to end through the CLI: pre-train, sweep, analyze every run, render
the page that opens with the answer, re-render it with `lorascope report DEMO_DIR`, and open it in
Chromium."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest
from cli.schema import document
from click.testing import CliRunner
from report.chromium import Browser, find_chromium
from report.pageparse import parse_page

from lorascope.cli import main
from lorascope.train import demo as demo_module
from lorascope.train.demo import DemoConfig, run_demo

NAMES = ["lora-r1-v_proj", "lora-r4-v_proj", "lora-r1-all-linear", "lora-r4-all-linear", "full", "freeze-b1"]


def small_config(tiny_config) -> DemoConfig:
    return DemoConfig(
        ranks=(1, 4),
        targets=("v_proj", "all-linear"),
        steps=8,
        rank_every=4,
        task="edit:4",
        pretrain=tiny_config,
        functional_ranks=(1, 2, 4, 8),
    )


@pytest.fixture(scope="module")
def demo(tiny_config, cache, tiny_base, tmp_path_factory):
    """`lorascope demo --json` on the tiny configuration: (folder, the JSON document)."""
    out = tmp_path_factory.mktemp("demo") / "d"
    real = demo_module.run_demo
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORASCOPE_CACHE", str(cache))
        mp.setattr(demo_module, "run_demo", lambda o, **kw: real(o, small_config(tiny_config), **kw))
        res = CliRunner().invoke(main, ["demo", "--out", str(out), "-q", "--json"])
    assert res.exit_code == 0, res.output
    assert f"report written to {out / 'report.html'}" in res.stderr  # stdout holds the document alone
    return out, document(res.stdout, "demo")


def test_every_run_is_trained_analyzed_and_listed(demo):
    out, doc = demo
    assert [r["run"] for r in doc["runs"]] == NAMES and list(doc["spectra"]) == NAMES
    for name in NAMES:
        modules = pd.read_csv(out / "spectra" / name / "modules.csv")
        expected = "dense" if name in ("full", "freeze-b1") else "lora"
        assert (modules["family"] == expected).all(), name
    value_only = pd.read_csv(out / "spectra" / "lora-r4-v_proj" / "modules.csv")
    assert len(value_only) == 2 and value_only["name"].str.endswith("v_proj").all()
    assert (value_only["rank_90"] <= 4).all()
    frozen = pd.read_csv(out / "spectra" / "freeze-b1" / "modules.csv")
    first = frozen["name"].str.startswith("model.layers.0.") | (frozen["name"] == "model.embed_tokens")
    assert (frozen.loc[first, "fro_norm"] == 0).all() and (frozen.loc[~first, "fro_norm"] > 0).all()
    record = json.loads((out / "demo.json").read_text())
    assert set(record["seconds"]) == {"pretrain", "sweep", "analyze", "report"}
    assert record["spectra"]["full"] == "spectra/full"  # relative: the folder can move
    # the full fine-tune's functional sweep: the pick is the smallest k of the grid within 1 % of the change
    functional = pd.read_csv(out / "spectra" / "full" / "functional.csv")
    pick = doc["functional_pick"]
    assert pick == record["functional_pick"] and pick["tolerance"] == 0.01
    truncated = functional[functional["point"] == "truncated"].sort_values("k")
    assert sorted(truncated["k"]) == [1, 2, 4, 8]
    base, full = (float(functional.loc[functional["point"] == p, "loss"].iat[0]) for p in ("base", "full"))
    kept = (base - truncated["loss"]) / (base - full)
    within = truncated[(kept >= 0.99).to_numpy()]
    assert pick["k"] == (int(within["k"].iat[0]) if len(within) else 8)


def test_the_page_opens_with_every_runs_outcome(demo):
    out, _ = demo
    page = parse_page((out / "report.html").read_text(encoding="utf-8"))
    assert page.sections[:4] == ["answer", "functional", "rank-during-training", "forgetting"]
    assert page.sections.index("answer") < page.sections.index("runs") < page.sections.index("heatmaps")
    figures = {i.get("data-figure") for i in page.images}
    assert {
        "outcome_rank",
        "outcome_parameters",
        "rank_evolution",
        "forgetting_rank",
        "functional_energy_full",
    } <= figures
    index = pd.read_csv(out / "runs" / "index.csv").set_index("run")
    outcome = next(t for t in page.tables if t.header[:4] == ["run", "method", "targets", "r"])
    rows = {r[0]: dict(zip(outcome.header, r)) for r in outcome.rows}
    assert list(rows) == NAMES
    for name in NAMES:
        for metric in ("edit_acc", "paraphrase_acc", "retain_same_acc", "retain_other_acc", "eval_loss"):
            assert float(rows[name][metric]) == pytest.approx(index.loc[name, metric], rel=1e-3, abs=1e-4), (
                name,
                metric,
            )
        assert int(rows[name]["parameters"]) == index.loc[name, "trainable_parameters"]
    for name in ("full", "freeze-b1"):
        assert rows[name]["r"] == ""  # references: no rank


def test_zero_updates_are_named_and_left_out(demo):
    out, _ = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    note = re.search(r"Modules whose update is exactly zero[^<]*", html).group(0)
    frozen = pd.read_csv(out / "spectra" / "freeze-b1" / "modules.csv")
    n_zero = int((frozen["fro_norm"] == 0).sum())
    assert f"freeze-b1: {n_zero} of {len(frozen)}" in note
    zero_table = next(t for t in parse_page(html).tables if t.header == ["run", "module"])
    assert sorted(r[1] for r in zero_table.rows if r[0] == "freeze-b1") == sorted(
        frozen.loc[frozen["fro_norm"] == 0, "name"]
    )


def test_report_of_the_demo_folder_re_renders_its_page(demo):
    out, _ = demo
    before = (out / "report.html").stat().st_mtime_ns
    res = CliRunner().invoke(main, ["report", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = document(res.stdout, "report")
    assert doc["written"]["report"] == str(out / "report.html")
    assert (out / "report.html").stat().st_mtime_ns > before
    assert doc["sections"][:4] == ["answer", "functional", "rank-during-training", "forgetting"]
    assert doc["title"].startswith("lorascope demo: 6 fine-tunes of one base")
    assert {p.split("/")[-1] for p in doc["figures"]} >= {"outcome_rank.png", "rank_evolution.png"}
    # the runs folder alone has a page too: the training sweep's answer, no spectra
    res = CliRunner().invoke(
        main, ["report", str(out / "runs"), "--out", str(out.parent / "runs.html"), "--json"]
    )
    runs_doc = document(res.stdout, "report")
    assert runs_doc["sections"][:1] == ["answer"] and "rank-during-training" in runs_doc["sections"]


def test_run_demo_refuses_a_folder_it_did_not_write(tiny_config, cache, tiny_base, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCOPE_CACHE", str(cache))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    real = demo_module.run_demo
    monkeypatch.setattr(demo_module, "run_demo", lambda o, **kw: real(o, small_config(tiny_config), **kw))
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "other"), "-q", "--json"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    doc = document(res.stdout, "demo", ok=False)
    assert "refusing" in doc["error"]["message"] and doc["error"]["exit_code"] == 2
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"


def test_run_demo_logs_each_stage(tiny_config, cache, tiny_base, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCOPE_CACHE", str(cache))
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", small_config(tiny_config), progress=False, log=lines.append)
    assert "from the cache" in lines[0] and len([line for line in lines if line.startswith("[")]) == 6
    assert result.report == tmp_path / "demo" / "report.html" and result.pick is not None


@pytest.mark.browser
def test_the_demo_page_in_a_browser(demo, tmp_path):
    """Headless Chromium opens the page from file://: no console errors, nothing fetched, every figure
    decodes, and the first screen shows the answer (its cards and the outcome figure)."""
    from PIL import Image

    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "no headless Chromium found: install Debian's `chromium` package or set LORASCOPE_CHROMIUM"
        )
    out, _ = demo
    page = out / "report.html"
    browser = Browser(exe, tmp_path / "profile")
    try:
        tab = browser.tab()
        tab.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1400, "deviceScaleFactor": 1, "mobile": False},
        )
        tab.goto(page.as_uri())
        assert tab.problems() == []
        assert [u for u in tab.requests() if not u.startswith("data:")] == [page.as_uri()]
        sizes = tab.evaluate(
            "Promise.all(Array.from(document.images).map("
            "i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])))"
        )
        assert len(sizes) >= 5 and all(w > 0 and h > 0 for w, h in sizes)
        top = tab.evaluate(
            "(() => { const r = document.querySelector('img[data-figure=\"outcome_rank\"]')"
            ".getBoundingClientRect(); return [r.top, r.bottom]; })()"
        )
        assert 0 < top[0] < 1400, "the outcome figure starts on the first screen"
        cards = tab.evaluate("Array.from(document.querySelectorAll('#answer .card')).map(c => c.textContent)")
        assert len(cards) == 4 and any("full" in c.lower() for c in cards)  # 2 target sets, full, freeze
        png = tab.screenshot()
    finally:
        browser.close()
    (tmp_path / "demo-screenshot.png").write_bytes(png)
    im = Image.open(io.BytesIO(png)).convert("L")
    assert im.size == (1280, 1400)
    lo, hi = im.getextrema()
    assert lo < 60 and hi > 240 and sum(1 for n in im.histogram() if n) > 40
