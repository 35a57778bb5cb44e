"""Small pieces shared by the CLI commands: output folders and the 'wrote …' line."""

from __future__ import annotations

import re
from pathlib import Path

import click

REPORTS = Path("reports")


def slug(text: str) -> str:
    """A file-system-safe short name: 'path/to/My Adapter/' -> 'my-adapter'."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text.strip()).strip("-.").lower()
    return s[:80] or "run"


def input_stem(path: str | Path) -> str:
    p = Path(path)
    name = p.name if p.is_dir() else p.stem
    if name in {"model", "adapter", "adapter_model", "tuned", "base", ""} and p.parent.name:
        name = f"{p.parent.name}-{name}" if name else p.parent.name
    return slug(name)


def default_out(kind: str, *inputs: str | Path | None) -> Path:
    """reports/<kind>-<input names>, e.g. reports/spectrum-llama-vs-llama-edit."""
    stems = [input_stem(p) for p in inputs if p is not None]
    return REPORTS / slug(f"{kind}-" + "-vs-".join(stems))


def wrote(path: Path | str, what: str = "results") -> None:
    click.echo(f"{what} written to {Path(path)}")


def check_out(path: Path, marker: str | tuple[str, ...] | None = None) -> Path:
    """Validate an output folder before any work: refuse a file, or a non-empty folder lorascope did not write.

    A folder counts as lorascope's when it holds every file of ``marker`` (default: those of a results folder). Nothing the user owns is overwritten;
    the folder itself is created only when results are saved.
    """
    from ..errors import LorascopeError
    from ..results import RESULTS_FILES

    path = Path(path)
    files = RESULTS_FILES if marker is None else (marker,) if isinstance(marker, str) else marker
    if path.exists() and not path.is_dir():
        raise LorascopeError(f"--out {path} is an existing file; give a folder path.")
    if path.is_dir() and any(path.iterdir()) and not all((path / f).is_file() for f in files):
        raise LorascopeError(
            f"--out {path} is a non-empty folder that does not hold lorascope results ({' + '.join(files)} not "
            "found); refusing to write into it so nothing there is overwritten. Give a new or empty folder."
        )
    return path
