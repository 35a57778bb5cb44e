"""lorascope/outputs.py: output folders written as transactions — all or nothing, and never a file of
others."""

import pytest

from lorascope.errors import LorascopeError
from lorascope.outputs import remove_written, shown, writing, written_files


def test_replace_drops_old_files_and_update_keeps_them(tmp_path):
    out = tmp_path / "out"
    with writing(out, "a") as tx:
        (tx.stage / "one.csv").write_text("1")
        assert shown(tx.stage / "one.csv") == out / "one.csv"  # users are shown the final path
    with writing(out, "b") as tx:
        (tx.stage / "two.csv").write_text("2")
    assert written_files(out) == {"two.csv"} and not (out / "one.csv").exists()
    with writing(out, "c", mode="update") as tx:
        (tx.stage / "three.csv").write_text("3")
    assert written_files(out) == {"two.csv", "three.csv"}


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    with writing(out, "a") as tx:
        (tx.stage / "one.csv").write_text("1")
    with pytest.raises(RuntimeError) as info:
        with writing(out, "b") as tx:
            (tx.stage / "one.csv").write_text("changed")
            raise RuntimeError("boom")
    assert (out / "one.csv").read_text() == "1" and "left as it was" in info.value.__notes__[0]
    assert not [
        p for p in tmp_path.iterdir() if "stage" in p.name
    ]  # no stage left beside it (the lock file stays)


def test_files_of_others_are_never_overwritten_or_removed(tmp_path):
    out = tmp_path / "out"
    with writing(out, "a") as tx:
        (tx.stage / "one.csv").write_text("1")
    (out / "mine.txt").write_text("user")
    with writing(out, "b") as tx:
        (tx.stage / "two.csv").write_text("2")
    assert (out / "mine.txt").read_text() == "user"
    (out / "clash.csv").write_text("user")
    with pytest.raises(LorascopeError, match="clash.csv"):
        with writing(out, "c") as tx:
            (tx.stage / "clash.csv").write_text("ours")
    assert (out / "clash.csv").read_text() == "user"
    remove_written(out)
    assert sorted(p.name for p in out.iterdir()) == ["clash.csv", "mine.txt"]
