"""The ``--json`` documents checked against docs/cli-json.schema.json with the ``jsonschema`` package."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "cli-json.schema.json"


@cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def document(stdout: str, command: str, ok: bool = True) -> dict[str, Any]:
    """stdout parsed as one JSON document (nothing else may be printed there), checked against the schema,
    with the command and outcome expected."""
    doc = json.loads(stdout)
    errors = sorted(validator().iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert doc["command"] == command and doc["ok"] is ok, (doc["command"], doc["ok"], doc.get("error"))
    for path in doc["written"].values():
        assert Path(path).exists(), path
    return doc
