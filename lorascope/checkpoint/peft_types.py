"""Readers of PEFT's factored types besides LoRA — LoHa, LoKr, AdaLoRA, VeRA — registered by ``peft_type``.

Plain LoRA is ``peft_lora``'s, LoRA on parameters ``peft_experts``', and the types that multiply the base
weight (IA3, OFT, BOFT) ``peft_multiplicative``'s; every reader is registered in ``peft_keys.PEFT_TYPES``.

| peft_type | parts (per module) | family |
| --- | --- | --- |
| LORA, target_parameters | lora_A (E·r, in), lora_B (out, r·E) of a fused expert parameter | lora_expert |
| LOHA | hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b (+ hada_t1, hada_t2) | loha |
| LOKR | lokr_w1 or lokr_w1_a/_b, lokr_w2 or lokr_w2_a/_b (+ lokr_t2) | lokr |
| ADALORA | lora_A (r, in), lora_B (out, r), lora_E (r, 1) (+ ranknum) | adalora |
| VERA | vera_lambda_b (out,), vera_lambda_d (r,); shared vera_A (r, in_max), vera_B (out_max, r) | vera |
| IA3 | ia3_l: (out, 1), (1, in), or (1, C, 1, 1) for a conv | ia3 |
| OFT | oft_R.weight (blocks, b(b−1)/2), oft_embedding_R.weight | oft |
| BOFT | boft_R (N, D, b, b), boft_s | boft |

What each type's config declares (ranks, alphas, patterns, feedforward modules, Cayley options) is read as the
installed PEFT (0.21) reads it, and every rank, alpha and scale is checked finite and positive.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef
from .peft_config import CONFIG, pattern_values, patterns, positive
from .peft_keys import Leftovers, finish, group_parts, part_pattern, peft_type
from .tensor_store import TensorStore


# ---- LoHa and LoKr (PEFT's LyCORIS tuners) ---------------------------------------------------------------

LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def _lycoris_scale(cfg: dict[str, Any], name: str) -> tuple[int, float, float]:
    """(r, alpha, alpha / r): PEFT's LoHa and LoKr ``update_layer`` scale by alpha / r, patterns applied."""
    r, alpha = pattern_values(cfg, name, "r", "alpha", 8)
    return r, alpha, alpha / r


def _check_lycoris(cfg: dict[str, Any], path: Path) -> None:
    positive(cfg, "r", path, integer=True, default=8)
    positive(cfg, "alpha", path, default=8)
    patterns(cfg, path, {"rank_pattern": True, "alpha_pattern": False})


def _loha_shape(p: dict[str, TensorRef]) -> tuple[tuple[int, int], str, tuple[int, ...]]:
    """ΔW's (out, in·k) shape, the layer kind and kernel, from LoHa's parts."""
    if "hada_t1" in p:  # conv with Tucker cores: w_a (r, out), w_b (r, in), t (r, r, k…)
        kernel = tuple(p["hada_t1"].stored_shape[2:])
        return (p["hada_w1_a"].shape[1], p["hada_w1_b"].shape[1] * math.prod(kernel)), "conv", kernel
    return (p["hada_w1_a"].shape[0], p["hada_w1_b"].shape[1]), "matrix", ()


