"""lorascope/cli/__main__.py: ``python -m lorascope.cli`` is the ``lorascope`` command."""

import subprocess
import sys

import lorascope


def test_python_dash_m_runs_the_command_group():
    out = subprocess.run(
        [sys.executable, "-m", "lorascope.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert lorascope.__version__ in out
