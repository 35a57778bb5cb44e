"""One adapter module from the parts a single file holds: the family the registry claims
(``delta.family.claim``), ΔW's shape, kind and rank from the stored shapes, and the scale each tool applies.

Per family: its geometry (stored shapes), the rank r that α / r divides by, and the scale without α.

- lora: up (out, r[, 1, 1]), down (r, in[, kh, kw]); Tucker: down (r, in, 1, 1), mid (r, r, kh, kw). Rank r:
  down's rows. Scale without α: 1 (kohya, diffusers, LyCORIS read α = r), warned.
- loha: hada_w*_a (out, r), hada_w*_b (r, in·kh·kw); Tucker: hada_w*_a (r, out), hada_w*_b (r, in), hada_t*
  (r, r, kh, kw). Rank r: hada_w1_b's rows. Scale without α: 1, warned.
- lokr: lokr_w1 (a, c) or w1_a (a, r) w1_b (r, c); lokr_w2 (b, d[, kh, kw]) or w2_a (b, r) w2_b (r, d·kh·kw),
  or Tucker w2_a (r, b) w2_b (r, d) lokr_t2 (r, r, kh, kw). Rank r: w1_b's rows, else w2_b's; both factors
  full: none, s = 1 whatever α says (LyCORIS ``LokrModule``: "use scale = 1"). Scale without α: 1, warned.
- full: diff (out, in[, kh, kw]). Rank r: —. Scale without α: 1.
- ia3: weight (c,) or (1, c, 1, 1), c = out or, with on_input = 1, in. Rank r: —. Scale without α: 1 (the
  increment is stored).
- dora: the parts of lora, loha or lokr + magnitude: (out,), (out, 1[, 1, 1]) per output row, (1, in[, 1, 1])
  per input channel (LyCORIS ``wd_on_output=False``). Rank r: as the inner family. Scale without α: as the
  inner family.

A conv layer is recognised from a factor stored with kernel dims (or a 4-D ``dora_scale``); its ΔW is the
flattened (out, in·kh·kw). LyCORIS LoKr/LoHa factors of older files hold the kernel inside their 2-D columns:
the module is then (out, in·kh·kw) with no kernel recorded, and a base weight supplies the layer's shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import LorascopeError
from .alphas import DeclaredScales, tensor_alpha
from .base import AdapterModule, TensorRef


class Unfit(Exception):
    """The parts of one module do not fit together; the message says how."""


@dataclass(frozen=True)
class Geometry:
    """ΔW (m, n), the rank the scale divides by (None: there is none), the layer kind and its kernel dims."""

    shape: tuple[int, int]
    rank: int | None
    kind: str = "linear"
    kernel: tuple[int, ...] = ()


def _kernel(ref: TensorRef) -> tuple[int, ...]:
    return tuple(ref.stored_shape[2:])


def _kind(kernel: tuple[int, ...]) -> str:
    return "conv" if kernel else "linear"


def _chain(left: TensorRef, right: TensorRef, what: str) -> int:
    """The inner dimension of left (·, r) @ right (r, ·), or Unfit."""
    if left.shape[1] != right.shape[0]:
        raise Unfit(
            f"{what}: {left.key} {list(left.stored_shape)} and {right.key} {list(right.stored_shape)} "
            "do not chain"
        )
    return right.shape[0]


def _tucker(core: TensorRef, wa_rows: int, wb: TensorRef, what: str) -> tuple[int, tuple[int, ...]]:
    """(columns in·k…, kernel k…) of a Tucker factor with core (r, r, k…) and 2-mode factor wb (r, in)."""
    c = core.stored_shape
    if len(c) < 3 or c[1] != wb.shape[0] or c[0] != wa_rows:
        raise Unfit(f"{what}: the Tucker core {core.key} {list(c)} does not fit its factors")
    kernel = tuple(c[2:])
    return wb.shape[1] * math.prod(kernel), kernel


def _lora(p: Mapping[str, TensorRef]) -> Geometry:
    up, down = p["up"], p["down"]
    r = _chain(up, down, "LoRA")
    if "mid" in p:
        if any(d != 1 for d in _kernel(down)) or any(d != 1 for d in _kernel(up)):
            raise Unfit(
                f"LoCon with a Tucker core: {down.key} must be a 1×1 kernel, found {list(down.stored_shape)}"
            )
        n, kernel = _tucker(p["mid"], r, down, "LoCon")
        return Geometry((up.shape[0], n), r, "conv", kernel)
    kind = "embedding" if down.view == "transpose" else _kind(_kernel(down))
    return Geometry((up.shape[0], down.shape[1]), r, kind, _kernel(down))


def _loha(p: Mapping[str, TensorRef]) -> Geometry:
    if "hada_t1" in p:
        m, rank = p["hada_w1_a"].shape[1], p["hada_w1_b"].shape[0]
        shapes = []
        for i in (1, 2):
            wa, wb = p[f"hada_w{i}_a"], p[f"hada_w{i}_b"]
            if wa.shape[1] != m:
                raise Unfit(f"LoHa: {wa.key} {list(wa.stored_shape)} has another output size than hada_w1_a")
            shapes.append(_tucker(p[f"hada_t{i}"], wa.shape[0], wb, "LoHa"))
        if shapes[0] != shapes[1]:
            raise Unfit("LoHa: the two Tucker factors give different shapes")
        n, kernel = shapes[0]
        return Geometry((m, n), rank, "conv", kernel)
    r1 = _chain(p["hada_w1_a"], p["hada_w1_b"], "LoHa")
    _chain(p["hada_w2_a"], p["hada_w2_b"], "LoHa")
    shape = (p["hada_w1_a"].shape[0], p["hada_w1_b"].shape[1])
    if (p["hada_w2_a"].shape[0], p["hada_w2_b"].shape[1]) != shape:
        raise Unfit("LoHa: the two Hadamard factors give different shapes")
    kernel = _kernel(p["hada_w1_b"])
    return Geometry(shape, r1, _kind(kernel), kernel)


def _lokr(p: Mapping[str, TensorRef]) -> Geometry:
    rank = None
    if "lokr_w1" in p:
        a, c = p["lokr_w1"].shape
    else:
        rank = _chain(p["lokr_w1_a"], p["lokr_w1_b"], "LoKr W1")
        a, c = p["lokr_w1_a"].shape[0], p["lokr_w1_b"].shape[1]
    kernel: tuple[int, ...] = ()
    if "lokr_w2" in p:
        (b, d), kernel = p["lokr_w2"].shape, _kernel(p["lokr_w2"])
    elif "lokr_t2" in p:
        wa, wb = p["lokr_w2_a"], p["lokr_w2_b"]
        b = wa.shape[1]
        d, kernel = _tucker(p["lokr_t2"], wa.shape[0], wb, "LoKr W2")
        rank = rank or wb.shape[0]
    else:
        r2 = _chain(p["lokr_w2_a"], p["lokr_w2_b"], "LoKr W2")
        b, d, kernel = p["lokr_w2_a"].shape[0], p["lokr_w2_b"].shape[1], _kernel(p["lokr_w2_b"])
        rank = rank or r2
    return Geometry((a * b, c * d), rank, _kind(kernel), kernel)


def _full(p: Mapping[str, TensorRef]) -> Geometry:
    kernel = _kernel(p["diff"])
    return Geometry(tuple(p["diff"].shape), None, _kind(kernel), kernel)  # type: ignore[arg-type]


def _ia3(p: Mapping[str, TensorRef], axis: str) -> Geometry:
    stored = p["scale"].stored_shape
    c = math.prod(stored)
    conv = len(stored) > 2
    # 0: a dimension the vector does not give; the base weight supplies it (and the kernel of a conv layer)
    shape = (c, 0) if axis == "out" else (0, 0 if conv else c)
    return Geometry(shape, None, "conv" if conv else "linear")


GEOMETRY: dict[str, Callable[[Mapping[str, TensorRef]], Geometry]] = {
    "lora": _lora,
    "loha": _loha,
    "lokr": _lokr,
    "full": _full,
}


def dora_axis(magnitude: TensorRef, g: Geometry) -> tuple[str, Geometry]:
    """('out' | 'in', the geometry) of a DoRA magnitude from its stored shape, which declares the axis.

    (m,) and (m, 1[, 1, 1]) hold one value per output row; (1, c[, 1, 1]) one per input channel (LyCORIS
    ``wd_on_output=False``). A 3-D+ magnitude declares a conv layer.
    """
    s = tuple(magnitude.stored_shape)
    (m, n), kind = g.shape, g.kind
    if len(s) > 2 and kind == "linear":
        g = Geometry(g.shape, g.rank, "conv", g.kernel)
    if len(s) == 1 or (s[0] == m and all(d == 1 for d in s[1:])):
        if math.prod(s) != m:
            raise Unfit(f"DoRA: {magnitude.key} {list(s)} should hold one value per output row ({m})")
        return "out", g
    c = s[1]
    fits = s[0] == 1 and all(d == 1 for d in s[2:]) and c > 0 and n % c == 0
    per = n // c if fits else 0
    if fits and (
        g.kind != "conv" and per == 1 or g.kind == "conv" and (not g.kernel or per == math.prod(g.kernel))
    ):
        return "in", g
    raise Unfit(
        f"DoRA: {magnitude.key} {list(s)} fits neither one value per output row ({m}) nor one per input "
        f"channel of the ({m}, {n}) update"
    )


# Default scale (no α anywhere) by source: what the tool that reads the file does, said in the warning.
DEFAULT_REASONS = {
    "kohya": "no .alpha tensor: alpha = r, scale 1 (as sd-scripts, LyCORIS and ComfyUI load it)",
    "diffusers": "no alpha: scale 1 assumed (diffusers' default network_alpha = None)",
    "lora-ab": "no .alpha tensor and the file no ss_network_alpha or lora_adapter_metadata: scale 1 assumed "
    "(PEFT-named files without a config; ai-toolkit's DoRA applies B@A unscaled)",
    "cloneofsimo": "cloneofsimo LoRAs store no alpha: the scale is chosen at inference; scale 1 assumed",
}
LYCORIS_DEFAULT = (
    "LyCORIS module without an .alpha tensor: alpha = r, scale 1 (LyCORIS and ComfyUI read it so)"
)
METADATA_SOURCES = ("diffusers", "lora-ab")  # sources whose missing α falls back to ss_network_alpha


@dataclass
class Scale:
    """A module's (α, s) and, where α was not declared, the reason for the default."""

    alpha: float | None
    scale: float
    default_reason: str | None = None
    rank: int | None = None  # overrides the tensor rank where a declaration says so (PEFT rank_pattern)


