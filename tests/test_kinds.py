"""lorascope/kinds.py: which lorascope folder a path is, from the files it declares, never from its name."""

import numpy as np
import pytest

from lorascope.kinds import KINDS, describe, folder_kind, results_set
from lorascope.outputs import writing
from lorascope.results import Results, modules_frame


def results(path):
    rows = [{"name": "m.layers.0.q", "layer": 0, "module": "q", "rows": 2, "cols": 2, "fro_norm": 1.0}]
    return Results(modules_frame(rows), {"m.layers.0.q": np.array([1.0])}, {"kind": "adapter"}).save(path)


def test_kinds_from_their_markers(tmp_path):
    assert folder_kind(results(tmp_path / "res")) == "results"
    (tmp_path / "run" / "tuned").mkdir(parents=True)
    (tmp_path / "run" / "metrics.json").write_text("{}")
    assert folder_kind(tmp_path / "run") == "run" and "trainer run" in describe(tmp_path / "run")
    (tmp_path / "plain").mkdir()
    assert (
        folder_kind(tmp_path / "plain") is None
        and describe(tmp_path / "plain") == "not a folder lorascope wrote"
    )
    assert set(KINDS) >= {"demo", "results", "compare", "run", "train-sweep", "params", "audit"}


def test_a_marker_lorascope_did_not_write_does_not_count(tmp_path):
    with writing(tmp_path / "out", "test") as tx:
        (tx.stage / "notes.txt").write_text("x")
    (tmp_path / "out" / "audit.csv").write_text("user's own table")  # not in the manifest
    assert folder_kind(tmp_path / "out") is None


def test_a_folder_of_results_folders(tmp_path):
    results(tmp_path / "set" / "b")
    results(tmp_path / "set" / "a")
    assert folder_kind(tmp_path / "set") == "results-set"
    assert [p.name for p in results_set(tmp_path / "set")] == ["a", "b"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_says_what_to_do_with_it(kind):
    assert KINDS[kind].hint and KINDS[kind].what and KINDS[kind].markers
