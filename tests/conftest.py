"""Shared test fixtures: the real third-party files in ../shared/fixtures/real and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("LORASCOPE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "real"))


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """../shared/fixtures/real, or a skip that says why where it is absent."""
    if not REAL.is_dir():
        pytest.skip(f"real-world fixtures not found at {REAL} (set LORASCOPE_FIXTURES to their folder)")
    return REAL
