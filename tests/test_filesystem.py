"""lorascope/filesystem.py: the file-system steps output transactions are made of."""

import os

import pytest

from lorascope import filesystem
from lorascope.manifest import MANIFEST


def test_atomic_file_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("old")
    filesystem.atomic_file(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_link_or_copy_links_files_and_keeps_symlinks(tmp_path):
    src = tmp_path / "a"
    src.write_text("data")
    filesystem.link_or_copy(src, tmp_path / "deep" / "b")
    assert os.path.samefile(src, tmp_path / "deep" / "b")
    (tmp_path / "ln").symlink_to("a")
    filesystem.link_or_copy(tmp_path / "ln", tmp_path / "ln2")
    assert os.readlink(tmp_path / "ln2") == "a"


def test_exchange_swaps_two_folders_or_says_it_cannot(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("from a")
    if filesystem.exchange(a, b):
        assert (b / "x").read_text() == "from a" and not (a / "x").exists()
    else:  # a system without renameat2: the caller falls back to two renames and a journal
        assert (a / "x").is_file()


def test_cleanup_old_removes_ours_and_moves_what_appeared_during_the_run(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / MANIFEST).write_text('{"files": {"ours.csv": {}}}')
    (old / "ours.csv").write_text("1")
    (old / "user.txt").write_text("mine")  # not lorascope's, and not in the new folder: moved there
    (old / "clash.txt").write_text("a")
    (new / "clash.txt").write_text("b")  # a different file of that name: left in the old folder
    left = filesystem.cleanup_old(old, new)
    assert (
        left == ["clash.txt"] and (new / "user.txt").read_text() == "mine" and not (old / "ours.csv").exists()
    )


def test_stage_removal_journals_and_durability(tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    (stage / "sub").mkdir(parents=True)
    (stage / "sub" / "f").write_text("x")
    filesystem.remove_stage_tree(stage)
    assert not stage.exists()
    filesystem.write_journal(tmp_path / "j.json", {"stage": "s"})
    assert (tmp_path / "j.json").read_text() == '{"stage": "s"}'
    monkeypatch.setenv("LORASCOPE_FSYNC", "0")
    assert not filesystem.durable()
    monkeypatch.setenv("LORASCOPE_FSYNC", "1")
    assert filesystem.durable()
    assert filesystem.glob_escape("a*b?[c]") == "a[*]b[?][[]c]"


@pytest.mark.parametrize("name", ["a", "b"])
def test_fsync_accepts_files_and_folders(tmp_path, name):
    (tmp_path / name).write_text("x")
    filesystem.fsync(tmp_path / name)
    filesystem.fsync(tmp_path, directory=True)
    filesystem.fsync(tmp_path / "missing")  # nothing to sync: no error
