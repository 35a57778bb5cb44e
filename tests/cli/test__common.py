"""lorascope/cli/_common.py: default output folders named after their inputs, and output folders checked."""

import pytest

from lorascope.cli._common import REPORTS, check_out, default_out, input_stem, slug
from lorascope.errors import LorascopeError
from lorascope.outputs import writing


def test_names_are_file_system_safe_and_say_which_input(tmp_path):
    assert (
        slug("path/to/My Adapter/") == "path-to-my-adapter"
        and slug("///") == "run"
        and len(slug("x" * 200)) == 80
    )
    (tmp_path / "r8" / "adapter").mkdir(parents=True)
    assert (
        input_stem(tmp_path / "r8" / "adapter") == "r8-adapter"
        and input_stem("org/Qwen2.5-7B") == "qwen2.5-7b"
    )


def test_default_out_keeps_results_of_other_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    first = default_out("spectrum", tmp_path / "a" / "x")
    assert first == REPORTS / "spectrum-x"
    with writing(first, "spectrum", inputs=[str((tmp_path / "a" / "x").resolve())]) as tx:
        (tx.stage / "modules.csv").write_text("x\n")
    other = default_out("spectrum", tmp_path / "b" / "x")  # same name, other input: another folder
    assert other != first and other.name.startswith("spectrum-x-")


def test_check_out_refuses_files_and_folders_of_others(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LorascopeError, match="is an existing file"):
        check_out(tmp_path / "file")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(LorascopeError, match="lorascope did not write"):
        check_out(tmp_path / "theirs")
    assert check_out(tmp_path / "new") == tmp_path / "new"