def module_scale(
    family: str, g: Geometry, alpha: TensorRef | None, name: str, source: str, declared: DeclaredScales
) -> Scale:
    """The scale the tool that wrote the file applies (module docstring table and ``checkpoint.alphas``).

    Raises:
        LorascopeError: an α is not finite and positive, or two declarations of the same module disagree.
    """
    if g.rank is None:  # full, IA3, LoKr with both factors full: nothing to divide, s = 1
        return Scale(None, 1.0)
    header = declared.from_header(name) if family == "lora" and source in METADATA_SOURCES else None
    if alpha is not None:
        a = tensor_alpha(alpha, g.rank)
        if header is not None and not math.isclose(a / g.rank, header[2], rel_tol=1e-6):
            raise LorascopeError(
                f"{declared.path}: {alpha.key} gives scale {a / g.rank:g} but the lora_adapter_metadata "
                f"header gives {header[2]:g} for {name}; the file declares its scale twice, differently. "
                "Remove one of them."
            )
        return Scale(a, a / g.rank)
    if header is not None:
        r, a, s = header
        return Scale(a, s, rank=r)
    if family == "lora" and source in METADATA_SOURCES and declared.network_alpha is not None:
        return Scale(declared.network_alpha, declared.network_alpha / g.rank)
    reason = DEFAULT_REASONS.get(source, LYCORIS_DEFAULT) if family == "lora" else LYCORIS_DEFAULT
    return Scale(None, 1.0, reason)


