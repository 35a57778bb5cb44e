"""Small pieces shared by the CLI commands: output folders, the 'wrote …' line, and ``--json``.

``--json`` (``json_option``) makes a command print one JSON document on stdout when it is done — what it
computed and where it wrote it (``emit``) — and nothing else there: the 'written to' lines go to stderr, the
terminal tables are left out. A failure prints a document with ``ok: false`` and the error instead
(``emit_error``, called by the command group). Every document has ``command``, ``lorascope_version``, ``ok``
and ``written`` (role → path); the rest is the command's own. The schema is ``docs/cli-json.schema.json``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import click

REPORTS = Path("reports")
JSON_SCHEMA = "docs/cli-json.schema.json"
_JSON = {"on": False, "command": None, "emitted": False}  # the state of the current invocation


def reset_json() -> None:
    """Forget the previous invocation's ``--json`` (one process may run several: tests, notebooks)."""
    _JSON.update(on=False, command=None, emitted=False)


def start_json(command: str) -> None:
    """Turn ``--json`` on for ``command`` (the group does so before parsing; the option's callback again)."""
    _JSON.update(on=True, command=command)


def _json_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        start_json(ctx.info_name)
    return value


def json_option(f):
    """``--json``: one JSON document on stdout instead of tables (see the module docstring)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=_json_callback,
        help=f"Print one JSON document on stdout: what was computed and where it was written "
        f"(schema: {JSON_SCHEMA}); tables are left out, progress stays on stderr.",
    )(f)


def json_mode() -> bool:
    return bool(_JSON["on"])


def plain_json(obj: Any) -> Any:
    """``obj`` as standard JSON values: NaN and infinities become null, paths strings, numpy scalars
    numbers."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    try:
        import pandas as pd

        if obj is pd.NA or obj is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def records(table) -> list[dict[str, Any]]:
    """A DataFrame as a list of plain JSON rows (missing values null)."""
    return plain_json(table.to_dict("records")) if table is not None else []


def emit(written: dict[str, Any] | None = None, **fields: Any) -> None:
    """Print the command's JSON document on stdout (only under ``--json``)."""
    if not json_mode():
        return
    from .. import __version__

    doc = {
        "command": _JSON["command"],
        "lorascope_version": __version__,
        "ok": True,
        "written": {k: str(v) for k, v in (written or {}).items() if v is not None},
        **fields,
    }
    click.echo(json.dumps(plain_json(doc), indent=2, ensure_ascii=False, allow_nan=False))
    _JSON["emitted"] = True


def emit_error(message: str, exit_code: int, written: dict[str, Any] | None = None, **fields: Any) -> None:
    """Under ``--json``, a document saying the command failed (once: not after a document was printed)."""
    if not json_mode() or _JSON["emitted"]:
        return
    from .. import __version__

    doc = {
        "command": _JSON["command"],
        "lorascope_version": __version__,
        "ok": False,
        "written": {k: str(v) for k, v in (written or {}).items() if v is not None},
        "error": {"message": message, "exit_code": exit_code},
        **fields,
    }
    click.echo(json.dumps(plain_json(doc), indent=2, ensure_ascii=False, allow_nan=False))
    _JSON["emitted"] = True


def slug(text: str) -> str:
    """A file-system-safe short name: 'path/to/My Adapter/' -> 'my-adapter'."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text.strip()).strip("-.").lower()
    return s[:80] or "run"


def input_stem(path: str | Path) -> str:
    p = Path(path)
    name = p.stem if p.is_file() else p.name  # a folder, or a Hub id (org/Qwen2.5-7B keeps its dot)
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
    """'<what> written to <path>' on stdout (on stderr under ``--json``, where stdout holds the document)."""
    click.echo(f"{what} written to {Path(path)}", err=json_mode())


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
    names = (
        (*RESULTS_FILES, VECTORS_CSV, "report.html")
        if marker is None
        else ((marker,) if isinstance(marker, str) else marker)
    )
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


# ---- inputs: local paths or Hugging Face Hub ids --------------------------------------------------------


class CheckpointPath(click.ParamType):
    """A command-line input: an existing path, a Hugging Face Hub id (``org/name``) or ``hf://org/name``.

    Kept as given (a string); ``resolve_inputs`` turns it into a local path once the revisions are known.
    """

    name = "PATH|HUB_ID"

    def convert(self, value, param, ctx):
        from ..checkpoint.hub import HF_PREFIX, looks_like_repo_id

        text = str(value)
        if Path(text).expanduser().exists() or text.startswith(HF_PREFIX) or looks_like_repo_id(text):
            return text
        self.fail(f"{text!r} does not exist, and is not a Hugging Face Hub id (org/name).", param, ctx)


CHECKPOINT = CheckpointPath()


def resolve_input(
    spec: str | Path | None, revision: str | None = None, need: str = "weights", quiet: bool = False
) -> Path | None:
    """A local path for one input: as given, or a Hub id's snapshot folder in the cache (fetching what lacks).

    Says on stderr which reading was used where an input is both a local path and a Hub id, and which repo and
    commit a Hub id resolved to (unless ``quiet``).
    """
    if spec is None:
        if revision is not None:
            from ..errors import LorascopeError

            raise LorascopeError(
                f"a revision ({revision}) was given for an input that is not there; "
                "give the input, or leave the revision out."
            )
        return None
    from ..checkpoint.hub import resolve

    found = resolve(spec, revision, need=need, progress=not quiet)
    if found.note:
        click.secho(f"note: {found.note}", err=True, fg="yellow")
    elif found.repo_id is not None and not quiet:
        click.echo(
            f"{spec}: Hugging Face Hub repo {found.repo_id} at commit {found.commit} ({found.path})", err=True
        )
    return found.path
