"""Helpers of the regression tests: run the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def cli(*args, cwd=None, env=None):
    """Run ``python -m lorascope.cli ARGS``; returns the CompletedProcess (text)."""
    e = dict(os.environ, HF_HUB_OFFLINE="1", LORASCOPE_FSYNC="0")
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, "-m", "lorascope.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=e,
        timeout=300,
    )


def json_doc(proc):
    return json.loads(proc.stdout)
