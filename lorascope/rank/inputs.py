"""What a sweep or a selection starts from: a results folder as it is, or checkpoints analyzed first; and the
checkpoints a results folder was computed from, reopened (and checked unchanged) when the vectors are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from ..results import Results, is_results_folder, load_results


def results_for(inputs: Sequence[str | Path], progress: bool = False, **analyze_options: Any) -> Results:
    """A saved results folder as it is, or the analysis of one or two checkpoints (``lorascope.analyze``)."""
    from ..analysis import analyze

    if not 1 <= len(inputs) <= 2:
        raise LorascopeError(
            f"give a results folder, an adapter, or BASE and TUNED/ADAPTER; got {len(inputs)} inputs."
        )
    if len(inputs) == 1 and is_results_folder(inputs[0]):
        given = [
            k for k, v in analyze_options.items() if v is not None and k != "precision"
        ]  # precision: export SVDs too
        if given:
            options = ", ".join("--" + k.replace("_", "-") for k in given)
            raise LorascopeError(
                f"{inputs[0]} holds results already computed, so {options} cannot change them; "
                "give the checkpoints instead (or run `lorascope spectrum` with those options first)."
            )
        return load_results(inputs[0])
    return analyze(*inputs, progress=progress, **analyze_options)


def reopen_inputs(results: Results) -> tuple[Any, Any]:
    """(base or None, tuned or adapter) reopened from the paths results record in summary.json."""
    from ..checkpoint import FORMATS, open_checkpoint

    entries = {e.get("role"): e for e in results.summary.get("inputs", [])}
    tuned = entries.get("tuned") or entries.get("adapter")
    if tuned is None:
        raise LorascopeError(
            f"{results.path or 'these results'}: summary.json names no input checkpoints to reopen."
        )

    def _open(entry: dict[str, Any]) -> Any:
        path = Path(entry["path"])
        if not path.exists():
            raise LorascopeError(
                f"{path} (the {entry['role']} these results were computed from) no longer exists; "
                "give the checkpoints instead of the results folder."
            )
        _check_unchanged(entry)
        fmt = entry.get("format")
        return open_checkpoint(path, fmt if fmt in FORMATS and fmt not in ("safetensors", "torch") else None)

    base = _open(entries["base"]) if "base" in entries else None
    return base, _open(tuned)


def _check_unchanged(entry: dict[str, Any]) -> None:
    """Refuse an input whose files differ from the sha256 the results recorded (files up to 64 MiB are
    hashed)."""
    from ..manifest import file_sha256

    for item in entry.get("files") or []:
        path, want = Path(item.get("path", "")), item.get("sha256")
        if want and path.is_file() and file_sha256(path) != want:
            raise LorascopeError(
                f"{path} (part of the {entry.get('role')} these results were computed from) has changed "
                "since; re-run the analysis, or give the checkpoints instead of the results folder."
            )


def plan_for(results: Results, base: Any, tuned: Any) -> Any:
    """The updates of the inputs, filtered and named as the analysis that made ``results`` named them."""
    from ..delta import filter_names, plan_deltas, unique_names

    opts = results.summary.get("options", {})
    return unique_names(filter_names(plan_deltas(base, tuned), opts.get("include"), opts.get("exclude")))
