"""Export a rank selection as a PEFT LoRA adapter folder: a resize of an adapter, or an extraction from a full fine-tune.

Each selected module's ΔW is truncated to its rank r_l by its own top-r_l SVD (``truncate.py``, one module
at a time) and written as factors B = U·√S (m, r) and A = √S·Vᵀ (r, n), so B @ A is the truncated ΔW.
The scale is 1 everywhere: ``lora_alpha`` = ``r`` = the largest rank, and ``alpha_pattern`` repeats
``rank_pattern`` (alpha_l = r_l) for every other module, so s = alpha/r = 1 and nothing is folded.

Layouts follow PEFT (the keys ``base_model.model.<module>.…`` of ``PeftModel.save_pretrained``):

| module | tensors |
| --- | --- |
| Linear, GPT-2 Conv1D (``fan_in_fan_out``) | ``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r) |
| Embedding, ΔW (num, dim) | ``lora_embedding_A`` (r, num) = (U√S)ᵀ, ``lora_embedding_B`` (dim, r) = V√S |
| ConvNd, ΔW flattened (out, in·k…) | ``lora_A.weight`` (r, in, k…), ``lora_B.weight`` (out, r, 1…) |

``rank_pattern``/``alpha_pattern`` keys are full module names, longest first; PEFT takes the first key k
with ``(.*\\.)?(k)$`` matching a module name, and every exported module is checked to resolve to its own
rank with ``checkpoint.peft.module_scale`` before anything is written (explicit keys for every module,
then escaped keys, where a shorter name would also match a longer one). Modules at rank 0, expert
slices of stacked tensors and 1-D tensors are not exported and are listed with the reason.

A resize keeps what the source adapter trained besides its LoRA factors: the full tensors it saved for
``modules_to_save`` (a classifier head, say) are copied unchanged, under their own keys and dtype, and the
config keeps its ``modules_to_save`` list, so the smaller adapter still loads into a working model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkpoint import Adapter, Weights
from ..checkpoint.peft import module_scale
from ..delta import Delta, Plan
from ..errors import LorascopeError
from ..progress import progress_bar
from .truncate import TopK, TruncateOptions, top_k

PEFT_PREFIX = "base_model.model."
EXPORT_DTYPES = ("float32", "bfloat16", "float16")
# Embedding weights among dense updates (a full fine-tune has no module types, only names).
EMBEDDING_NAMES = re.compile(
    r"(^|\.)(embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|embed_in|"
    r"embed_positions|tok_embeddings|shared)$"
)
EXPORT_COLUMNS = ["name", "kind", "rank", "method", "energy", "rel_error", "optimal_rel_error", "exported", "reason"]


@dataclass(frozen=True)
class ExportOptions:
    """How the adapter is computed and stored."""

    dtype: str = "float32"  # of the saved factors
    truncate: TruncateOptions = TruncateOptions()

    def __post_init__(self) -> None:
        if self.dtype not in EXPORT_DTYPES:
            raise ValueError(f"dtype must be one of {EXPORT_DTYPES}, got {self.dtype!r}")


@dataclass(frozen=True)
class Layout:
    """Where one module's factors go: 'linear', 'embedding' or 'conv' (kernel = stored dims after 'in')."""

    kind: str
    fan_in_fan_out: bool = False
    kernel: tuple[int, ...] = ()


# ---- pure: layouts, tensors, config ----------------------------------------------------------------


def layout_of(d: Delta) -> Layout | str:
    """The PEFT layout of one update, or the reason it cannot be exported."""
    if d.module is not None:
        m = d.module
        if m.source in ("kohya", "cloneofsimo") and d.base is None:
            return (f"{m.source} names are flattened paths, not module names of a model; give the base model "
                    "so names are resolved")
        transpose = m.fan_in_fan_out or (d.base is not None and d.base.layout == "transpose")
        base_kernel = tuple(d.base.stored_shape[2:]) if d.base is not None else ()
        if m.kind == "conv" or base_kernel:
            if not (base_kernel or m.kernel):  # older LyCORIS LoHa/LoKr keep the kernel inside 2-D factors
                return "a conv layer whose kernel size the file does not record; give the base model"
            return Layout("conv", kernel=base_kernel or m.kernel)
        return Layout(m.kind if m.kind == "embedding" else "linear", fan_in_fan_out=transpose)
    ref = d.tuned
    if ref.index is not None:
        return "a slice of a stacked expert tensor; PEFT LoRA targets whole modules"
    stored = ref.stored_shape
    if len(stored) > 2:
        return Layout("conv", kernel=tuple(stored[2:]))
    if ref.layout == "transpose":
        return Layout("linear", fan_in_fan_out=True)
    if EMBEDDING_NAMES.search(d.name):
        return Layout("embedding")
    return Layout("linear")


