"""Single-file LoRAs written by diffusion tools, recognized by their tensor names.

| layout | keys | scale |
| --- | --- | --- |
| kohya | ``<stem>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (also ``_lora_down``) | alpha / r; no alpha → 1 |
| diffusers | ``<module>.lora.down.weight`` / ``.up.weight``; processors ``…processor.to_q_lora.down.weight`` | ``.alpha``, else ss_network_alpha, else 1 |
| lora-ab | ``<module>.lora_A.weight`` / ``.lora_B.weight`` without a config (ai-toolkit, newer diffusers) | same as diffusers |
| cloneofsimo | ``<group>:<i>:down`` / ``:up``, rank in the metadata | 1 (chosen at inference) |

Factors: down (r, in[, kh, kw]) is the right factor, up (out, r[, 1, 1]) the left; conv kernels are
flattened to (out, in·kh·kw) as docs/METRICS.md says.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import LorascopeError
from ..names import strip_adapter_prefix
from .base import Adapter, AdapterModule, TensorRef
from .kohya_names import kohya_warnings
from .kohya_names import resolve as resolve_kohya
from .peft import _KEY as PEFT_KEY
from .peft import build_adapter
from .store import TensorStore
from .validate import alpha_tensor, metadata_alpha

# LyCORIS and other non down/up factorizations: name them instead of misreading them.
UNSUPPORTED = {
    "LyCORIS LoKr (Kronecker factors lokr_w1/lokr_w2)": re.compile(r"[._]lokr_w[12]"),
    "LyCORIS LoHa (Hadamard factors hada_w1/hada_w2)": re.compile(r"[._]hada_w[12]"),
    "LyCORIS LoCon with a Tucker core (lora_mid)": re.compile(r"[._]lora_mid\b"),
    "LyCORIS OFT / BOFT (orthogonal blocks)": re.compile(r"[._](oft_blocks|oft_diag|boft_)"),
    "LyCORIS IA3 / full-diff (weight, diff)": re.compile(r"\.(diff|diff_b|on_input)$"),
}


def kohya_name(stem: str) -> str:
    """'lora_unet_down_blocks_0_attentions_1_proj_in' -> 'unet.down_blocks.0.attentions.1.proj_in'.

    The module name the model has in diffusers / transformers (``kohya_names.resolve``); a stem outside
    the vocabulary, or ambiguous under it, keeps kohya's form with its integers dotted ('unet_x.0.y').
    """
    return resolve_kohya(stem).name


def diffusers_name(module: str) -> str:
    """Old attention processors: '…attn1.processor.to_out' -> '…attn1.to_out.0'; '…to_k' -> '…to_k'."""
    if ".processor." in module:
        head, proj = module.rsplit(".processor.", 1)
        module = f"{head}.{proj}"
        if proj == "to_out":
            module += ".0"
    return strip_adapter_prefix(module)


def cloneofsimo_name(module: str) -> str:
    return module.replace(":", ".")


@dataclass(frozen=True)
class Layout:
    """A down/up key layout: the regex (groups 'module' and 'which') and how names and alphas are read."""

    pattern: re.Pattern
    name: Callable[[str], str]
    metadata_alpha: bool  # fall back to ss_network_alpha when a module has no alpha tensor
    assumed_scale_reason: str


DOWN_UP_LAYOUTS = {
    "kohya": Layout(
        re.compile(r"^(?P<module>lora_[^.]+?)[._]lora_(?P<which>down|up)\.weight$"),
        kohya_name,
        False,
        "kohya LoRA without an .alpha tensor: alpha = r, scale 1 (as sd-scripts loads it)",
    ),
    "diffusers": Layout(
        re.compile(r"^(?P<module>.+?)(?:\.lora|\.lora_linear_layer|_lora)\.(?P<which>down|up)\.weight$"),
        diffusers_name,
        True,
        "diffusers LoRA without alpha: scale 1 assumed (diffusers' default network_alpha = None)",
    ),
    "cloneofsimo": Layout(
        re.compile(r"^(?P<module>[^:]+:\d+):(?P<which>down|up)$"),
        cloneofsimo_name,
        False,
        "cloneofsimo LoRAs store no alpha: the scale is chosen at inference; scale 1 assumed",
    ),
}


def detect_layout(keys: list[str]) -> str | None:
    """The LoRA key layout most keys follow ('kohya', 'diffusers', 'cloneofsimo', 'lora-ab'), or None."""
    counts = {name: sum(1 for k in keys if lay.pattern.match(k)) for name, lay in DOWN_UP_LAYOUTS.items()}
    counts["lora-ab"] = sum(1 for k in keys if PEFT_KEY.match(k))
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else None


def unsupported_kinds(keys: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        for kind, pat in UNSUPPORTED.items():
            if pat.search(key):
                found[kind].append(key)
    return found


def refuse_unsupported(path: Path, keys: list[str]) -> None:
    found = unsupported_kinds(keys)
    if found:
        kinds = "; ".join(f"{k}: {len(v)} tensors such as {v[0]}" for k, v in found.items())
        raise LorascopeError(
            f"{path} is not a down/up LoRA: it holds {kinds}. lorascope reads LoRA factors "
            "(lora_down/lora_up, lora_A/lora_B, .lora.down/.up, :down/:up) whose product is the update; "
            "these factorizations are different. Merge the file into its base model with the tool that "
            "made it and compare base and merged checkpoints with `lorascope spectrum BASE MERGED`."
        )


def _alpha_scale(store: TensorStore, alpha_key: str, rank: int, metadata_alpha: float | None) -> tuple[float | None, float | None]:
    if alpha_key in store:
        alpha = alpha_tensor(store.get_numpy(alpha_key), alpha_key, str(store.path), rank)
        return alpha, alpha / rank
    if metadata_alpha is not None:
        return metadata_alpha, metadata_alpha / rank
    return None, None


def _metadata_alpha(store: TensorStore) -> float | None:
    return metadata_alpha(store.metadata.get("ss_network_alpha"), str(store.path))


def open_down_up(path: Path, store: TensorStore, layout_name: str) -> Adapter:
    layout = DOWN_UP_LAYOUTS[layout_name]
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    used: set[str] = set()
    for key in store.keys():
        m = layout.pattern.match(key)
        if m:
            groups[m["module"]][m["which"]] = key
            used.add(key)
    meta_alpha = _metadata_alpha(store) if layout.metadata_alpha else None
    modules, problems, no_alpha = [], [], []
    for module, pair in sorted(groups.items()):
        if set(pair) != {"down", "up"}:
            problems.append(f"{module}: only the {next(iter(pair))} factor is present")
            continue
        right = TensorRef(store, pair["down"], "flatten")
        left = TensorRef(store, pair["up"], "flatten")
        if left.shape[1] != right.shape[0]:
            problems.append(f"{module}: up {left.shape} and down {right.shape} do not chain")
            continue
        rank = right.shape[0]
        alpha_key = f"{module}.alpha"
        used.add(alpha_key)
        alpha, scale = _alpha_scale(store, alpha_key, rank, meta_alpha)
        if scale is None:
            no_alpha.append(module)
            scale = 1.0
        kind = "conv" if len(store.info(pair["down"]).shape) > 2 else "linear"
        shape = (left.shape[0], right.shape[1])
        parts = {"up": left, "down": right}
        kernel = tuple(right.stored_shape[2:]) if kind == "conv" else ()
        modules.append(AdapterModule(layout.name(module), "lora", parts, shape, rank, alpha, scale, kind, layout_name,
                                     kernel=kernel))
    if problems:
        raise LorascopeError(f"{path}: incomplete LoRA modules:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    warnings = []
    if no_alpha:
        warnings.append({"name": "*", "reason": f"{len(no_alpha)} of {len(modules)} modules: {layout.assumed_scale_reason}"})
    if layout_name == "cloneofsimo":
        warnings += _check_metadata_ranks(store, modules)
    if layout_name == "kohya":
        warnings += kohya_warnings(sorted(groups))
    leftover = [k for k in store.keys() if k not in used]
    for key in leftover:
        if key.endswith("dora_scale"):
            warnings.append({"name": key, "reason": "kohya DoRA magnitude (dora_scale) ignored: ΔW taken as s·up@down"})
        else:
            warnings.append({"name": key, "reason": f"not a {layout_name} LoRA factor; skipped"})
    return Adapter(path, layout_name, store, modules, {}, {}, dict(store.metadata), warnings)


def _check_metadata_ranks(store: TensorStore, modules: list[AdapterModule]) -> list[dict[str, str]]:
    out = []
    for m in modules:
        declared = store.metadata.get(m.name.replace(".", ":") + ":rank")
        if declared is not None and declared.isdigit() and int(declared) != m.tensor_rank:
            out.append({"name": m.name, "reason": f"metadata says rank {declared}, tensors have rank {m.tensor_rank}"})
    return out


def open_lora_ab(path: Path, store: TensorStore) -> Adapter:
    """PEFT-style lora_A/lora_B keys without an adapter_config.json (ai-toolkit, newer diffusers)."""
    adapter = build_adapter(path, "lora-ab", store, {})
    meta_alpha = _metadata_alpha(store)
    modules, no_alpha = [], 0
    for m in adapter.modules:
        rank = m.tensor_rank
        alpha, scale = _alpha_scale(store, f"{m.left.key.rsplit('.lora_', 1)[0]}.alpha", rank, meta_alpha)
        if scale is None:
            no_alpha += 1
            alpha, scale = None, 1.0
        modules.append(dataclasses.replace(m, rank=rank, alpha=alpha, scale=scale))
    vectors = {k: v for k, v in adapter.vectors.items() if not k.endswith(".alpha")}
    warnings = list(adapter.warnings)
    if no_alpha:
        warnings.append({
            "name": "*",
            "reason": f"{no_alpha} of {len(modules)} modules have no .alpha tensor and the file no "
            "ss_network_alpha metadata: scale 1 assumed",
        })
    return dataclasses.replace(adapter, modules=modules, vectors=vectors, config=dict(store.metadata), warnings=warnings)


def open_lora_file(path: Path, store: TensorStore, layout: str | None = None) -> Adapter:
    """Open a single-file LoRA in the given layout, or the one its keys follow."""
    refuse_unsupported(path, store.keys())
    layout = layout or detect_layout(store.keys())
    if layout == "lora-ab":
        return open_lora_ab(path, store)
    if layout in DOWN_UP_LAYOUTS:
        return open_down_up(path, store, layout)
    raise LorascopeError(
        f"{path}: no LoRA factors in a known layout (kohya lora_down/lora_up, diffusers .lora.down/.up, "
        f"lora_A/lora_B, cloneofsimo :down/:up); found tensors such as {', '.join(store.keys()[:4])}."
    )
