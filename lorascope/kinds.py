"""Which lorascope folder is this: the kinds of folder lorascope writes, told apart by the files each
declares.

Every command that reads a folder asks ``folder_kind`` instead of guessing from a name, and says what to do
with a folder of another kind (``KINDS[kind].hint``). A marker file counts only as lorascope wrote it: where
the folder has a manifest (``lorascope.outputs``), the file must be listed in it, so a file a user put there
under that name does not make the folder something it is not.

| kind | marker | written by |
| --- | --- | --- |
| demo | demo.json | ``lorascope demo``: runs/, spectra/, report.html |
| results | modules.csv + singular_values.safetensors + summary.json | ``spectrum``, ``sweep``, ``select`` |
| compare | compare_summary.json (without results) | ``compare``, ``intruders`` |
| run | metrics.json + tuned/ | ``train`` (and each run of ``train-sweep``) |
| train-sweep | index.csv | ``train-sweep`` (the demo's runs/) |
| params | params.json | ``params --out`` |
| audit | audit.csv | ``audit`` |
| results-set | subfolders that are results folders | the demo's spectra/ |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .outputs import read_manifest

RESULTS_MARKERS = ("modules.csv", "singular_values.safetensors", "summary.json")


@dataclass(frozen=True)
class Kind:
    markers: tuple[str, ...]  # files (or a folder, ending in '/') that must all be present
    what: str  # a few words for messages
    hint: str  # what to do with it, for commands that do not take it


KINDS: dict[str, Kind] = {  # checked in this order: a demo folder is not also a results folder
    "demo": Kind(
        ("demo.json",),
        "a demo folder (lorascope demo)",
        "`lorascope report DEMO_DIR` re-renders its page; its runs are in DEMO_DIR/runs",
    ),
    "results": Kind(
        RESULTS_MARKERS,
        "a results folder",
        "`lorascope report DIR` renders it, `lorascope sweep DIR` and `lorascope select DIR` read it",
    ),
    "compare": Kind(
        ("compare_summary.json",),
        "a comparison folder (lorascope compare / intruders)",
        "`lorascope report DIR` re-renders its page",
    ),
    "run": Kind(
        ("metrics.json", "tuned/"),
        "a trainer run folder (lorascope train)",
        "`lorascope spectrum RUN_DIR`, `sweep RUN_DIR` and `select RUN_DIR` analyze its update; "
        "`lorascope report RUN_DIR` shows its training",
    ),
    "train-sweep": Kind(
        ("index.csv",),
        "a training sweep folder (lorascope train-sweep)",
        "`lorascope sweep DIR` and `lorascope report DIR` read all of its runs; give one run "
        "folder inside it to commands that take one update",
    ),
    "params": Kind(
        ("params.json",),
        "a parameter-count folder (lorascope params --out)",
        "it holds counts, not updates: open params.json",
    ),
    "audit": Kind(("audit.csv",), "an audit folder (lorascope audit)", "open its audit.html"),
}


def declared(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` is there as lorascope wrote it (listed in the manifest where there is one)."""
    folder = Path(folder)
    path = folder / name.rstrip("/")
    if not (path.is_dir() if name.endswith("/") else path.is_file()):
        return False
    manifest = read_manifest(folder)
    if manifest is None:
        return True
    files = manifest["files"]
    return name in files if not name.endswith("/") else any(f.startswith(name) for f in files)


def folder_kind(path: str | Path) -> str | None:
    """The kind of lorascope folder ``path`` is (a key of ``KINDS`` or 'results-set'), or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    for kind, spec in KINDS.items():
        if all(declared(p, m) for m in spec.markers):
            return kind
    if results_set(p):
        return "results-set"
    return None


def results_set(path: str | Path) -> list[Path]:
    """The results folders directly inside ``path`` (the demo's spectra/), sorted by name; empty if none."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(c for c in p.iterdir() if c.is_dir() and all(declared(c, m) for m in RESULTS_MARKERS))


def describe(path: str | Path) -> str:
    """'a trainer run folder (lorascope train)' and the like, or 'not a folder lorascope wrote'."""
    kind = folder_kind(path)
    if kind == "results-set":
        return f"a folder of {len(results_set(path))} results folders"
    return KINDS[kind].what if kind else "not a folder lorascope wrote"
