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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_command_keeps_freed_memory_so_arrays_are_not_faulted_in_anew():
    """Three 6 MiB arrays allocated and freed 50 times: with glibc's defaults the heap is trimmed and the
    pages faulted in again each time (~75 000 minor faults); with keep_freed_memory() only the first time."""
    code = (
        "import resource, sys; import numpy as np; from lorascope.cli import keep_freed_memory\n"
        "took = keep_freed_memory() if sys.argv[1] == '1' else None\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(50):\n"
        "    arrays = [np.ones(6 << 17) for _ in range(3)]\n"
        "    del arrays\n"
        "print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    runs = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True)
        took, faults = out.stdout.split()
        runs[flag] = (took, int(faults))
    if runs["1"][0] != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    assert runs["0"][1] > 20 * 1536  # trimmed and faulted in again: most of the 50 rounds
    assert runs["1"][1] < 3 * 1536  # kept: about one round's 4.5 k pages
