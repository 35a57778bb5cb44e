"""`lorascope sweep` and `lorascope select`: folders, parsing, policies, export, and clean errors."""

import json

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from rank.planting import adapter

from lorascope.cli import main
from lorascope.cli.rank import parse_count, parse_ranks


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def ad(tmp_path):
    shapes = {f"model.layers.{i}.self_attn.{p}": (24, 16) for i in range(3) for p in ("q_proj", "v_proj")}
    sigmas = {name: list(np.geomspace(4, 0.05, 8) * (1 + i)) for i, name in enumerate(shapes)}
    return adapter(tmp_path, shapes, sigmas, {"r": 8, "lora_alpha": 16}, name="my-adapter")[0]


def test_sweep_then_select_from_its_folder_and_export(tmp_path, ad, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("sweep", ad, "--ranks", "1,2,4,8")
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "sweep-my-adapter"
    assert "sweep written to reports/sweep-my-adapter" in res.output and "budget-optimal energy" in res.output
    assert {"sweep.csv", "sweep_uniform.csv", "sweep_frontier.csv", "sweep.json", "modules.csv"} <= {
        p.name for p in out.iterdir()
    }
    assert sorted(pd.read_csv(out / "sweep.csv")["k"].unique()) == [1, 2, 4, 8]
    assert "report written to reports/sweep-my-adapter/report.html" in res.output
    assert 'id="sweep"' in (out / "report.html").read_text()
    res = run("select", out, "--budget", "0.5k", "--export", tmp_path / "small", "-q", "--no-report")
    assert res.exit_code == 0, res.output
    selected = tmp_path / "reports" / "select-sweep-my-adapter"
    assert not (selected / "report.html").exists()
    sel = json.loads((selected / "selection.json").read_text())
    assert sel["policy"]["budget"] == 500 and sel["totals"]["params"] <= 500
    assert sel["notes"]["knapsack"]["exact"] and (tmp_path / "small" / "adapter_config.json").is_file()
    assert "adapter written to" in res.output


def test_select_prints_the_recommendation(tmp_path, ad):
    res = run("select", ad, "--energy", "0.9", "--out", tmp_path / "sel")
    assert res.exit_code == 0, res.output
    assert (
        "Selected ranks per module type" in res.output and "Policy: energy τ = 0.9 per module" in res.output
    )
    assert "of the original adapter's" in " ".join(res.output.split())  # the terminal wraps the sentence
    table = pd.read_csv(tmp_path / "sel" / "selection.csv")
    assert len(table) == 6 and (table["energy"] >= 0.9).all()


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give exactly one policy"),
        (("--energy", "0.9", "--noise"), "got --energy, --noise"),
        (("--budget", "twenty"), "is not a parameter count"),
    ],
)
def test_select_refuses_bad_policies_cleanly(tmp_path, ad, args, message):
    res = run("select", ad, *args, "--out", tmp_path / "sel")
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_missing_functional_sweep_is_a_clean_error(tmp_path, ad):
    assert run("sweep", ad, "--out", tmp_path / "sw", "-q").exit_code == 0
    res = run("select", "--from-sweep", tmp_path / "sw", "--out", tmp_path / "sel")
    assert res.exit_code == 2 and "functional.csv" in res.output and "--eval-data" in res.output


def test_counts_and_rank_lists_parse():
    assert parse_count("20M") == 20_000_000 and parse_count("1.5B") == 1_500_000_000
    assert (
        parse_count("500k") == 500_000
        and parse_count("20_000_000") == 20_000_000
        and parse_count("2e7") == 20_000_000
    )
    for bad in ("1.5", "20X", "-3", ""):
        with pytest.raises(click.BadParameter):
            parse_count(bad)
    assert parse_ranks("8,1,2-4") == [1, 2, 3, 4, 8] and parse_ranks(None) is None
    with pytest.raises(click.BadParameter):
        parse_ranks("0,2")


def test_select_export_onto_its_input_is_refused_before_any_work(tmp_path, ad):
    before = {p.name: p.read_bytes() for p in ad.iterdir()}
    res = run("select", ad, "--energy", "0.9", "--export", ad, "--out", tmp_path / "sel")
    assert res.exit_code == 2 and "is or holds the input" in res.output and "Traceback" not in res.output
    assert {p.name: p.read_bytes() for p in ad.iterdir()} == before and not (tmp_path / "sel").exists()


def test_analysis_options_on_a_results_folder_are_refused_not_ignored(tmp_path, ad):
    assert run("sweep", ad, "--out", tmp_path / "sw", "-q", "--no-report").exit_code == 0
    for cmd, policy in (("sweep", ()), ("select", ("--energy", "0.9"))):
        res = run(cmd, tmp_path / "sw", *policy, "--include", "q_proj", "--out", tmp_path / f"{cmd}-o")
        assert (
            res.exit_code == 2
            and "holds results already computed, so --include cannot change them" in res.output
        )


def test_export_from_results_refuses_a_source_changed_since(tmp_path, ad):
    assert run("sweep", ad, "--out", tmp_path / "sw", "-q", "--no-report").exit_code == 0
    weights = ad / "adapter_model.safetensors"
    weights.write_bytes(
        weights.read_bytes().replace(b"lora_A", b"lora_A", 1) + b" "
    )  # one byte more: a new sha256
    res = run(
        "select",
        tmp_path / "sw",
        "--energy",
        "0.9",
        "--export",
        tmp_path / "small",
        "--out",
        tmp_path / "sel",
    )
    assert res.exit_code == 2 and "has changed since" in res.output and not (tmp_path / "small").exists()
