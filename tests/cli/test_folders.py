"""Every command takes the folders lorascope writes where they make sense, and refuses the others with one
paragraph that says what the folder is and what to run instead (exit code 2, no traceback)."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from lorascope.cli import main
from lorascope.cli.folders import select_inputs, sweep_inputs
from lorascope.kinds import describe, folder_kind


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_each_folder_is_told_apart(folders):
    kinds = {k: folder_kind(p) for k, p in folders.items()}
    assert kinds == {
        "base": None,
        "run": "run",
        "run2": "run",
        "train-sweep": "train-sweep",
        "results": "results",
        "compare": "compare",
        "demo": "demo",
        "params": "params",
        "audit": "audit",
    }
    assert folder_kind(folders["demo"] / "spectra") == "results-set"
    assert describe(folders["demo"] / "spectra") == "a folder of 2 results folders"


def test_a_marker_lorascope_did_not_write_does_not_count(folders, tmp_path):
    """A results folder's manifest lists what lorascope wrote: a metrics.json dropped in later is not a
    run."""
    import shutil

    copy = shutil.copytree(folders["results"], tmp_path / "results")
    (copy / "metrics.json").write_text("{}")
    (copy / "tuned").mkdir()
    assert folder_kind(copy) == "results"
    (copy / "demo.json").write_text("{}")
    assert folder_kind(copy) == "results"


def test_a_run_folder_is_its_adapter_on_its_base(folders, tmp_path):
    res = run("spectrum", folders["run"], "--out", tmp_path / "s", "--no-report", "-q")
    assert res.exit_code == 0, res.output
    direct = run(
        "spectrum", folders["base"], folders["run"] / "adapter", "--out", tmp_path / "d", "--no-report", "-q"
    )
    assert direct.exit_code == 0, direct.output
    cols = ["name", "fro_norm", "entropy_rank", "rank_90", "relative_update"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "s" / "modules.csv")[cols], pd.read_csv(tmp_path / "d" / "modules.csv")[cols]
    )
    res = run("spectrum", folders["base"], folders["run"], "--out", tmp_path / "b", "--no-report", "-q")
    assert res.exit_code == 0, res.output  # BASE RUN_DIR: that run's update on the base given
    res = run("select", folders["run"], "--energy", "0.9", "--out", tmp_path / "sel", "--no-report", "-q")
    assert res.exit_code == 0, res.output
    res = run("compare", folders["run2"], folders["run"], "--out", tmp_path / "c", "--no-report", "-q")
    assert res.exit_code == 0, res.output  # --base: the base both runs recorded
    assert "amplification.csv" in {p.name for p in (tmp_path / "c").iterdir()}
    res = run("intruders", folders["base"], folders["run"], "--out", tmp_path / "i", "--no-report", "-q")
    assert res.exit_code == 0, res.output
    res = run("params", folders["run"])
    assert res.exit_code == 0 and "adapter" in res.output.lower(), res.output


def test_a_demo_folder_is_its_training_sweep_where_commands_read_sweeps(folders):
    assert sweep_inputs([folders["demo"]]) == [folders["demo"] / "runs"]
    assert sweep_inputs([folders["results"]]) == [folders["results"]]
    assert select_inputs([folders["run"]]) == [folders["base"], folders["run"] / "adapter"]


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["spectrum", "results"],
            [
                "is a results folder",
                "`lorascope spectrum` takes checkpoints",
                "`lorascope report DIR` renders it",
            ],
        ),
        (["spectrum", "demo"], ["is a demo folder", "re-renders its page"]),
        (["spectrum", "train-sweep"], ["is a training sweep folder", "give one run folder inside it"]),
        (["sweep", "compare"], ["is a comparison folder", "`lorascope sweep` takes"]),
        (["sweep", "params"], ["is a parameter-count folder", "open params.json"]),
        (
            ["select", "demo", "--energy", "0.9"],
            ["holding 2 runs", "give one run folder", "lora-r2-q_proj-v_proj"],
        ),
        (["select", "train-sweep", "--energy", "0.9"], ["holding 2 runs", "lorascope select"]),
        (["select", "audit", "--energy", "0.9"], ["is an audit folder"]),
        (["report", "params"], ["parameter-count folder", "has no report page"]),
        (["report", "base"], ["is not a folder lorascope wrote a report for", "`lorascope spectrum"]),
        (["compare", "results", "run"], ["is a results folder", "two updates of one base"]),
        (["compare", "run", "run2", "--base", "run"], ["--base", "trainer run folder"]),
        (["intruders", "run", "run2"], ["is a trainer run folder", "a base model as BASE"]),
        (["intruders", "base", "demo"], ["is a demo folder"]),
        (["params", "results"], ["is a results folder", "`lorascope params` takes"]),
    ],
)
def test_other_folders_are_refused_with_what_to_run(folders, tmp_path, args, words):
    args = [args[0]] + [str(folders[a]) if a in folders else a for a in args[1:]]
    res = run(*args, "--out", tmp_path / "out") if args[0] not in ("params", "report") else run(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for w in words:
        assert w in res.output, (w, res.output)


def test_a_folder_of_results_folders_is_compared_on_one_page(folders, tmp_path):
    import shutil

    spectra = shutil.copytree(folders["demo"] / "spectra", tmp_path / "spectra")
    res = run("report", spectra)
    assert res.exit_code == 0, res.output
    html = (spectra / "report.html").read_text(encoding="utf-8")
    assert all(name in html for name in ("lora-r2-q_proj-v_proj", "lora-r4-q_proj-v_proj"))
    shutil.rmtree(spectra / "lora-r2-q_proj-v_proj")
    res = run("report", spectra)  # one results folder left: name it, rather than guess
    assert res.exit_code == 2 and "holds one results folder, lora-r4-q_proj-v_proj" in res.output