@peft_type("LOHA", LOHA_PARTS, lambda cfg, path: _check_lycoris(cfg, path))
def open_loha(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT LoHa folder: ΔW = (α/r) · (W1a W1b) ⊙ (W2a W2b), Tucker cores for conv layers."""
    _check_lycoris(cfg, path)
    leftovers = Leftovers(store, "LOHA")
    modules, problems = [], []
    for name, keys in sorted(group_parts(store, part_pattern(LOHA_PARTS), leftovers).items()):
        needed = (
            "hada_w1_a",
            "hada_w1_b",
            "hada_w2_a",
            "hada_w2_b",
            *(("hada_t1", "hada_t2") if any(k.startswith("hada_t") for k in keys) else ()),
        )
        missing = [k for k in needed if k not in keys]
        if missing:
            problems.append(f"{name}: missing {', '.join(missing)}")
            continue
        parts = {k: TensorRef(store, keys[k], "as_is" if "hada_t1" in keys else "flatten") for k in needed}
        shape, kind, kernel = _loha_shape(parts)
        r, alpha, scale = _lycoris_scale(cfg, name)
        modules.append(
            AdapterModule(name, "loha", parts, shape, r, alpha, scale, kind, "peft", kernel=kernel)
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, [], "LoHa")


def _lokr_factor_shape(p: dict[str, TensorRef], i: int) -> tuple[int, int]:
    """(rows, columns) of W1 or W2 as it enters the Kronecker product (a conv factor flattened)."""
    if f"lokr_w{i}" in p:
        s = p[f"lokr_w{i}"].stored_shape
        return s[0], math.prod(s[1:])
    if f"lokr_t{i}" in p:  # Tucker: w_a (r, out), w_b (r, in), t (r, r, k…)
        kernel = math.prod(p[f"lokr_t{i}"].stored_shape[2:])
        return p[f"lokr_w{i}_a"].shape[1], p[f"lokr_w{i}_b"].shape[1] * kernel
    return p[f"lokr_w{i}_a"].shape[0], p[f"lokr_w{i}_b"].shape[1]


@peft_type("LOKR", LOKR_PARTS, lambda cfg, path: _check_lycoris(cfg, path))
def open_lokr(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT LoKr folder: ΔW = (α/r) · W1 ⊗ W2, each factor full or a low-rank pair (W2 also Tucker)."""
    _check_lycoris(cfg, path)
    leftovers = Leftovers(store, "LOKR")
    modules, problems = [], []
    for name, keys in sorted(group_parts(store, part_pattern(LOKR_PARTS), leftovers).items()):
        bad = [
            f"W{i}"
            for i in (1, 2)
            if f"lokr_w{i}" not in keys and not {f"lokr_w{i}_a", f"lokr_w{i}_b"} <= set(keys)
        ]
        if bad:
            problems.append(f"{name}: has {', '.join(sorted(keys))}, no complete {' or '.join(bad)}")
            continue
        parts = {}
        for k, key in keys.items():
            ndim = len(store.info(key).shape)
            # a Conv1d's full lokr_w2 stays 3-D: PEFT's product is then not W1 ⊗ W2_flat (delta.lycoris)
            keep = (
                k == "lokr_t2"
                or (k == "lokr_w2" and ndim == 3)
                or ("lokr_t2" in keys and k.startswith("lokr_w2_"))
            )
            parts[k] = TensorRef(store, key, "as_is" if keep else "flatten")
        (o1, i1), (o2, i2) = _lokr_factor_shape(parts, 1), _lokr_factor_shape(parts, 2)
        conv = any(len(ref.stored_shape) > 2 for ref in parts.values())
        kernel = tuple((parts.get("lokr_w2") or parts.get("lokr_t2")).stored_shape[2:]) if conv else ()
        r, alpha, scale = _lycoris_scale(cfg, name)
        interleaved = "lokr_w2" in parts and parts["lokr_w2"].view == "as_is"  # PEFT's Conv1d make_kron
        params = {"kron": "peft-conv1d"} if interleaved else {}
        modules.append(
            AdapterModule(
                name,
                "lokr",
                parts,
                (o1 * o2, i1 * i2),
                r,
                alpha,
                scale,
                "conv" if conv else "matrix",
                "peft",
                kernel=kernel,
                params=params,
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, [], "LoKr")


# ---- AdaLoRA --------------------------------------------------------------------------------------------

ADALORA_PARTS = ("lora_A", "lora_B", "lora_E", "ranknum")


def _rank_masks(cfg: dict[str, Any], where: Path) -> dict[str, int]:
    """module name -> rank AdaLoRA's allocation kept (config ``rank_pattern``: name -> a bool per rank)."""
    masks = cfg.get("rank_pattern") or {}
    if not isinstance(masks, dict):
        raise LorascopeError(f"{where / CONFIG}: 'rank_pattern' must be a JSON object, found {masks!r}.")
    kept = {}
    for key, mask in masks.items():
        if not isinstance(mask, list) or not all(isinstance(x, bool) for x in mask):
            raise LorascopeError(
                f"{where / CONFIG}: AdaLoRA rank_pattern entry {key!r} must be a list of "
                f"booleans (one per initial rank), found {mask!r}."
            )
        name = re.sub(r"\.lora_E(\.[^.]+)?$", "", key)  # keys are '<module>.lora_E' (PEFT's named_parameters)
        kept[name] = sum(mask)
    return kept


def _check_adalora(cfg: dict[str, Any], path: Path) -> tuple[int, float, dict[str, int]]:
    init_r = positive(cfg, "init_r", path, integer=True, default=12)
    return init_r, positive(cfg, "lora_alpha", path, default=8), _rank_masks(cfg, path)


@peft_type("ADALORA", ADALORA_PARTS, _check_adalora)
def open_adalora(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT AdaLoRA folder: ΔW = B diag(E) A · α / (ranknum + 1e-5), at the ranks its allocation kept.

    PEFT saves A, E, B sliced to the ranks ``rank_pattern`` keeps and not ``ranknum``; on loading it
    recreates each layer at ``init_r`` and keeps that ranknum (``resize_modules_by_rank_pattern``), so the
    scale is α / (init_r + 1e-5) unless the file stores ranknum (older PEFT), which then applies.
    """
    init_r, alpha, kept = _check_adalora(cfg, path)
    leftovers = Leftovers(store, "ADALORA")
    modules, problems, warnings = [], [], []
    for name, keys in sorted(group_parts(store, part_pattern(ADALORA_PARTS), leftovers).items()):
        missing = [k for k in ("lora_A", "lora_B", "lora_E") if k not in keys]
        if missing:
            problems.append(f"{name}: missing {', '.join(missing)}")
            continue
        a, b, e = (TensorRef(store, keys[k]) for k in ("lora_A", "lora_B", "lora_E"))
        rank = a.shape[0]
        if b.shape[1] != rank or math.prod(e.shape) != rank:
            problems.append(
                f"{name}: lora_A {list(a.shape)}, lora_B {list(b.shape)}, lora_E {list(e.shape)} "
                "do not share one rank"
            )
            continue
        if name in kept and kept[name] != rank:
            problems.append(f"{name}: rank_pattern keeps {kept[name]} ranks but the tensors have {rank}")
            continue
        if rank == 0:
            warnings.append({"name": name, "reason": "AdaLoRA's allocation kept no rank here: no update"})
            continue
        ranknum = float(init_r)
        if "ranknum" in keys:  # saved by older PEFT versions; loading then restores it
            ranknum = float(TensorRef(store, keys["ranknum"]).load_numpy(finite=False).reshape(-1)[0])
            if not math.isfinite(ranknum) or ranknum <= 0:
                raise LorascopeError(
                    f"{store.path}: {keys['ranknum']} must be a positive number, found {ranknum!r}."
                )
        scale = alpha / (ranknum + 1e-5)
        parts = {"up": b, "down": a, "diag": e}
        fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        modules.append(
            AdapterModule(
                name,
                "adalora",
                parts,
                (b.shape[0], a.shape[1]),
                rank,
                alpha,
                scale,
                "linear",
                "peft",
                fan_in_fan_out,
                params={"ranknum": ranknum},
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, warnings, "AdaLoRA")


# ---- VeRA -----------------------------------------------------------------------------------------------

VERA_PARTS = ("vera_lambda_b", "vera_lambda_d", "vera_A", "vera_B")


def _shared(store: TensorStore, part: str) -> str | None:
    """The key of VeRA's shared projection (saved once as ``base_model.vera_A``, maybe + adapter name)."""
    hits = [k for k in store.keys() if re.search(rf"(^|\.){part}(\.[^.]+)?$", k) and ".vera_lambda" not in k]
    return hits[0] if len(hits) == 1 else None


@peft_type("VERA", VERA_PARTS, lambda cfg, path: positive(cfg, "r", path, integer=True, default=256))
def open_vera(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT VeRA folder: ΔW = Λ_b B[:out] Λ_d A[:, :in] with the shared projections saved in the file.

    Raises:
        LorascopeError: the projections were not saved (``save_projection=False``): PEFT regenerates them from
            ``projection_prng_key`` with torch's generator, which lorascope does not reproduce.
    """
    positive(cfg, "r", path, integer=True, default=256)
    key_a, key_b = _shared(store, "vera_A"), _shared(store, "vera_B")
    if key_a is None or key_b is None:
        raise LorascopeError(
            f"{path}: the VeRA adapter does not hold its shared projections vera_A and vera_B "
            f"(save_projection={cfg.get('save_projection')!r}, "
            f"projection_prng_key={cfg.get('projection_prng_key')!r}). PEFT regenerates them from that key "
            "with torch's random generator at load time; lorascope does not regenerate PEFT's random state, "
            "so ΔW is not known from these files. Save the adapter with save_projection=True (the default)."
        )
    leftovers = Leftovers(store, "VERA")
    proj_a, proj_b = TensorRef(store, key_a), TensorRef(store, key_b)
    pattern = part_pattern(("vera_lambda_b", "vera_lambda_d"))
    grouped = group_parts(_Without(store, {key_a, key_b}), pattern, leftovers)
    modules, problems = [], []
    for name, keys in sorted(grouped.items()):
        if set(keys) != {"vera_lambda_b", "vera_lambda_d"}:
            problems.append(f"{name}: has {', '.join(sorted(keys))}, not vera_lambda_b and vera_lambda_d")
            continue
        lb, ld = TensorRef(store, keys["vera_lambda_b"]), TensorRef(store, keys["vera_lambda_d"])
        out, r = math.prod(lb.shape), math.prod(ld.shape)
        if r != proj_a.shape[0] or r != proj_b.shape[1] or out > proj_b.shape[0]:
            problems.append(
                f"{name}: vera_lambda_b ({out}) and vera_lambda_d ({r}) do not fit the shared "
                f"vera_A {list(proj_a.shape)} and vera_B {list(proj_b.shape)}"
            )
            continue
        parts = {
            "vera_B": TensorRef(store, key_b, rows=out),
            "vera_A": TensorRef(store, key_a, "transpose"),
            "lambda_b": lb,
            "lambda_d": ld,
        }
        # ΔW's input width is the base layer's (PEFT slices vera_A to it): 0 until the base gives it
        modules.append(
            AdapterModule(
                name,
                "vera",
                parts,
                (out, 0),
                r,
                None,
                1.0,
                "linear",
                "peft",
                bool(cfg.get("fan_in_fan_out", False)),
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, [], "VeRA")


class _Without:
    """A store view without some keys (VeRA's shared projections are read apart from the modules)."""

    def __init__(self, store: TensorStore, drop: set[str]):
        self._store, self._drop = store, drop
        self.path = store.path

    def keys(self) -> list[str]:
        return [k for k in self._store.keys() if k not in self._drop]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._store, attr)
