"""lorascope/__init__.py: the public API, imported lazily — nothing of the package runs at
``import lorascope``."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lorascope

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_the_packages():
    assert lorascope.__version__ == importlib.metadata.version("lorascope")
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert lorascope.__version__ == declared[1]


def test_importing_the_package_imports_none_of_its_modules():
    code = "import sys, lorascope; print(sorted(m for m in sys.modules if m.startswith('lorascope.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_every_public_name_resolves_to_its_home():
    from lorascope import notebook, report, results

    for name in lorascope.__all__:
        assert getattr(lorascope, name) is not None, name
    assert lorascope.Results is notebook.Results and issubclass(lorascope.Results, results.Results)
    assert lorascope.render_report is report.render_report
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lorascope.nothing  # noqa: B018
