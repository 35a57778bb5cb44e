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
| expert e of a fused (E, ·, ·) parameter | ``target_parameters``: ``lora_A`` (E·r, in), ``lora_B`` (out, r·E) |

A layer's kind comes from the module (an embedding, a conv with its kernel) or, for families that store
flattened factors (LoHa, LoKr, OFT, BOFT, IA3), from the base weight's stored shape; without a base such a
module is listed as not exported. Experts of one fused parameter share one rank in PEFT's ParamWrapper: each
is exported at its own rank and zero-padded to the largest, in PEFT's layout (expert e uses rows e·r … (e+1)·r
of lora_A and columns e, e+E, … of lora_B); several parameters of one module keep the source's nesting.

``rank_pattern``/``alpha_pattern`` keys are full module names, longest first; PEFT takes the first key k
with ``(.*\\.)?(k)$`` matching a module name, and every exported module is checked to resolve to its own
rank with ``checkpoint.peft.module_scale`` before anything is written (explicit keys for every module,
then escaped keys, where a shorter name would also match a longer one). Modules at rank 0, expert
slices of stacked tensors and 1-D tensors are not exported and are listed with the reason.

A resize keeps what the source adapter trained besides its LoRA factors: the full tensors it saved for
``modules_to_save`` (a classifier head, say) are copied unchanged, under their own keys and dtype, and the
config keeps its ``modules_to_save`` list, so the smaller adapter still loads into a working model.

Tied embeddings (a base whose config declares ``tie_word_embeddings``; ``delta.plan.declares_tied``): the
input embedding's update is the output head's too. The export writes the head's factors as well (the
embedding's, transposed, as PEFT's own save writes them), lists ``lm_head`` in ``target_modules`` and sets
``ensure_weight_tying``, so PEFT ties the two and the adapter used unmerged changes the input and the output
as the fine-tune did. PEFT 0.21's ``merge_and_unload`` then adds the update twice to the one shared matrix;
the export's notes say so and how to merge. A head PEFT cannot tie LoRA to (a masked-LM decoder) is named. A
tuned checkpoint that untied its head exports both updates on their own, and says merging needs an untied
base.

An extended vocabulary (rows added to an embedding or head, ``Delta.added_rows``): the new rows are exported
through PEFT's ``trainable_token_indices`` (their tuned values, as ``token_adapter.trainable_tokens_delta``)
when the tensor's common rows carry no LoRA update; beside a LoRA update of the same tensor PEFT cannot hold
them (its TrainableTokensWrapper cannot wrap a LoRA layer), and they are named as dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkpoint import Adapter, Weights
from ..checkpoint.peft import module_scale
from ..delta import Delta, Plan
from ..delta.plan import INPUT_EMBEDDINGS, declares_tied
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
        if m.source in ("kohya", "cloneofsimo", "gguf") and d.base is None:
            return (f"{m.source} names are not the module names of a model (kohya flattens paths, GGUF renames "
                    "them); give the base model so names are resolved")
        if m.family == "lora_expert":
            return Layout("expert")
        if int(m.params.get("groups", 1)) > 1:
            return ("a grouped convolution: a PEFT LoRA there has a grouped lora_B (one block per group), "
                    "which the truncated SVD of the update does not have")
        transpose = m.fan_in_fan_out or (d.base is not None and d.base.layout == "transpose")
        stored = d.base.stored_shape if d.base is not None else ()
        base_kernel = tuple(stored[2:]) if m.kind != "embedding" and len(stored) > 2 else ()
        if base_kernel:
            return Layout("conv", kernel=base_kernel)  # the base's (a Conv1d Tucker core is (k, 1))
        if m.kind == "conv":
            if not m.kernel:  # older LyCORIS LoHa/LoKr keep the kernel inside 2-D factors
                return "a conv layer whose kernel size the file does not record; give the base model"
            return Layout("conv", kernel=m.kernel)
        if m.kind == "matrix" and d.base is None:
            return (f"{m.family} stores this layer's factors flattened, so the adapter does not record "
                    "whether it is a linear layer or a convolution; give the base model")
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


@dataclass
class ExpertSlot:
    """The exported experts of one fused parameter: expert index -> (B_e (out, k_e), A_e (k_e, in))."""

    module: str
    parameter: str
    experts: int
    depth: int  # the source's nesting depth (PEFT nests parameters of one module in registration order)
    factors: dict[int, tuple[np.ndarray, np.ndarray]]
    names: list[str] = field(default_factory=list)  # the exported experts' module names


