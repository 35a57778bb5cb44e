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
    """reports/<kind>-<input names>, e.g. reports/spectrum-llama-vs-llama-edit; with a hash of the resolved
    input
    paths appended where that folder holds results of other inputs (``lorascope.outputs.default_folder``)."""
    from ..outputs import default_folder

    given = [p for p in inputs if p is not None]
    stems = [input_stem(p) for p in given]
    return default_folder(REPORTS / slug(f"{kind}-" + "-vs-".join(stems)), given)


def wrote(path: Path | str, what: str = "results") -> None:
    click.echo(f"{what} written to {Path(path)}")


def check_out(path: Path, marker: str | tuple[str, ...] | None = None) -> Path:
    """Validate an output folder before any work: refuse a file, or a folder holding a file lorascope did not
    write under a name this command writes (``marker``; default: the results files and the report).

    What lorascope wrote is known from the folder's manifest (``lorascope.outputs``), not from file names. The
    transaction that writes the folder checks again when it commits, so this only saves the work of a run that
    would be refused at the end.
    """
    from ..errors import LorascopeError
    from ..outputs import INTERNAL, MANIFEST, read_manifest, written_files
    from ..results import RESULTS_FILES, VECTORS_CSV

    path = Path(path)
    names = (*RESULTS_FILES, VECTORS_CSV, "report.html") if marker is None else (
        (marker,) if isinstance(marker, str) else marker)
    if path.exists() and not path.is_dir():
        raise LorascopeError(f"--out {path} is an existing file; give a folder path.")
    if path.is_dir() and read_manifest(path) is None and any(INTERNAL not in p.name for p in path.iterdir()):
        raise LorascopeError(
            f"--out {path} holds files which lorascope did not write (it has no {MANIFEST}); refusing to "
            "write into it so nothing there is overwritten. Give a new or empty folder."
        )
    if path.is_dir():
        ours = written_files(path)
        foreign = [n for n in names if (path / n).exists() and n not in ours]
        if foreign:
            raise LorascopeError(
                f"--out {path} holds {', '.join(foreign)}, which lorascope did not write (not in its "
                f"{MANIFEST}); "
                "refusing to write into it so nothing of yours is overwritten. Give a new or empty folder."
            )
    return path
