"""Stream the modules of two updates (and their base) one at a time and build the comparison tables.

``compare(X, Y, base)`` and ``intruders(BASE, TUNED)`` are the entry points of ``lorascope compare`` and
``lorascope intruders``. Modules of X and Y are paired by normalized name (``NameIndex``), so an adapter
and a full fine-tune of the same base line up. Each module's tensors are read, measured (``pair``) and
released before the next, so peak memory is a few matrices whatever the model size. The options are
``options``', the summary ``summary``'s.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..checkpoint import Adapter, TensorRef, Weights, describe_input, open_checkpoint
from ..checkpoint.hub import origin as hub_origin
from ..delta import Delta, filter_names, load_form, plan_deltas, unique_names
from ..errors import LorascopeError, raise_collected
from ..linalg import Form, resolve_device, torch_dtype
from ..names import NameIndex, split_name
from ..progress import progress_bar
from .intruders import IntruderOptions, intruder_counts, intruder_sweep
from .options import RunOptions, build_options
from .pair import PairOptions, PairResult, compare_pair, single_intruders
from .results import CompareResults
from .summary import run_summary

Update = Form

Checkpoint = Weights | Adapter
Source = str | Path | Weights | Adapter


# ---- reading one update ------------------------------------------------------------------------


def load_update(d: Delta, dtype: torch.dtype, device: torch.device) -> Update:
    """The form of one module's ΔW: factors stay factors (float64, CPU),
    dense updates in ``dtype`` on ``device``."""
    precision = "float64" if dtype == torch.float64 else "float32"
    return load_form(d, precision, str(device))


# ---- opening and pairing ---------------------------------------------------------------------------


def _open(source: Source, fmt: str | None) -> Checkpoint:
    return source if isinstance(source, (Weights, Adapter)) else open_checkpoint(source, fmt)


def _label(source: Source, fallback: str) -> str:
    path = Path(source.path if isinstance(source, (Weights, Adapter)) else source)
    from_hub = hub_origin(path)
    if from_hub is not None:  # a Hub cache snapshot is named by its commit: use the repo's name
        return from_hub["repo_id"].rsplit("/", 1)[-1]
    name = path.name if path.is_dir() else path.stem
    if name in {"adapter", "adapter_model", "model", "tuned", ""} and path.parent.name:
        name = path.parent.name
    return name or fallback


def default_labels(x: Source, y: Source) -> tuple[str, str]:
    """Input names for the long tables ('r8', 'r64'), or 'x' and 'y' when the two names coincide."""
    lx, ly = _label(x, "x"), _label(y, "y")
    return (lx, ly) if lx != ly else ("x", "y")


def _require_base(ckpt: Checkpoint, role: str, base: Checkpoint | None) -> None:
    if isinstance(ckpt, Weights) and base is None:
        raise LorascopeError(
            f"{role} ({ckpt.path}) is a full checkpoint; its update ΔW = tuned − base needs the base model. "
            "Give it with --base BASE (two adapters alone need no base)."
        )


def pair_deltas(xs: list[Delta], ys: list[Delta]) -> tuple[list[tuple[Delta, Delta]], list[dict[str, str]]]:
    """Pairs (ΔW from X, ΔW from Y) of the same module, matched by normalized name; the rest as warnings."""
    warnings: list[dict[str, str]] = []
    by_name = {d.name: d for d in ys}  # unique: each plan went through delta.unique_names
    index = NameIndex(by_name)
    pairs: list[tuple[Delta, Delta]] = []
    used: set[str] = set()
    ambiguous: list[str] = []
    for dx in xs:
        found = index.match(dx.name)
        hit = found.name
        if found.ambiguous or hit in used:
            ambiguous.append(f"{dx.name}: {found.reason or f'a second module of X matching {hit}'}")
            continue
        if hit is None:
            warnings.append({"name": dx.name, "reason": f"only in X ({found.reason})"})
            continue
        dy = by_name[hit]
        if tuple(dx.shape) != tuple(dy.shape):
            warnings.append(
                {
                    "name": dx.name,
                    "reason": f"X's update is {list(dx.shape)} but Y's is {list(dy.shape)}; skipped",
                }
            )
            continue
        used.add(hit)
        pairs.append((dx, dy))
    raise_collected(
        ambiguous,
        f"{len(ambiguous)} module name(s) of X match more than one module of Y once "
        "wrapper prefixes are removed; modules are paired only by one unambiguous name. "
        "Ambiguous names:",
    )
    warnings += [
        {"name": n, "reason": "only in Y (no module of that name in X)"} for n in by_name if n not in used
    ]
    return pairs, warnings


def _plan(
    base: Weights | None, ckpt: Checkpoint, run: RunOptions
) -> tuple[list[Delta], list[dict[str, str]]]:
    plan = unique_names(filter_names(plan_deltas(base, ckpt), run.include, run.exclude))
    return plan.deltas, plan.warnings


def _meta(d: Delta) -> dict[str, Any]:
    layer, module = split_name(d.name)
    m, n = d.shape
    return {"name": d.name, "layer": layer, "module": module, "rows": m, "cols": n}


def _base_weight(
    refs: list[TensorRef | None], dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    ref = next((r for r in refs if r is not None), None)
    return None if ref is None else ref.load(dtype, device)


# ---- the two runs ------------------------------------------------------------------------------------


def compare(
    x: Source,
    y: Source,
    base: Source | None = None,
    *,
    labels: tuple[str, str] | None = None,
    format_x: str | None = None,
    format_y: str | None = None,
    base_format: str | None = None,
    progress: bool = False,
    **options: Any,
) -> CompareResults:
    """Compare two updates of the same base module by module (Hu et al. 2021 §7.2–7.3; Shuttleworth et al.
    2024).

    Args:
        x: an adapter or a fine-tuned checkpoint.
        y: likewise.
        base: the base checkpoint; needed for full checkpoints, amplification and intruder dimensions.
        labels: names of X and Y in the tables (default: from their paths).
        format_x, format_y, base_format: force a format (``lorascope.checkpoint.FORMATS``).
        progress: a progress bar over modules on stderr.
        **options: side, cap, full_to, per_octave (φ grid); intruder_k, epsilon, epsilons, intruders (bool);
            amp_rank, precision, svd ('exact' or 'randomized': every dense top-k), seed; device, include,
            exclude.

    Returns:
        ``CompareResults``; ``.save(dir)`` writes the tables.

    Raises:
        LorascopeError: an input is missing or unsupported, the inputs share no module, or a full checkpoint
            was given without its base.
    """
    start = time.perf_counter()
    pair_opts, run = build_options(**options)
    ck_x, ck_y = _open(x, format_x), _open(y, format_y)
    ck_b = _open(base, base_format) if base is not None else None
    if isinstance(ck_b, Adapter):
        raise LorascopeError(
            f"--base {ck_b.path} is a LoRA adapter; the base must be the model's own weights."
        )
    _require_base(ck_x, "X", ck_b)
    _require_base(ck_y, "Y", ck_b)
    if ck_b is None:
        pair_opts = dataclasses.replace(pair_opts, intruders=None)  # they need W_base
    labels = labels or default_labels(x, y)
    if len(labels) != 2 or labels[0] == labels[1]:
        raise LorascopeError(
            f"--labels {' '.join(map(str, labels))}: give two different names, one for X and one for Y "
            "(each names its columns in the tables)."
        )
    xs, warn_x = _plan(ck_b, ck_x, run)
    ys, warn_y = _plan(ck_b, ck_y, run)
    pairs, warnings = pair_deltas(xs, ys)
    if not pairs:
        raise LorascopeError(
            f"X ({ck_x.path}) and Y ({ck_y.path}) share no module of the same name and shape "
            f"(X has e.g. {xs[0].name if xs else 'none'}, Y has e.g. {ys[0].name if ys else 'none'}); "
            "are they updates of the same base model?"
        )
    device, dtype = resolve_device(run.device), torch_dtype(pair_opts.precision)
    parts: list[tuple[dict[str, Any], PairResult]] = []
    with progress_bar(len(pairs), "modules", progress) as bar:
        for index, (dx, dy) in enumerate(pairs):
            ux, uy = load_update(dx, dtype, device), load_update(dy, dtype, device)
            w = _base_weight([dx.base, dy.base], dtype, device) if ck_b is not None else None
            rng = np.random.default_rng([pair_opts.seed, index])
            meta = {**_meta(dx), "source_x": dx.source, "source_y": dy.source}
            parts.append((meta, compare_pair(ux, uy, w, pair_opts, labels, rng)))
            del ux, uy, w
            bar.advance(note=dx.name)
    results = _compare_tables(parts, pair_opts)
    inputs = [describe_input("x", ck_x), describe_input("y", ck_y)] + (
        [describe_input("base", ck_b)] if ck_b else []
    )
    options_used = {
        "grid": dataclasses.asdict(pair_opts.grid),
        "intruders": dataclasses.asdict(pair_opts.intruders) if pair_opts.intruders else None,
        **{k: v for k, v in dataclasses.asdict(pair_opts).items() if k not in ("grid", "intruders")},
        **dataclasses.asdict(run),
    }
    results.summary = run_summary(
        "compare",
        inputs,
        list(labels),
        options_used,
        results,
        warn_x + warn_y + warnings,
        time.perf_counter() - start,
    )
    return results


def _frame(rows: list[dict[str, Any]] | list[pd.DataFrame], concat: bool = False) -> pd.DataFrame | None:
    if not rows:
        return None
    df = pd.concat(rows, ignore_index=True) if concat else pd.DataFrame(rows)
    if "layer" in df.columns:
        df["layer"] = df["layer"].astype("Int64")
    return df


def _compare_tables(parts: list[tuple[dict[str, Any], PairResult]], opts: PairOptions) -> CompareResults:
    modules = _frame([{**meta, **res.row} for meta, res in parts])
    similarity = _frame(
        [
            res.similarity.assign(**{k: meta[k] for k in ("name", "layer", "module")}, side=opts.grid.side)[
                ["name", "layer", "module", "side", "i", "j", "phi", "random"]
            ]
            for meta, res in parts
            if len(res.similarity)
        ],
        concat=True,
    )
    amplification = _frame(
        [
            {**{k: meta[k] for k in ("name", "layer", "module")}, **row}
            for meta, res in parts
            for row in res.amplification
        ]
    )
    intr = _frame(
        [
            t.assign(name=meta["name"], layer=meta["layer"], module=meta["module"])
            for meta, res in parts
            for t in res.intruders
        ],
        concat=True,
    )
    return _with_intruders(CompareResults({}, modules, similarity, amplification), intr, opts.intruders)


def _with_intruders(
    results: CompareResults, table: pd.DataFrame | None, opts: IntruderOptions | None
) -> CompareResults:
    if table is None or opts is None:
        return results
    front = ["name", "layer", "module", "update"]
    results.intruders = table[front + [c for c in table.columns if c not in front]]
    results.intruder_modules = intruder_counts(results.intruders, opts.epsilon)
    results.sweep = intruder_sweep(results.intruders, opts.epsilons)
    return results


def intruders(
    base: Source,
    tuned: Source,
    *,
    label: str | None = None,
    format: str | None = None,
    base_format: str | None = None,
    progress: bool = False,
    **options: Any,
) -> CompareResults:
    """Intruder dimensions of a fine-tune or adapter against its base (Shuttleworth et al. 2024, Algorithm 1).

    Args:
        base: the base checkpoint.
        tuned: a fine-tuned checkpoint or an adapter of ``base``.
        label: the update's name in the tables (default: from its path).
        format, base_format: force a format.
        progress: a progress bar over modules on stderr.
        **options: intruder_k, epsilon, epsilons, svd; precision, seed; device, include, exclude.

    Returns:
        ``CompareResults`` with intruders, intruder_modules and sweep.
    """
    start = time.perf_counter()
    options.pop("intruders", None)  # this command computes nothing else
    pair_opts, run = build_options(**options)
    opts = pair_opts.intruders or IntruderOptions()
    ck_b, ck_t = _open(base, base_format), _open(tuned, format)
    if isinstance(ck_b, Adapter):
        raise LorascopeError(
            f"{ck_b.path} is a LoRA adapter; the first input must be the base model's weights."
        )
    deltas, warnings = _plan(ck_b, ck_t, run)
    label = label or _label(tuned, "tuned")
    device, dtype = resolve_device(run.device), torch_dtype(pair_opts.precision)
    tables: list[pd.DataFrame] = []
    with progress_bar(len(deltas), "modules", progress) as bar:
        for d in deltas:
            if d.base is None:
                warnings.append(
                    {"name": d.name, "reason": "no base weight; intruder dimensions need it, skipped"}
                )
            else:
                w, update = d.base.load(dtype, device), load_update(d, dtype, device)
                meta = _meta(d)
                tables.append(
                    single_intruders(w, update, opts, pair_opts.seed).assign(
                        update=label, name=meta["name"], layer=meta["layer"], module=meta["module"]
                    )
                )
                del w, update
            bar.advance(note=d.name)
    if not tables:
        raise LorascopeError(
            f"no module of {ck_t.path} has a base weight in {ck_b.path}; nothing to compare."
        )
    results = _with_intruders(CompareResults({}), _frame(tables, concat=True), opts)
    inputs = [describe_input("base", ck_b), describe_input("tuned", ck_t)]
    options_used = {
        "intruders": dataclasses.asdict(opts),
        "precision": pair_opts.precision,
        "seed": pair_opts.seed,
        **dataclasses.asdict(run),
    }
    results.summary = run_summary(
        "intruders", inputs, [label], options_used, results, warnings, time.perf_counter() - start
    )
    return results