def peft_tensors(name: str, layout: Layout, b: np.ndarray, a: np.ndarray) -> dict[str, np.ndarray]:
    """PEFT's saved tensors for ΔW = B @ A, B (m, r), A (r, n), under ``base_model.model.<name>``."""
    key = PEFT_PREFIX + name
    r = a.shape[0]
    if layout.kind == "embedding":  # ΔW (num, dim) = (lora_B @ lora_A)ᵀ
        return {f"{key}.lora_embedding_A": np.ascontiguousarray(b.T),  # (r, num)
                f"{key}.lora_embedding_B": np.ascontiguousarray(a.T)}  # (dim, r)
    if layout.kind == "conv":
        ones = (1,) * len(layout.kernel)
        in_ch = a.shape[1] // int(np.prod(layout.kernel, dtype=np.int64))
        return {f"{key}.lora_A.weight": np.ascontiguousarray(a.reshape(r, in_ch, *layout.kernel)),
                f"{key}.lora_B.weight": np.ascontiguousarray(b.reshape(b.shape[0], r, *ones))}
    return {f"{key}.lora_A.weight": np.ascontiguousarray(a), f"{key}.lora_B.weight": np.ascontiguousarray(b)}


def _ordered(names: Iterable[str]) -> list[str]:
    """Longest first (then by name): a name that is a dotted suffix of another comes after it."""
    return sorted(names, key=lambda n: (-len(n), n))


def rank_patterns(ranks: dict[str, int], r_default: int, explicit_all: bool = False,
                  escape: bool = False) -> dict[str, int]:
    """rank_pattern (= alpha_pattern) entries: full names, longest first, for ranks other than the default."""
    keep = [n for n in ranks if explicit_all or ranks[n] != r_default]
    return {(re.escape(n) if escape else n): int(ranks[n]) for n in _ordered(keep)}


def pattern_problems(config: dict[str, Any], ranks: dict[str, int]) -> list[str]:
    """Every exported module whose (r, alpha, scale) under PEFT's pattern rules is not (r_l, r_l, 1)."""
    problems = []
    for name, r in ranks.items():
        got_r, got_alpha, scale = module_scale(config, name)
        if got_r != r or got_alpha != r or abs(scale - 1.0) > 1e-12:
            problems.append(f"{name}: resolves to r={got_r}, alpha={got_alpha:g} instead of r=alpha={r}")
    return problems


def target_problems(targets: list[str], exported: Iterable[str], all_names: Iterable[str]) -> list[str]:
    """Modules PEFT's target_modules matching (name == t or name ends with '.' + t) would wrongly select."""
    exported = set(exported)
    wrong = []
    for name in all_names:
        if name in exported:
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            wrong.append(name)
    return wrong


def adapter_config(ranks: dict[str, int], fan_in_fan_out: bool, source: dict[str, Any] | None = None,
                   base_path: str | None = None, task_type: str | None = None) -> dict[str, Any]:
    """``adapter_config.json``: r = lora_alpha = the largest rank, patterns for the rest, scale 1 everywhere.

    The patterns are checked to select exactly their own module (module docstring); ValueError if no
    key form does.
    """
    if not ranks:
        raise ValueError("no module to export")
    r_max = max(ranks.values())
    source = source or {}
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": source.get("task_type", task_type),
        "base_model_name_or_path": source.get("base_model_name_or_path") or base_path,
        "r": r_max,
        "lora_alpha": r_max,
        "lora_dropout": 0.0,
        "target_modules": sorted(ranks),
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
    for explicit_all, escape in ((False, False), (True, False), (True, True)):
        pattern = rank_patterns(ranks, r_max, explicit_all, escape)
        config["rank_pattern"], config["alpha_pattern"] = pattern, dict(pattern)
        if not pattern_problems(config, ranks):
            return config
    raise ValueError("no rank_pattern form selects exactly the intended modules: "
                     + "; ".join(pattern_problems(config, ranks)[:5]))


def regex_targets(names: Iterable[str]) -> str:
    """A target_modules regex PEFT full-matches against module names: exactly these names."""
    return "^(?:" + "|".join(re.escape(n) for n in sorted(names)) + ")$"


# ---- the export: streaming over the selected modules ----------------------------------------------


