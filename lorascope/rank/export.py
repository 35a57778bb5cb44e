"""Export a rank selection as a PEFT LoRA adapter folder: a resize of an adapter, or an extraction from a
full fine-tune.

Each selected module's ΔW is truncated to its rank r_l by its own top-r_l SVD (``truncate.py``, one module
at a time) and written as factors B = U·√S (m, r) and A = √S·Vᵀ (r, n), so B @ A is the truncated ΔW.
The scale is 1 everywhere: ``lora_alpha`` = ``r`` = the largest rank, and ``alpha_pattern`` repeats
``rank_pattern`` (alpha_l = r_l) for every other module, so s = alpha/r = 1 and nothing is folded.

Tensors follow PEFT (the keys ``base_model.model.<module>.…`` of ``PeftModel.save_pretrained``;
``export_tensors``), the config selects each module's rank (``export_config``), tied embeddings and new
vocabulary rows are ``export_vocab``'s, and the folder is written by the one PEFT adapter writer,
``checkpoint.peft_config.write_adapter``.

A layer's kind comes from the module (an embedding, a conv with its kernel) or, for families that store
flattened factors (LoHa, LoKr, OFT, BOFT, IA3), from the base weight's stored shape; without a base such a
module is listed as not exported. Experts of one fused parameter share one rank in PEFT's ParamWrapper: each
is exported at its own rank and zero-padded to the largest, in PEFT's layout (expert e uses rows e·r … (e+1)·r
of lora_A and columns e, e+E, … of lora_B); several parameters of one module keep the source's nesting.

Modules at rank 0, expert slices of stacked tensors and 1-D tensors are not exported and are listed with the
reason.

A resize keeps what the source adapter trained besides its LoRA factors: the full tensors it saved for
``modules_to_save`` (a classifier head, say) are copied unchanged, under their own keys and dtype, and the
config keeps its ``modules_to_save`` list, so the smaller adapter still loads into a working model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkpoint import Adapter, Weights
from ..checkpoint.peft_config import CONFIG, WEIGHTS, write_adapter
from ..delta import Delta, Plan
from ..errors import LorascopeError
from ..progress import progress_bar
from .export_config import adapter_config, pattern_problems, rank_patterns, regex_targets, target_problems
from .export_tensors import (
    EMBEDDING_NAMES,
    ExpertSlot,
    PeftLayer,
    expert_tensors,
    peft_layer_of,
    peft_tensors,
)
from .export_vocab import TiedEmbedding, new_token_rows, tie_head, tied_embedding
from .truncate import TopK, TruncateOptions, top_k

__all__ = [  # this module's entry points, and the names the export's rooms define (importable from here)
    "EMBEDDING_NAMES",
    "EXPORT_COLUMNS",
    "EXPORT_DTYPES",
    "ExpertSlot",
    "ExportOptions",
    "ExportResult",
    "PeftLayer",
    "TiedEmbedding",
    "WRITTEN_BY",
    "adapter_config",
    "check_apart",
    "check_export_dir",
    "expert_tensors",
    "export_adapter",
    "pattern_problems",
    "peft_layer_of",
    "peft_tensors",
    "rank_patterns",
    "regex_targets",
    "target_problems",
    "tied_embedding",
    "write_peft_folder",
]

EXPORT_DTYPES = ("float32", "bfloat16", "float16")
EXPORT_COLUMNS = [
    "name",
    "kind",
    "rank",
    "method",
    "energy",
    "rel_error",
    "optimal_rel_error",
    "exported",
    "reason",
]


@dataclass(frozen=True)
class ExportOptions:
    """How the adapter is computed and stored."""

    dtype: str = "float32"  # of the saved factors
    truncate: TruncateOptions = TruncateOptions()

    def __post_init__(self) -> None:
        if self.dtype not in EXPORT_DTYPES:
            raise ValueError(f"dtype must be one of {EXPORT_DTYPES}, got {self.dtype!r}")


# ---- the export: streaming over the selected modules ----------------------------------------------


@dataclass
class ExportResult:
    path: Path
    config: dict[str, Any]
    table: pd.DataFrame  # EXPORT_COLUMNS, one row per module of the selection
    notes: list[str] = field(default_factory=list)  # how the adapter must be applied; what it could not hold

    @property
    def exported(self) -> pd.DataFrame:
        """Modules exported (new token rows, kind 'rows', are listed apart)."""
        return self.table[self.table["exported"] & (self.table["kind"] != "rows")]

    @property
    def skipped(self) -> pd.DataFrame:
        return self.table[~self.table["exported"]]


def _task_type(tuned: Weights | Adapter, base: Weights | None) -> str | None:
    for ckpt in (tuned, base):
        cfg = getattr(ckpt, "config", None) or {}
        if any(str(a).endswith("ForCausalLM") for a in cfg.get("architectures", []) or []):
            return "CAUSAL_LM"
    return None


def export_adapter(
    plan: Plan,
    ranks: dict[str, int],
    out: str | Path,
    *,
    base: Weights | None = None,
    tuned: Weights | Adapter | None = None,
    optimal_rel_error: dict[str, float] | None = None,
    options: ExportOptions | None = None,
    progress: bool = False,
) -> ExportResult:
    """Write a PEFT adapter folder whose modules are the rank-r_l truncations of the plan's updates.

    Args:
        plan: the updates (``delta.plan_deltas``), named as in the selection.
        ranks: module name -> rank; 0 leaves a module out.
        out: the adapter folder to write (created; must not hold another adapter).
        base, tuned: the opened inputs, for the config (source adapter config, base path, task type) and
            for checking target_modules against every module name of the model.
        optimal_rel_error: module name -> sqrt(1 − energy(r_l)) from the saved spectrum, reported beside the
            achieved error.
        options: dtype of the factors and the dense SVD route.
        progress: show a progress bar.

    Returns:
        ``ExportResult`` with the config written and one row per module (exported or why not).
    """
    options = options or ExportOptions()
    out = Path(out)
    by_name = {d.name: d for d in plan.deltas}
    missing = [n for n in ranks if n not in by_name]
    if missing:
        raise LorascopeError(
            f"{len(missing)} selected module(s) are not updates of these inputs (e.g. {missing[0]}); "
            f"the inputs have e.g. {', '.join(list(by_name)[:3])}. Were the results computed from other "
            "checkpoints?"
        )
    check_export_dir(out, [getattr(c, "path", None) for c in (base, tuned)])
    carried = _modules_to_save(tuned)
    rows: list[dict[str, Any]] = []
    tensors: dict[str, np.ndarray] = {}
    exported: dict[str, int] = {}
    slots: dict[str, ExpertSlot] = {}
    fan_in_fan_out = False
    todo = [(n, int(r)) for n, r in ranks.items()]
    with progress_bar(len(todo), "export", progress) as bar:
        for name, r in todo:
            d = by_name[name]
            layer = peft_layer_of(d)
            row = {
                "name": name,
                "kind": getattr(layer, "kind", None),
                "rank": r,
                "method": None,
                "energy": np.nan,
                "rel_error": np.nan,
                "optimal_rel_error": np.nan,
                "exported": False,
                "reason": "",
            }
            if optimal_rel_error and name in optimal_rel_error:
                row["optimal_rel_error"] = float(optimal_rel_error[name])
            if d.source == "modules_to_save" and carried:
                row["reason"] = "modules_to_save tensor of the source adapter, copied unchanged"
            elif r <= 0:
                row["reason"] = "rank 0 selected"
            elif isinstance(layer, str):
                row["reason"] = layer
            else:
                tk = top_k(d, r, options.truncate)
                row.update(_exported_row(tk))
                if tk.rank == 0:
                    row["reason"] = "the update is zero"
                elif layer.kind == "expert":
                    _add_expert(slots, d, tk.factors())
                    row["exported"], row["rank"] = True, tk.rank
                else:
                    b, a = tk.factors()
                    tensors.update(peft_tensors(name, layer, b, a))
                    exported[name] = tk.rank
                    fan_in_fan_out |= layer.fan_in_fan_out
                    row["exported"], row["rank"] = True, tk.rank
                del tk
            rows.append(row)
            bar.advance(note=name)
    param_ranks = _pack_experts(slots, rows, tensors, fan_in_fan_out)
    if not exported and not param_ranks:
        raise LorascopeError(
            "the selection exports no module (every rank is 0 or no module can be exported); "
            "nothing was written."
        )
    notes: list[str] = []
    # config keys beyond adapter_config's: ensure_weight_tying, trainable_token_indices
    extra: dict[str, Any] = {}
    rows += new_token_rows(plan, ranks, exported, tensors, extra, notes)
    tie = tied_embedding(plan, base, exported)
    if tie is not None:
        rows += tie_head(tie, tensors, exported, extra, notes, rows)
    table = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    source = tuned.config if isinstance(tuned, Adapter) else None
    base_path = str(base.path) if base is not None else None
    config = adapter_config(
        {**exported, **param_ranks},
        fan_in_fan_out,
        source,
        base_path,
        _task_type(tuned, base) if tuned else None,
    )
    config["target_modules"] = sorted(exported)
    if param_ranks:
        config["target_parameters"] = sorted(param_ranks)
    all_names = _model_names(base, tuned)
    if exported and all_names and target_problems(config["target_modules"], exported, all_names):
        config["target_modules"] = regex_targets(exported)
    if carried:
        config["modules_to_save"] = (source or {}).get("modules_to_save")
    if (source or {}).get("ensure_weight_tying"):
        extra.setdefault("ensure_weight_tying", True)
    config.update(extra)
    write_peft_folder(out, config, tensors, options.dtype, carried)
    return ExportResult(out, config, table, notes)


def _add_expert(slots: dict[str, ExpertSlot], d: Delta, factors: tuple[np.ndarray, np.ndarray]) -> None:
    p = d.module.params
    path = f"{p['module']}.{p['parameter']}"
    slot = slots.setdefault(
        path, ExpertSlot(p["module"], p["parameter"], int(p["experts"]), int(p["depth"]), {})
    )
    slot.factors[int(p["expert"])] = factors
    slot.names.append(d.name)


def _pack_experts(
    slots: dict[str, ExpertSlot],
    rows: list[dict[str, Any]],
    tensors: dict[str, np.ndarray],
    fan_in_fan_out: bool,
) -> dict[str, int]:
    """Experts packed into target_parameters tensors (added to ``tensors``); parameter path -> rank.

    PEFT's ParamWrapper refuses fan_in_fan_out, so beside GPT-2 Conv1D modules the experts are not exported.
    """
    if not slots:
        return {}
    experts = {name: sl for sl in slots.values() for name in sl.names}
    if fan_in_fan_out:
        for row in rows:
            if row["name"] in experts:
                row["exported"] = False
                row["reason"] = (
                    "an expert of a fused parameter: PEFT's target_parameters LoRA does not "
                    "work with the fan_in_fan_out the other exported modules need"
                )
        return {}
    packed, ranks = expert_tensors(list(slots.values()))
    tensors.update(packed)
    for row in rows:
        sl = experts.get(row["name"])
        if sl is not None:
            r = ranks[f"{sl.module}.{sl.parameter}"]
            row["reason"] = (
                f"in a target_parameters LoRA on {sl.module}.{sl.parameter} at r = {r} (PEFT "
                "keeps one rank per parameter: the experts' own ranks are zero-padded to it)"
            )
    return ranks


def _exported_row(tk: TopK) -> dict[str, Any]:
    return {"method": tk.method, "energy": tk.energy(), "rel_error": tk.rel_error()}


def _modules_to_save(tuned: Weights | Adapter | None) -> dict[str, Any]:
    """The source adapter's modules_to_save tensors (store key -> tensor as stored),
    when it is a PEFT adapter."""
    if not isinstance(tuned, Adapter) or not (tuned.config or {}).get("modules_to_save"):
        return {}
    refs = [
        *tuned.dense.values(),
        *(ref for name, ref in tuned.vectors.items() if not name.endswith(".lora_B.bias")),
    ]
    return {ref.key: ref.store.get(ref.key) for ref in refs}


def _model_names(base: Weights | None, tuned: Weights | Adapter | None) -> list[str]:
    """Every weight name of the model (the base's, else the tuned checkpoint's), without '.weight'."""
    for ckpt in (base, tuned):
        if isinstance(ckpt, Weights):
            return [k.removesuffix(".weight") for k in ckpt.store.keys()]
    return []


WRITTEN_BY = {"written_by": "lorascope"}  # safetensors metadata of every adapter lorascope exports


def check_export_dir(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an export folder that is an input or holds one, or that holds anything lorascope did not write.

    A folder holding an adapter this function's exports wrote before is replaced; nothing else is overwritten.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LorascopeError(f"--export {out} is an existing file; give a folder path.")
    target = out.resolve()
    for p in inputs:
        if p is None:
            continue
        src = Path(p).resolve()
        if target == src or target in src.parents:
            raise LorascopeError(
                f"--export {out} is or holds the input {p}; refusing to write there "
                "so the input is not overwritten. Give a new folder."
            )
    if out.is_dir() and any(out.iterdir()) and not _exported_here(out):
        raise LorascopeError(
            f"--export {out} is a non-empty folder that does not hold an adapter lorascope exported; "
            "refusing to write into it so nothing there is overwritten. Give a new or empty folder."
        )
    return out


def check_apart(export: str | Path, out: str | Path) -> None:
    """Refuse an export folder that is, holds or lies in the results folder ``out``: the adapter and the
    results are written as two transactions, and one would replace the other."""
    e, o = Path(export).resolve(), Path(out).resolve()
    if e == o or o in e.parents or e in o.parents:
        raise LorascopeError(
            f"--export {export} and --out {out} overlap; the adapter and the selection's results are written "
            "as two separate folders. Give --export a folder outside --out (e.g. beside it)."
        )


def _exported_here(out: Path) -> bool:
    weights = out / WEIGHTS
    if not (out / CONFIG).is_file() or not weights.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as fh:
            metadata = fh.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file is not ours
        return False
    return all(metadata.get(k) == v for k, v in WRITTEN_BY.items())


def write_peft_folder(
    out: Path,
    config: dict[str, Any],
    tensors: dict[str, np.ndarray],
    dtype: str = "float32",
    verbatim: dict[str, Any] | None = None,
) -> Path:
    """The exported adapter, written as one transaction (``lorascope.outputs``) by the one PEFT adapter writer
    (``checkpoint.peft_config.write_adapter``): factors cast to ``dtype``, ``verbatim`` tensors as they are,
    the safetensors metadata marked ``WRITTEN_BY``. An earlier export's files are replaced, nothing else."""
    import torch

    from ..outputs import writing

    tdtype = getattr(torch, dtype)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(tdtype) for k, v in tensors.items()}
    state.update({k: torch.as_tensor(v) for k, v in (verbatim or {}).items()})
    with writing(out, "export") as tx:
        write_adapter(tx.stage, config, state, WRITTEN_BY)
    return tx.path
