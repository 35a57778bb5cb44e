"""lorascope/cli/__init__.py: the command group — commands loaded when invoked, one exit code per outcome."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from lorascope.cli import COMMANDS, debug_enabled, main


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from lorascope.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); "
        "print(r.exit_code, 'torch' in sys.modules); print(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, text = out.split("\n", 1)
    assert first == "0 False"
    for name in COMMANDS:
        assert name in text


def test_bad_input_is_exit_code_2_and_one_paragraph(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    res = CliRunner().invoke(
        main, ["spectrum", str(tmp_path / "notes.txt"), "-q", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and res.output.startswith("error: ") and "Traceback" not in res.output
    assert "notes.txt" in res.output and not (tmp_path / "o").exists()
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == 2  # click's usage error


@pytest.mark.parametrize(
    "value, on", [("1", True), ("yes", True), ("ON", True), ("0", False), ("", False), ("false", False)]
)
def test_debug_switch(monkeypatch, value, on):
    monkeypatch.setenv("LORASCOPE_DEBUG", value)
    assert debug_enabled() is on