@dataclass
class ExportResult:
    path: Path
    config: dict[str, Any]
    table: pd.DataFrame  # EXPORT_COLUMNS, one row per module of the selection

    @property
    def exported(self) -> pd.DataFrame:
        return self.table[self.table["exported"]]

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
            f"the inputs have e.g. {', '.join(list(by_name)[:3])}. Were the results computed from other checkpoints?"
        )
    check_export_dir(out, [getattr(c, "path", None) for c in (base, tuned)])
    carried = _modules_to_save(tuned)
    rows: list[dict[str, Any]] = []
    tensors: dict[str, np.ndarray] = {}
    exported: dict[str, int] = {}
    fan_in_fan_out = False
    todo = [(n, int(r)) for n, r in ranks.items()]
    with progress_bar(len(todo), "export", progress) as bar:
        for name, r in todo:
            d = by_name[name]
            layout = layout_of(d)
            row = {"name": name, "kind": getattr(layout, "kind", None), "rank": r, "method": None,
                   "energy": np.nan, "rel_error": np.nan, "optimal_rel_error": np.nan, "exported": False, "reason": ""}
            if optimal_rel_error and name in optimal_rel_error:
                row["optimal_rel_error"] = float(optimal_rel_error[name])
            if d.source == "modules_to_save" and carried:
                row["reason"] = "modules_to_save tensor of the source adapter, copied unchanged"
            elif r <= 0:
                row["reason"] = "rank 0 selected"
            elif isinstance(layout, str):
                row["reason"] = layout
            else:
                tk = top_k(d, r, options.truncate)
                row.update(_exported_row(tk))
                if tk.rank == 0:
                    row["reason"] = "the update is zero"
                else:
                    b, a = tk.factors()
                    tensors.update(peft_tensors(name, layout, b, a))
                    exported[name] = tk.rank
                    fan_in_fan_out |= layout.fan_in_fan_out
                    row["exported"], row["rank"] = True, tk.rank
                del tk
            rows.append(row)
            bar.advance(note=name)
    table = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    if not exported:
        raise LorascopeError("the selection exports no module (every rank is 0 or no module can be exported); "
                             "nothing was written.")
    source = tuned.config if isinstance(tuned, Adapter) else None
    base_path = str(base.path) if base is not None else None
    config = adapter_config(exported, fan_in_fan_out, source, base_path, _task_type(tuned, base) if tuned else None)
    all_names = _model_names(base, tuned)
    if all_names and target_problems(config["target_modules"], exported, all_names):
        config["target_modules"] = regex_targets(exported)
    if carried:
        config["modules_to_save"] = (source or {}).get("modules_to_save")
    write_peft_folder(out, config, tensors, options.dtype, carried)
    return ExportResult(out, config, table)


def _exported_row(tk: TopK) -> dict[str, Any]:
    return {"method": tk.method, "energy": tk.energy(), "rel_error": tk.rel_error()}


def _modules_to_save(tuned: Weights | Adapter | None) -> dict[str, Any]:
    """The source adapter's modules_to_save tensors (store key -> tensor as stored), when it is a PEFT adapter."""
    if not isinstance(tuned, Adapter) or not (tuned.config or {}).get("modules_to_save"):
        return {}
    refs = [*tuned.dense.values(), *(ref for name, ref in tuned.vectors.items() if not name.endswith(".lora_B.bias"))]
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
            raise LorascopeError(f"--export {out} is or holds the input {p}; refusing to write there "
                                 "so the input is not overwritten. Give a new folder.")
    if out.is_dir() and any(out.iterdir()) and not _exported_here(out):
        raise LorascopeError(f"--export {out} is a non-empty folder that does not hold an adapter lorascope exported; "
                             "refusing to write into it so nothing there is overwritten. Give a new or empty folder.")
    return out


def _exported_here(out: Path) -> bool:
    weights = out / "adapter_model.safetensors"
    if not (out / "adapter_config.json").is_file() or not weights.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as fh:
            metadata = fh.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file is not ours
        return False
    return all(metadata.get(k) == v for k, v in WRITTEN_BY.items())


def write_peft_folder(out: Path, config: dict[str, Any], tensors: dict[str, np.ndarray], dtype: str = "float32",
                      verbatim: dict[str, Any] | None = None) -> Path:
    """adapter_config.json and adapter_model.safetensors (factors cast to ``dtype``; ``verbatim`` tensors as they are)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tdtype = getattr(torch, dtype)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(tdtype).contiguous() for k, v in tensors.items()}
    state.update({k: torch.as_tensor(v).contiguous() for k, v in (verbatim or {}).items()})
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt", **WRITTEN_BY})
    for stale in ("adapter_model.bin", "adapter_model.pt"):  # a re-export must not leave an older weight file first
        (out / stale).unlink(missing_ok=True)
    with open(out / "adapter_config.json", "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return out