VECTOR_PARTS = frozenset(
    {"magnitude", "scale"}
)  # parts that may be stored 1-D (a DoRA magnitude, an IA3 vector)


@dataclass
class Built:
    module: AdapterModule
    default_reason: str | None
    warning: str | None = None


def build_module(
    name: str,
    source: str,
    parts: dict[str, TensorRef],
    family: str,
    params: dict[str, str],
    declared: DeclaredScales,
) -> Built:
    """The ``AdapterModule`` of one claimed module (``parts``: the family's parts, and ``alpha`` if stored).

    Raises:
        Unfit: the parts do not fit together (the caller names the module and refuses the file).
        LorascopeError: a declared scale is unusable (``module_scale``).
    """
    parts = dict(parts)
    alpha = parts.pop("alpha", None)
    inner = params.get("inner", family)
    for part, ref in parts.items():
        if part not in VECTOR_PARTS and len(ref.stored_shape) < 2:
            raise Unfit(
                f"{ref.key} {list(ref.stored_shape)} should be a matrix (2 dims, or 4 for a conv layer)"
            )
        if 0 in ref.stored_shape:
            raise Unfit(f"{ref.key} {list(ref.stored_shape)} is empty (a dimension of 0: rank 0 or no layer)")
    if inner == "ia3":
        g = _ia3(parts, params["axis"])
    else:
        g = GEOMETRY[inner](parts)
    params = dict(params)
    if family == "dora":
        params["dora_axis"], g = dora_axis(parts["magnitude"], g)
    warning = None
    if alpha is not None and g.rank is None and inner != "lokr":  # LyCORIS stores α with full W1, W2 too
        warning = (
            f"{alpha.key}: a {inner} module has no rank to divide by; its alpha is not applied (as LyCORIS "
            "and ComfyUI do)"
        )
    s = module_scale(inner, g, alpha if g.rank is not None else None, name, source, declared)
    rank = s.rank if s.rank is not None else g.rank
    if s.rank is not None and s.rank != g.rank:  # refused by open_checkpoint, as for a PEFT folder
        params["config_rank"] = (
            f"{name}: the factors have rank {g.rank} but the lora_adapter_metadata header gives r={s.rank}"
        )
    module = AdapterModule(
        name, family, parts, g.shape, rank, s.alpha, s.scale, g.kind, source, kernel=g.kernel, params=params
    )
    return Built(module, s.default_reason, warning)
