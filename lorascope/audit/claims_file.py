"""Owns claims files (``lorascope audit CLAIMS.yaml``, e.g. examples/claims.yaml): reading and validating
them, and running every claim into one table, which ``render`` shows and writes as audit.csv and audit.html.

The YAML file holds a list of claims, or a mapping with ``claims:`` and defaults for every claim. A claim
names a ``model`` (config.json, folder or checkpoint, relative to the file), LoRA settings (``KEYS``, PEFT's
names accepted), ``claimed`` figures (``lora``, ``percent``, ``total``: 4.2M, 0.06, 6.7B) and a free-text
``source``. ``read_claims`` raises once with every problem; ``run_claims`` evaluates the claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LorascopeError, raise_collected
from ..limits import load_yaml, read_text
from .claims import Claim, figure_rows
from .count import FLAGS, LoraSettings
from .numbers import parse_count, parse_layers, parse_percent
from .params import AuditOptions, count_config
from .shape_source import load_model
from .targets import parse_targets

# claim key -> accepted aliases (PEFT's LoraConfig names)
KEYS: dict[str, tuple[str, ...]] = {
    "name": (), "model": (), "head": (), "shapes": (), "dtype": (), "source": ("url", "note"), "rank": ("r",),
    "alpha": ("lora_alpha",), "targets": ("target_modules",), "layers": ("layers_to_transform",),
    "rank_pattern": (), "dora": ("use_dora",), "bias": (), "modules_to_save": (), "allow_unmatched": (),
    "ensure_weight_tying": (), "claimed": ("claim",), "tolerance": (),
}  # fmt: skip
CLAIMED_KEYS = {
    "lora": ("trainable", "params", "parameters"),
    "percent": ("percentage",),
    "total": ("model_params",),
}
MAX_CLAIMS_BYTES = 4 * 1024 * 1024  # a claims file of a thousand claims is under 1 MB
NOTE_SEP = " | "  # between the notes of one claim in its "notes" cell
COLUMNS = ["name", "model", "arch", "targets", "rank", "modules", "figure", "claimed", "exact",
           "relative_error", "tolerance", "verdict", "explanation", "mistakes", "notes", "claimed_text",
           "exact_text", "source"]  # fmt: skip


@dataclass(frozen=True)
class ClaimSpec:
    """One validated entry of a claims file."""

    name: str
    model: Path
    settings: LoraSettings
    options: AuditOptions
    claim: Claim
    source: str = ""


def read_claims(path: str | Path) -> list[ClaimSpec]:
    """Parse and validate a claims YAML file.

    Raises:
        LorascopeError: unreadable or malformed YAML, or any invalid entry (all problems listed at once).
    """
    path = Path(path).expanduser()
    expected = "a claims YAML file (see examples/claims.yaml)"
    data = load_yaml(read_text(path, expected, MAX_CLAIMS_BYTES, "claims file"), str(path))
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        if "claims" not in data:
            found = f"found keys {', '.join(map(str, data))}"
            raise LorascopeError(
                f"{path}: expected a list of claims, or a mapping with a 'claims:' list ({found})."
            )
        defaults, data = {k: v for k, v in data.items() if k != "claims"}, data["claims"]
    if not isinstance(data, list) or not data:
        found = type(data).__name__
        raise LorascopeError(f"{path}: 'claims' must be a non-empty list of claims, found {found}.")
    problems = [f"top-level key {k!r} is not known; expected 'claims' or a claim key ({', '.join(KEYS)})"
                for k in defaults if _canonical(str(k)) is None]  # fmt: skip
    defaults = {k: v for k, v in defaults.items() if _canonical(str(k)) is not None}
    specs = []
    for i, entry in enumerate(data, 1):
        if not isinstance(entry, dict):
            problems.append(f"claim {i}: expected a mapping of claim keys, found {entry!r}")
            continue
        merged, errors = {**defaults, **entry}, []
        where = f"claim {i} ({merged['name']})" if merged.get("name") else f"claim {i}"
        spec = _spec(merged, where, path.parent, errors)
        problems += [f"{where}: {e}" for e in errors]
        specs += [spec] if not errors else []
    raise_collected(problems, f"{path} has {len(problems)} problem(s):")
    return specs


def _canonical(key: str) -> str | None:
    return next((name for name, aliases in KEYS.items() if key == name or key in aliases), None)


def _spec(entry: dict[str, Any], where: str, base: Path, errors: list[str]) -> ClaimSpec | None:
    """One claim's spec; every problem of it is added to ``errors``, not only the first."""
    v: dict[str, Any] = {}
    for key, value in entry.items():
        if (name := _canonical(str(key))) is None:
            errors.append(f"key {key!r} is not known; expected one of {', '.join(KEYS)}")
        else:
            v[name] = value
    if missing := [key for key in ("model", "claimed") if v.get(key) is None]:
        errors += [f"key {key!r} is missing" for key in missing]
        return None

    def checked(fn, *args):
        try:
            return fn(*args)
        except (LorascopeError, ValueError, TypeError) as exc:
            errors.append(str(exc).rstrip("."))

    model = Path(str(v["model"])).expanduser()
    model = model if model.is_absolute() else base / model
    if not model.exists():
        errors.append(f"model {v['model']!r} does not exist (looked for {model})")
    claim = checked(_claim, v["claimed"], v.get("tolerance", 0.02))
    mts = v.get("modules_to_save") or ()
    mts = (mts,) if isinstance(mts, str) else mts
    fields = {"rank": v.get("rank", 16), "alpha": v.get("alpha", 32), "bias": str(v.get("bias", "none")),
              "targets": checked(parse_targets, v.get("targets"), "targets"),
              "layers": checked(parse_layers, v.get("layers"), "layers"),
              "rank_pattern": v.get("rank_pattern") or {}, "modules_to_save": mts,
              **{k: v.get(k, False) for k in FLAGS}}  # fmt: skip
    options = {
        "shapes": str(v.get("shapes", "auto")),
        "head": v.get("head"),
        "dtype": str(v.get("dtype", "bf16")),
    }
    errors += LoraSettings.problems(fields) + AuditOptions.problems(options)
    if errors:
        return None
    settings = LoraSettings(**{**fields, "modules_to_save": tuple(fields["modules_to_save"])})
    name, source = str(v.get("name") or where), str(v.get("source") or "")
    return ClaimSpec(name, model, settings, AuditOptions(**options), claim, source)


