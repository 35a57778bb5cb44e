"""lorascope/train/__init__.py: the trainer package imports without the spectrum engine's heavy parts."""

import subprocess
import sys


def test_importing_the_trainer_does_not_import_the_report():
    code = (
        "import sys, lorascope.train; print('lorascope.report' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]
