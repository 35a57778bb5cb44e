"""The JSON configs beside weights — a model's config.json, a PEFT adapter's adapter_config.json — read one
way: strict JSON within the size limits (``lorascope.limits.read_json``), an object, every count and list in
bounds (``limits.check_config_sizes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from ..limits import check_config_sizes, read_json

MODEL_CONFIG = "config.json"


def read_config(path: str | Path, what: str = "a model config") -> dict[str, Any]:
    """The config at ``path`` (a file, or a folder holding config.json) as a dict.

    Args:
        path: the JSON file, or a model folder.
        what: what the file should be, for messages ("a model config", "a PEFT adapter config").

    Raises:
        LorascopeError: missing, unreadable, not strict JSON, not a JSON object, or a count out of bounds —
            naming the file.
    """
    p = Path(path).expanduser()
    p = p / MODEL_CONFIG if p.is_dir() else p
    data = read_json(p, what)
    if not isinstance(data, dict):
        raise LorascopeError(f"{p} must hold a JSON object ({what}), found {type(data).__name__}.")
    check_config_sizes(data, str(p))
    return data


def model_config(folder: str | Path) -> dict[str, Any] | None:
    """A model folder's config.json (``read_config``), or None where ``folder`` is a file or holds none."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / MODEL_CONFIG).is_file():
        return None
    return read_config(folder / MODEL_CONFIG)
