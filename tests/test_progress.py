"""Progress on stderr: a rich bar on a terminal, plain lines where stderr is a file (logs, CI)."""

import io

from lorascope import progress
from lorascope.progress import progress_bar


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)  # a line on every step
    with progress_bar(3, "modules") as bar:
        for name in ("a", "b", "c"):
            bar.advance(note=name)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("modules: 1/3 in ") and ", eta " in lines[0] and lines[0].endswith("  a")
    assert lines[-1].startswith("modules: 3/3 in ") and lines[-1].endswith("(done)")
    assert len(lines) == 4


def test_disabled_progress_prints_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with progress_bar(2, "modules", enabled=False) as bar:
        bar.advance()
    assert err.getvalue() == ""