def expert_tensors(slots: list[ExpertSlot]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """PEFT ParamWrapper tensors per parameter, and parameter path -> its rank r (the largest expert rank).

    lora_A (E·r, in) holds A_e in rows e·r … e·r + k_e; lora_B (out, r·E) holds B_e's column j in column
    j·E + e (PEFT ``get_delta_factors``: A.reshape(E, r, in), B.reshape(out, r, E)); the rest is zero, so
    each expert's update is its own rank-k_e truncation. Parameters of one module are nested as in the
    source: the deepest there is the deepest here (``.base_layer`` once per level).
    """
    tensors: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    by_module: dict[str, list[ExpertSlot]] = {}
    for slot in slots:
        by_module.setdefault(slot.module, []).append(slot)
    for module, group in by_module.items():
        group.sort(key=lambda sl: -sl.depth)
        for level, slot in enumerate(group):
            r = max(a.shape[0] for _, a in slot.factors.values())
            b0, a0 = next(iter(slot.factors.values()))
            e_count = slot.experts
            lora_a = np.zeros((e_count * r, a0.shape[1]))
            lora_b = np.zeros((b0.shape[0], r * e_count))
            for e, (b, a) in slot.factors.items():
                k = a.shape[0]
                lora_a[e * r:e * r + k] = a  # (k, in) into expert e's rows
                lora_b[:, e + e_count * np.arange(k)] = b  # column j of B_e -> j·E + e
            key = PEFT_PREFIX + module + ".base_layer" * (len(group) - 1 - level)
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = lora_a, lora_b
            ranks[f"{module}.{slot.parameter}"] = r
    return tensors, ranks


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
        raise ValueError("no module to export")  # module names, or target_parameters' parameter paths
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
            f"the inputs have e.g. {', '.join(list(by_name)[:3])}. Were the results computed from other checkpoints?"
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
                elif layout.kind == "expert":
                    _add_expert(slots, d, tk.factors())
                    row["exported"], row["rank"] = True, tk.rank
                else:
                    b, a = tk.factors()
                    tensors.update(peft_tensors(name, layout, b, a))
                    exported[name] = tk.rank
                    fan_in_fan_out |= layout.fan_in_fan_out
                    row["exported"], row["rank"] = True, tk.rank
                del tk
            rows.append(row)
            bar.advance(note=name)
    param_ranks = _pack_experts(slots, rows, tensors, fan_in_fan_out)
    if not exported and not param_ranks:
        raise LorascopeError("the selection exports no module (every rank is 0 or no module can be exported); "
                             "nothing was written.")
    notes: list[str] = []
    # config keys beyond adapter_config's: ensure_weight_tying, trainable_token_indices
    extra: dict[str, Any] = {}
    rows += _new_rows(plan, ranks, exported, tensors, extra, notes)
    tie = tied_embedding(plan, base, exported)
    if tie is not None:
        rows += _tie(tie, tensors, exported, extra, notes, rows)
    table = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    source = tuned.config if isinstance(tuned, Adapter) else None
    base_path = str(base.path) if base is not None else None
    config = adapter_config({**exported, **param_ranks}, fan_in_fan_out, source, base_path,
                            _task_type(tuned, base) if tuned else None)
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


# ---- tied embeddings and new vocabulary rows ------------------------------------------------------------


@dataclass(frozen=True)
class TiedEmbedding:
    """An exported input embedding whose weight the base's output head uses (tie_word_embeddings)."""

    embedding: str  # module name: model.embed_tokens
    head: str | None  # the tied head PEFT can tie LoRA to (a causal LM's lm_head), else None
    untied: bool = False  # the tuned checkpoint has its own head, paired with the base embedding by the plan


# The output head of causal LMs: the name PEFT's ensure_weight_tying ties LoRA targets to
# (its EMBEDDING_LAYER_NAMES).
CAUSAL_LM_HEAD = "lm_head"


def tied_embedding(plan: Plan, base: Weights | None, exported: dict[str, int]) -> TiedEmbedding | None:
    """The exported input embedding the base declares tied to its output head, if any."""
    if not isinstance(base, Weights) or not declares_tied(base):
        return None
    names = [n for n in exported if f"{n}.weight".endswith(INPUT_EMBEDDINGS)]
    if len(names) != 1:
        return None
    embedding = names[0]
    untied = any(d.name != embedding and d.base is not None and d.base.key == f"{embedding}.weight"
                 for d in plan.deltas)
    architectures = (base.config or {}).get("architectures") or []
    causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return TiedEmbedding(embedding, CAUSAL_LM_HEAD if causal else None, untied)


def _tie(tie: TiedEmbedding, tensors: dict[str, np.ndarray], exported: dict[str, int], extra: dict[str, Any],
         notes: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The head's factors and ensure_weight_tying for a tied embedding, or the note saying how to apply the
    update instead (also in the embedding's export.csv row); export.csv rows for what was added."""
    e = tie.embedding
    row = next(r for r in rows if r["name"] == e)
    if tie.untied:
        row["reason"] = "tied to the base's output head, which the tuned model unties: exact unmerged only"
        notes.append(f"The tuned model unties its output head from {e}, which the base ties "
                     "(tie_word_embeddings): the two updates are exported on their own. Unmerged "
                     "(PeftModel) the adapter is exact; merging would write both into the one matrix the "
                     "base shares, so merge only into a base whose head is untied "
                     f"(tie_word_embeddings=false, its head a copy of {e}).")
        return []
    if tie.head is None:
        row["reason"] = "tied to the base's output head, which PEFT cannot tie LoRA to: apply it merged"
        notes.append(f"{e} is tied to the base's output head (tie_word_embeddings), which PEFT cannot tie "
                     "LoRA to (ensure_weight_tying acts on lm_head only): unmerged (PeftModel) the update "
                     "reaches the input embedding only. Apply it merged (merge_and_unload), which writes it "
                     "into the shared matrix once.")
        return []
    head, key = tie.head, PEFT_PREFIX + tie.head
    row["reason"] = f"tied to {head}: ensure_weight_tying; merging needs the recipe in the notes (README)"
    tensors[f"{key}.lora_A.weight"] = tensors[f"{PEFT_PREFIX}{e}.lora_embedding_B"].T  # (dim, r)ᵀ -> (r, dim)
    tensors[f"{key}.lora_B.weight"] = tensors[f"{PEFT_PREFIX}{e}.lora_embedding_A"].T  # (r, num)ᵀ -> (num, r)
    exported[head] = exported[e]
    extra["ensure_weight_tying"] = True
    notes.append(f"{e} is tied to {head} (tie_word_embeddings): the adapter holds {head}'s factors too (the "
                 "embedding's, transposed) and sets ensure_weight_tying, so unmerged (PeftModel) the update "
                 "reaches the input and the output as in the fine-tune. PEFT 0.21's merge_and_unload adds "
                 "it twice to the shared matrix: to merge, load the adapter with ensure_weight_tying=False "
                 f"and without {head} in target_modules.")
    reason = f"tied to {e}: its factors, transposed (ensure_weight_tying)"
    own = next((r for r in rows if r["name"] == head), None)  # an adapter resized that held the head
    if own is not None:
        own.update(rank=exported[e], exported=True, reason=reason)
        return []
    return [_row(head, "linear", True, reason, exported[e])]


def _new_rows(plan: Plan, ranks: dict[str, int], exported: dict[str, int], tensors: dict[str, np.ndarray],
              extra: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """Rows added for new tokens: through trainable_token_indices where PEFT can hold them, else named as
    dropped."""
    rows, indices, size = [], {}, 0
    for d in plan.deltas:
        if not d.added_rows or d.name not in ranks:
            continue
        first, k = d.tuned.rows, d.added_rows
        size = max(size, first + k)
        label = f"{d.name} rows {first}–{first + k - 1}"
        if d.name in exported:
            _pad_token_rows(tensors, d.name, k)
            why = ("PEFT cannot hold them beside a LoRA update of the same tensor (its "
                   "trainable_token_indices cannot wrap a LoRA layer)")
            notes.append(f"{label} ({k} new tokens) are not in the adapter: {why}; the adapter leaves them "
                         "as the resize makes them. Keep those rows of the tuned tensor yourself, or select "
                         f"rank 0 for {d.name} to export them through trainable_token_indices instead.")
            rows.append(_row(label, "rows", False, f"{k} row(s) added for new tokens, dropped: {why}"))
            continue
        values = d.tuned.store.get_numpy(d.tuned.key)[first:first + k]  # (k, dim): the new rows' tuned values
        tensors[f"{PEFT_PREFIX}{d.name}.token_adapter.trainable_tokens_delta"] = np.ascontiguousarray(values)
        indices[d.name] = list(range(first, first + k))
        reason = f"{k} new token row(s): their tuned values (trainable_token_indices)"
        rows.append(_row(label, "rows", True, reason))
    if indices:
        extra["trainable_token_indices"] = indices
        shown = ", ".join(f"{n} {v[0]}–{v[-1]}" for n, v in indices.items())
        notes.append(f"New token rows ({shown}) are exported through trainable_token_indices, with their "
                     "tuned values, which replace what the resize put there.")
    if size:
        notes.append(f"The fine-tune grew the vocabulary to {size} tokens: resize the base first "
                     f"(model.resize_token_embeddings({size})), then load the adapter; it is shaped for that "
                     "size.")
    return rows


def _pad_token_rows(tensors: dict[str, np.ndarray], name: str, k: int) -> None:
    """Zero LoRA update for ``k`` new token rows, so the factors fit the resized base: the columns of an
    embedding's
    lora_embedding_A (r, num) -> (r, num + k), the rows of a head's lora_B (out, r) -> (out + k, r)."""
    key = PEFT_PREFIX + name
    if f"{key}.lora_embedding_A" in tensors:
        a = tensors[f"{key}.lora_embedding_A"]
        tensors[f"{key}.lora_embedding_A"] = np.concatenate([a, np.zeros((a.shape[0], k), a.dtype)], axis=1)
    elif f"{key}.lora_B.weight" in tensors:
        b = tensors[f"{key}.lora_B.weight"]
        tensors[f"{key}.lora_B.weight"] = np.concatenate([b, np.zeros((k, b.shape[1]), b.dtype)], axis=0)


def _row(name: str, kind: str, exported: bool, reason: str, rank: float = np.nan) -> dict[str, Any]:
    return {"name": name, "kind": kind, "rank": rank, "method": None, "energy": np.nan, "rel_error": np.nan,
            "optimal_rel_error": np.nan, "exported": exported, "reason": reason}


def _add_expert(slots: dict[str, ExpertSlot], d: Delta, factors: tuple[np.ndarray, np.ndarray]) -> None:
    p = d.module.params
    path = f"{p['module']}.{p['parameter']}"
    slot = slots.setdefault(path, ExpertSlot(p["module"], p["parameter"], int(p["experts"]),
                                             int(p["depth"]), {}))
    slot.factors[int(p["expert"])] = factors
    slot.names.append(d.name)


def _pack_experts(slots: dict[str, ExpertSlot], rows: list[dict[str, Any]], tensors: dict[str, np.ndarray],
                  fan_in_fan_out: bool) -> dict[str, int]:
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
                row["reason"] = ("an expert of a fused parameter: PEFT's target_parameters LoRA does not "
                                 "work with the fan_in_fan_out the other exported modules need")
        return {}
    packed, ranks = expert_tensors(list(slots.values()))
    tensors.update(packed)
    for row in rows:
        sl = experts.get(row["name"])
        if sl is not None:
            r = ranks[f"{sl.module}.{sl.parameter}"]
            row["reason"] = (f"in a target_parameters LoRA on {sl.module}.{sl.parameter} at r = {r} (PEFT "
                             "keeps one rank per parameter: the experts' own ranks are zero-padded to it)")
    return ranks


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


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, so the same tensors give the same bytes.

    safetensors serializes ``__metadata__`` from a hash map whose order changes from process to process; the
    rewritten header holds the same entries and keeps its length (padding spaces), so no data moves.
    """
    import struct

    with open(path, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        if len(header.get("__metadata__") or {}) < 2:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            return
        fh.seek(8)
        fh.write(text + b" " * (n - len(text)))


def write_peft_folder(out: Path, config: dict[str, Any], tensors: dict[str, np.ndarray], dtype: str = "float32",
                      verbatim: dict[str, Any] | None = None) -> Path:
    """adapter_config.json and adapter_model.safetensors (factors cast to ``dtype``; ``verbatim`` tensors as
    they are),
    written as one transaction (``lorascope.outputs``): an earlier export's files are replaced, nothing
    else."""
    import torch
    from safetensors.torch import save_file

    from ..outputs import writing

    tdtype = getattr(torch, dtype)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(tdtype).contiguous() for k, v in tensors.items()}
    state.update({k: torch.as_tensor(v).contiguous() for k, v in (verbatim or {}).items()})
    with writing(out, "export") as tx:
        save_file(state, str(tx.stage / "adapter_model.safetensors"), metadata={"format": "pt", **WRITTEN_BY})
        sort_metadata(tx.stage / "adapter_model.safetensors")
        with open(tx.stage / "adapter_config.json", "w") as fh:
            json.dump(config, fh, indent=2)
            fh.write("\n")
    return tx.path
