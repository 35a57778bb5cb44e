"""What summary.json says of an analysis beside its tables: how the spectra were computed (the numerical floor
of each SVD method), every input tensor's dtype, and the warnings about mixed dtypes and exactly zero updates.

Pure: a plan and computed rows in, dictionaries out (``lorascope.analysis.build_results`` puts them in the
summary).
"""

from __future__ import annotations

from typing import Any

from .delta import Plan


FLOOR_RULE = (
    "σ at or below sigma_floor (the SVD route's own absolute error bound) count as zero in entropy_rank, "
    "numerical_rank and gd_rank; the stored spectra keep every value (docs/METRICS.md, 'The numerical floor')"
)
FLOOR_BY_METHOD = {
    "factored": "ε·max(m, n)·k·|s|·‖L‖_F·‖R‖_F",
    "gram": "√(ε·(max(m, n)·‖ΔW‖_F² + min(m, n)·σ1²))",
    "exact": "ε(dtype)·max(m, n)·σ1",
    "randomized": "ε(dtype)·max(m, n)·σ1 (arithmetic only; the values are lower bounds)",
    "kronecker": "|s|·(σ1(A)·floor(B) + σ1(B)·floor(A) + floor(A)·floor(B))",
}


def numerics_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the spectra were computed: the floor rule,
    and per method its bound and how many modules used it."""
    methods: dict[str, int] = {}
    for r in rows:
        methods[r["method"]] = methods.get(r["method"], 0) + 1
    floors = [r["sigma_floor"] / r["spectral_norm"] for r in rows if r.get("spectral_norm")]
    return {
        "floor_rule": FLOOR_RULE,
        "methods": {
            m: {"modules": k, "floor": FLOOR_BY_METHOD.get(m, "")} for m, k in sorted(methods.items())
        },
        "max_floor_over_sigma1": float(max(floors)) if floors else 0.0,
    }


def _tensor_dtype(ref: Any) -> str:
    return ref.store.info(ref.key).dtype


def dtype_census(plan: Plan) -> dict[str, Any]:
    """Every input tensor's dtype, compactly: counts per dtype per input,
    and the modules whose dtypes differ."""
    stores: dict[str, Any] = {}
    for d in plan.deltas:
        for ref in d.parts.values():
            stores.setdefault(
                "adapter" if d.module is not None and d.family != "dense" else "tuned", ref.store
            )
        if d.base is not None:
            stores.setdefault("base", d.base.store)
    for v in plan.vectors:
        stores.setdefault("tuned", v.tuned.store)
        if v.base is not None:
            stores.setdefault("base", v.base.store)
    counts = {}
    for role, store in stores.items():
        per: dict[str, int] = {}
        for key in store.keys():
            dt = store.info(key).dtype
            per[dt] = per.get(dt, 0) + 1
        counts[role] = dict(sorted(per.items()))
    mixed = {
        d.name: {"tuned": _tensor_dtype(d.tuned), "base": _tensor_dtype(d.base)}
        for d in plan.deltas
        if d.family == "dense" and d.base is not None and _tensor_dtype(d.tuned) != _tensor_dtype(d.base)
    }
    return {"counts": counts, "mixed_modules": mixed}


# unit roundoff of each stored dtype: the relative size of the rounding a weight stored in it carries
_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float8_e4m3fn": 2.0**-4,
    "float8_e5m2": 2.0**-3,
}


def mixed_dtype_warnings(plan: Plan) -> list[dict[str, str]]:
    """One warning per pair of dtypes when full-diff modules compare tensors stored in different dtypes."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for d in plan.deltas:
        if d.family == "dense" and d.base is not None:
            t, b = _tensor_dtype(d.tuned), _tensor_dtype(d.base)
            if t != b:
                pairs.setdefault((t, b), []).append(d.name)
    out = []
    for (t, b), names in pairs.items():
        coarse = t if _ROUNDOFF.get(t, 0) >= _ROUNDOFF.get(b, 0) else b
        out.append(
            {
                "name": "mixed dtypes",
                "reason": (
                    f"{len(names)} module(s) subtract a {b} base from a {t} fine-tuned tensor (e.g. "
                    f"{names[0]}): ΔW then holds the {coarse} rounding of every weight (about "
                    f"{_ROUNDOFF.get(coarse, 0):.0e} of its size) as well as the update, full-rank noise "
                    "that raises entropy_rank, numerical_rank and the energy ranks. Compare checkpoints "
                    f"saved in one dtype (convert the {b if coarse == t else t} one to {coarse}) for the "
                    "update alone; summary.json 'dtypes' lists the modules."
                ),
            }
        )
    return out


def zero_update_warnings(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One warning for the modules whose ΔW is exactly zero (frozen, or inputs that hold the same weights)."""
    zero = [r["name"] for r in rows if r["fro_norm"] == 0]
    if not zero:
        return []
    if len(zero) == len(rows) and all(r["source"] != "dense" for r in rows):
        reason = (
            f"ΔW is exactly zero in every one of the {len(rows)} adapter modules: their lora_B (up) factors "
            "are all zeros, as initialized; this adapter was saved before any training step changed it"
        )
    elif len(zero) == len(rows):
        reason = (
            f"ΔW is exactly zero in every one of the {len(rows)} modules: the two inputs hold the same "
            "weights (was the fine-tuned checkpoint given as TUNED?)"
        )
    else:
        reason = (
            f"ΔW is exactly zero in {len(zero)} of {len(rows)} modules, unchanged by the fine-tune "
            f"(frozen?): {', '.join(zero[:3])}{' …' if len(zero) > 3 else ''}; their ranks are 0"
        )
    return [{"name": "zero updates", "reason": reason}]