def _claim(claimed: Any, tolerance: Any) -> Claim:
    figures: dict[str, Any] = {}
    claimed = claimed if isinstance(claimed, dict) else {"lora": claimed}  # a bare number is the LoRA count
    for key, value in claimed.items():
        name = next((f for f, aliases in CLAIMED_KEYS.items() if key == f or key in aliases), None)
        if name is None:
            raise LorascopeError(f"claimed key {key!r} is not known; expected {', '.join(CLAIMED_KEYS)}")
        figures[name] = (parse_percent if name == "percent" else parse_count)(value, f"claimed {key}")
    if not figures:
        raise LorascopeError("'claimed' is empty; give at least one of lora, percent, total")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise LorascopeError(f"tolerance {tolerance!r} must be a number (0.02 = 2 %)")
    return Claim(**figures, tolerance=float(tolerance))


def run_claims(specs: list[ClaimSpec], progress: Any | None = None) -> pd.DataFrame:
    """Evaluate every claim: one row per (claim, figure); a claim that cannot be counted gets verdict 'error'.

    Args:
        specs: validated claims (``read_claims``).
        progress: a progress task with ``advance(note=…)``, optional.
    """
    rows, models = [], {}
    for spec in specs:
        s = spec.settings
        claim = {"name": spec.name, "model": str(spec.model), "arch": "", "targets": str(s.targets),
                 "rank": s.rank, "modules": 0, "notes": "", "source": spec.source}  # fmt: skip
        try:
            key = (str(spec.model), spec.options.shapes, spec.options.head)
            if key not in models:
                models[key] = load_model(*key)
            result = count_config(models[key], spec.settings, spec.options, spec.claim, str(spec.model))
        except LorascopeError as exc:
            rows.append({**claim, "figure": "", "tolerance": spec.claim.tolerance, "verdict": "error",
                         "explanation": str(exc)})  # fmt: skip
        else:
            c = result.count
            claim |= {"arch": c.model.arch, "targets": c.match.label, "modules": len(c.rows),
                      "notes": NOTE_SEP.join(result.warnings)}  # fmt: skip
            rows += [{**claim, **row} for row in figure_rows(result.claim)]
        if progress is not None:
            progress.advance(note=spec.name)
    return pd.DataFrame(rows, columns=COLUMNS).fillna({"mistakes": "", "claimed_text": "", "exact_text": ""})


def claim_notes(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(claim name, note) for every note of the claims table's ``notes`` cells, one claim's notes once."""
    rows = table.drop_duplicates("name")[["name", "notes"]].itertuples(index=False)
    return [(name, note) for name, text in rows for note in str(text or "").split(NOTE_SEP) if note]
