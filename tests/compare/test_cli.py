"""`lorascope compare` and `lorascope intruders`: outputs, default folders, refusals, clean errors."""

import json

import pandas as pd
from click.testing import CliRunner

from lorascope.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compare_two_adapters_to_default_folder(tiny, monkeypatch):
    a = tiny.adapter("r4", 4, seed=1)
    b = tiny.adapter("r8", 8, seed=2)
    monkeypatch.chdir(tiny.root)
    res = run("compare", a, b, "--no-report")
    assert res.exit_code == 0, res.output
    out = tiny.root / "reports" / "compare-r4-vs-r8"
    assert "results written to reports/compare-r4-vs-r8" in res.output
    assert "6 modules compared" in res.output
    files = {p.name for p in out.iterdir()}
    assert files == {
        "compare_modules.csv",
        "subspace_similarity.csv",
        "compare_summary.json",
        ".lorascope-manifest.json",
    }
    assert len(pd.read_csv(out / "compare_modules.csv")) == 6


def test_compare_with_base_writes_every_table_and_a_report(tiny):
    base = tiny.base_file()
    lora = tiny.adapter("lora", 4, seed=3)
    full = tiny.full("full", seed=4)
    out = tiny.root / "res"
    res = run(
        "compare",
        lora,
        full,
        "--base",
        base,
        "--out",
        out,
        "-q",
        "--intruder-k",
        4,
        "--epsilon",
        0.4,
        "--labels",
        "LoRA",
        "FFT",
    )
    assert res.exit_code == 0, res.output
    assert "modules compared" not in res.output and f"results written to {out}" in res.output
    files = {p.name for p in out.iterdir()}
    assert files >= {
        "compare_modules.csv",
        "subspace_similarity.csv",
        "amplification.csv",
        "intruders.csv",
        "intruder_modules.csv",
        "intruder_sweep.csv",
        "compare_summary.json",
        "report.html",
        "figures",
    }
    assert {p.name for p in (out / "figures").iterdir()} == {
        "compare_phi.png",
        "compare_overlap.png",
        "compare_amplification.png",
        "compare_intruders.png",
    }
    summary = json.loads((out / "compare_summary.json").read_text())
    assert summary["labels"] == ["LoRA", "FFT"] and summary["options"]["intruders"]["epsilon"] == 0.4
    assert set(pd.read_csv(out / "intruders.csv")["j"]) == {1, 2, 3, 4}
    html = (out / "report.html").read_text()
    assert "Comparing two updates" in html and "Table 7" in html
    (out / "report.html").unlink()
    res = run("report", out)  # re-rendered from the comparison tables alone
    assert res.exit_code == 0, res.output
    assert f"report written to {out / 'report.html'}" in res.output
    assert "Comparing two updates" in (out / "report.html").read_text()
    res = run("compare", lora, full, "--base", base, "--out", out, "-q", "--no-intruders", "--no-report")
    assert res.exit_code == 0, res.output  # its own folder may be written again; stale tables go
    assert not (out / "intruders.csv").exists() and (out / "amplification.csv").exists()


def test_intruders_command(tiny, monkeypatch):
    base = tiny.base_file()
    lora = tiny.adapter("lora", 4, seed=5)
    monkeypatch.chdir(tiny.root)
    res = run("intruders", base, lora, "--intruder-k", 3)
    assert res.exit_code == 0, res.output
    out = tiny.root / "reports" / "intruders-base-model-vs-lora"
    assert "intruder dimensions at ε = 0.5" in res.output and out.is_dir()
    sweep = pd.read_csv(out / "intruder_sweep.csv")
    assert sweep["epsilon"].min() == 0.1 and sweep["epsilon"].max() == 0.9
    assert (out / "figures" / "compare_intruders.png").is_file() and (out / "report.html").is_file()


def test_bad_input_exits_2_without_traceback(tiny):
    base = tiny.base_file()
    full = tiny.full("full", seed=6)
    lora = tiny.adapter("lora", 4, seed=7)
    cases = [
        (("compare", full, lora), "needs the base model"),  # a full checkpoint without --base
        (("compare", lora, lora, "--base", lora), "base must be"),
        (("intruders", lora, base), "first input must be the base"),
        (("compare", lora, tiny.root / "missing"), "does not exist"),
        (("intruders", base, lora, "--epsilon", 1.5), "1.5"),
        (("compare", lora, lora, "--device", "tpu"), "device"),
    ]
    for args, message in cases:
        res = run(*args, "-q", "--out", tiny.root / "never")
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (tiny.root / "never").exists()


def test_refuses_a_folder_it_did_not_write(tiny):
    lora = tiny.adapter("lora", 4, seed=8)
    mine = tiny.root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    res = run("compare", lora, lora, "--out", mine, "-q")
    assert res.exit_code == 2 and "refusing to write" in res.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_compare_into_a_spectrum_folder_joins_its_report(tiny):
    """Tables written beside spectrum results: the spectrum report gains the comparison section."""
    a = tiny.adapter("r4", 4, seed=9)
    b = tiny.adapter("r8", 8, seed=10)
    out = tiny.root / "spec"
    assert run("spectrum", a, "--out", out, "-q", "--no-report").exit_code == 0
    res = run("compare", a, b, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert "Comparing two updates" in html and "Singular value spectra" in html
    assert (out / "modules.csv").is_file() and (out / "figures" / "compare_phi.png").is_file()


def test_a_folder_with_only_a_summary_json_is_not_taken_for_results(tiny):
    a = tiny.adapter("r4", 4, seed=1)
    b = tiny.adapter("r8", 8, seed=2)
    mine = tiny.root / "mine"
    mine.mkdir()
    for name in ("summary.json", "intruders.csv", "amplification.csv"):
        (mine / name).write_text(f"my {name}")
    for args in (("compare", a, b), ("intruders", tiny.base_file(), a), ("spectrum", a)):
        res = run(*args, "--out", mine, "-q")
        assert (
            res.exit_code == 2 and "refusing to write into it" in res.output and "Traceback" not in res.output
        )
    assert {p.name: p.read_text() for p in mine.iterdir()} == {
        n: f"my {n}" for n in ("summary.json", "intruders.csv", "amplification.csv")
    }


def test_the_same_label_twice_is_refused(tiny):
    a = tiny.adapter("r4", 4, seed=1)
    b = tiny.adapter("r8", 8, seed=2)
    res = run("compare", a, b, "--labels", "same", "same", "--out", tiny.root / "o")
    assert res.exit_code == 2 and "give two different names" in res.output and not (tiny.root / "o").exists()
