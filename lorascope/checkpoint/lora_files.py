"""Single-file adapters of diffusion tools: kohya, diffusers, ai-toolkit, ComfyUI, LyCORIS, cloneofsimo.

One reader for every family: keys are split into module and part by the grammar (``checkpoint.parts``),
grouped by module, and the family registry claims each module from the set of parts it holds
(``delta.family.claim``: LoRA/LoCon, LoHa, LoKr, full, IA3, DoRA over any of the first three);
``checkpoint.families`` reads its geometry and scale. Names follow the module string's style:

- flattened (kohya, LyCORIS, ComfyUI, ai-toolkit): module strings ``lora_unet_…``, ``lora_te1_…``,
  ``lycoris_…``, ``lora_transformer_…``; name ``kohya_name`` (integer components dotted); source kohya.
- dotted (diffusers, ai-toolkit, ComfyUI): module strings ``unet.…``, ``transformer.…``, ``text_encoder.…``,
  ``diffusion_model.…``; name the path (old attention processors mapped); source lora-ab for lora_A/lora_B
  parts, else diffusers.
- cloneofsimo: module strings ``group:i``; name ``group.i``; source cloneofsimo.

Nothing is guessed: a tensor no family claims is a warning naming it, a file whose tensors no family claims is
refused, and every α must be finite and positive.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ..errors import LorascopeError, raise_collected
from ..names import strip_adapter_prefix
from .alphas import DeclaredScales
from .base import Adapter, AdapterModule, TensorRef
from .families import Unfit, build_module
from .kohya_names import kohya_warnings
from .kohya_names import resolve as resolve_kohya
from .parts import Found, Grouped, group_keys
from .tensor_store import TensorStore

FILE_FORMATS = ("kohya", "diffusers", "lora-ab", "cloneofsimo")  # what --format may force; sources of modules
DOWN_UP_LAYOUTS = FILE_FORMATS  # the name earlier releases exported
FLATTENED = re.compile(r"^(?:lora|lycoris)_[^.:]+$")  # kohya-style stems: the module path with '.' -> '_'


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


def module_identity(module: str, parts: dict[str, Found]) -> tuple[str, str]:
    """(name, source) of a module string, by its style (module docstring table)."""
    grammars = {f.part.grammar for f in parts.values()}
    if "cloneofsimo" in grammars:
        return cloneofsimo_name(module), "cloneofsimo"
    if FLATTENED.match(module):
        return kohya_name(module), "kohya"
    return diffusers_name(module), "lora-ab" if "lora-ab" in grammars else "diffusers"


# ---- claiming modules --------------------------------------------------------------------------------


def _refs(store: TensorStore, parts: dict[str, Found]) -> dict[str, TensorRef]:
    return {part: TensorRef(store, f.key, f.part.view) for part, f in parts.items()}


def _ia3_params(store: TensorStore, parts: dict[str, TensorRef]) -> dict[str, str]:
    """LyCORIS IA3: ``weight`` becomes the ``scale`` part; ``on_input`` (0 or 1) declares the axis."""
    flag = parts.pop("on_input")
    value = store.get_numpy(flag.key).reshape(-1)
    if value.size != 1 or float(value[0]) not in (0.0, 1.0):
        raise LorascopeError(
            f"{store.path}: {flag.key} must hold 0 or 1 (LyCORIS IA3's on_input flag), "
            f"found {value.tolist()[:4]}."
        )
    parts["scale"] = parts.pop("weight")
    return {"axis": "in" if float(value[0]) == 1.0 else "out", "stored": "increment"}


def _unclaimed_reason(parts: set[str]) -> str:
    if len(parts & {"up", "down"}) == 1 and parts <= {"up", "down", "mid", "magnitude", "alpha"}:
        present, missing = ("up", "down") if "up" in parts else ("down", "up")
        return f"only the {present} factor is present (no {missing})"
    if parts == {"weight"}:
        return "a full weight without LyCORIS IA3's on_input flag (a base weight or modules_to_save?)"
    return f"no update family has exactly the parts {sorted(parts)}"


class _Reading:
    """The state of one file being read: modules, vectors, warnings and problems."""

    def __init__(self, path: Path, store: TensorStore, fmt: str | None):
        self.path, self.store, self.fmt = path, store, fmt
        self.declared = DeclaredScales(store)
        self.modules: list[AdapterModule] = []
        self.vectors: dict[str, TensorRef] = {}
        self.warnings: list[dict[str, str]] = []
        self.problems: list[str] = []
        self.unclaimed: list[str] = []
        self.defaults: Counter[str] = Counter()

    def read_module(self, module: str, found: dict[str, Found]) -> None:
        from ..delta.family import claim  # delta imports checkpoint: resolved when a file is read

        name, source = module_identity(module, found)
        if self.fmt is not None and source != self.fmt:
            for f in found.values():
                self.warnings.append({"name": f.key, "reason": f"not a {self.fmt} adapter tensor; skipped"})
            return
        refs = _refs(self.store, found)
        params: dict[str, str] = {}
        if {"weight", "on_input"} <= set(refs):
            params = _ia3_params(self.store, refs)
        claimed = claim(set(refs) - {"alpha"})
        if claimed is None:
            reason = _unclaimed_reason(set(refs))
            self.unclaimed.append(f"{module}: {reason}")
            for f in found.values():
                self.warnings.append(
                    {"name": f.key, "reason": f"{reason}; no update family claims it, skipped"}
                )
            return
        family, claim_params = claimed
        try:
            built = build_module(name, source, refs, family, {**params, **claim_params}, self.declared)
        except Unfit as exc:
            self.problems.append(f"{module}: {exc}")
            return
        self.modules.append(built.module)
        if built.default_reason:
            self.defaults[built.default_reason] += 1
        if built.warning:
            self.warnings.append({"name": name, "reason": built.warning})

    def read_vector(self, f: Found) -> None:
        name, source = module_identity(f.module, {"": f})
        suffix = f.key[len(f.module) :]  # '.diff_b', '.lora_B.bias', …: plan.UPDATE_VECTORS recognizes them
        if self.fmt is None or source == self.fmt:
            self.vectors[name + re.sub(r"^(\.lora_B)\.[^.]+(\.bias)$", r"\1\2", suffix)] = TensorRef(
                self.store, f.key
            )


def _refusal(path: Path, store: TensorStore, grouped: Grouped, reading: _Reading) -> LorascopeError:
    found = []
    if grouped.unsupported:
        found.append(
            "; ".join(
                f"{kind}: {len(keys)} tensors such as {keys[0]}" for kind, keys in grouped.unsupported.items()
            )
        )
    if reading.unclaimed:
        found.append("modules whose parts no update family claims, e.g. " + "; ".join(reading.unclaimed[:3]))
    if not found:
        found.append(f"tensors such as {', '.join(store.keys()[:4])}")
    return LorascopeError(
        f"{path}: no adapter module lorascope can read. It holds {' — '.join(found)}. lorascope reads LoRA "
        "(lora_down/lora_up, lora_A/lora_B, .lora.down/.up, :down/:up; LoCon's lora_mid), "
        "LoHa (hada_w1_a … hada_w2_b), LoKr (lokr_w1 … lokr_w2_b), LyCORIS full (diff), IA3 (weight + "
        "on_input) and DoRA (dora_scale, magnitude); for another algorithm merge the file into its base "
        "model with the tool that made it and compare base and "
        "merged checkpoints with `lorascope spectrum BASE MERGED`."
    )


# Parts that only adapters store: a module holding one is an adapter module even when incomplete (then refused
# with the reason), while '.alpha', '.diff', '.magnitude' or '.weight' alone may be a dense model's own
# tensors.
FACTOR = re.compile(r"^(?:up|down|mid|hada_\w+|lokr_\w+)$")


def detect_format(keys: list[str]) -> str | None:
    """The source most adapter modules in ``keys`` have ('kohya', 'diffusers', 'lora-ab', 'cloneofsimo'), or
    None (names only; nothing is read).

    A module holding an adapter factor (up, down, hada_*, lokr_*) makes the file an adapter, complete or not.
    Modules claimed without one (LyCORIS full's ``.diff``, IA3's ``.weight`` + ``.on_input``) do so only when
    they are not outnumbered by plain ``.weight`` tensors: a model checkpoint with a stray ``.diff`` stays a
    model.
    """
    from ..delta.family import claim

    grouped = group_keys(keys)
    strong: Counter[str] = Counter()
    weak: Counter[str] = Counter()
    plain = 0
    for module, found in grouped.modules.items():
        parts = set(found) - {"alpha"}
        if {"weight", "on_input"} <= parts:
            parts = parts - {"weight", "on_input"} | {"scale"}
        source = module_identity(module, found)[1]
        if any(FACTOR.match(p) for p in parts):
            strong[source] += 1
        elif claim(parts) is not None:
            weak[source] += 1
        elif parts == {"weight"}:
            plain += 1
    sources = strong or (weak if weak.total() >= plain else Counter())
    return sources.most_common(1)[0][0] if sources else None


def refuse_unsupported(path: Path, keys: list[str]) -> None:
    """Refuse a file holding only LyCORIS algorithms lorascope does not read (OFT, BOFT, GLoRA, T-LoRA)."""
    grouped = group_keys(keys)
    if grouped.unsupported and detect_format(keys) is None:
        kinds = "; ".join(f"{k}: {len(v)} tensors such as {v[0]}" for k, v in grouped.unsupported.items())
        raise LorascopeError(
            f"{path} holds {kinds}. lorascope does not compute these updates; merge the file into its base "
            "model with the tool that made it and compare base and merged checkpoints with "
            "`lorascope spectrum BASE MERGED`."
        )


def open_lora_file(path: Path, store: TensorStore, fmt: str | None = None) -> Adapter:
    """Open a single-file adapter of any family; ``fmt`` keeps only the modules of that source (and may
    return an adapter without modules, for the caller to say that the file is not what was asked for).

    Raises:
        LorascopeError: no module is claimed by a family (``fmt`` not given), parts of a module do not
            fit together, a module holds one part twice (more than one adapter in the file), or a declared
            scale is unusable.
    """
    grouped = group_keys(store.keys())
    raise_collected(
        grouped.duplicates,
        f"{path} names some module parts twice (more than one adapter in one file? "
        "save each adapter separately):",
    )
    reading = _Reading(path, store, fmt)
    for module, found in sorted(grouped.modules.items()):
        reading.read_module(module, found)
    raise_collected(
        reading.problems, f"{path}: {len(reading.problems)} module(s) whose parts do not fit together:"
    )
    if not reading.modules and fmt is None:  # a forced format's caller says what was asked for
        raise _refusal(path, store, grouped, reading)
    for f in grouped.vectors:
        reading.read_vector(f)
    _check_names(path, reading.modules)
    warnings = reading.warnings
    for reason, count in reading.defaults.items():
        warnings.append({"name": "*", "reason": f"{count} of {len(reading.modules)} modules: {reason}"})
    for kind, keys in grouped.unsupported.items():
        warnings += [
            {"name": k, "reason": f"{kind}: lorascope does not compute this update; skipped"} for k in keys
        ]
    warnings += [
        {"name": k, "reason": "not an adapter tensor in any format lorascope reads; skipped"}
        for k in grouped.unknown
    ]
    warnings += kohya_warnings(sorted(m for m in grouped.modules if FLATTENED.match(m)))
    sources = Counter(m.source for m in reading.modules)
    fmt = fmt or sources.most_common(1)[0][0]
    if fmt == "cloneofsimo":
        warnings += _check_metadata_ranks(store, reading.modules)
    return Adapter(path, fmt, store, reading.modules, {}, reading.vectors, dict(store.metadata), warnings)


def _check_names(path: Path, modules: list[AdapterModule]) -> None:
    seen: dict[str, AdapterModule] = {}
    problems = []
    for m in modules:
        if m.name in seen:
            keys = sorted({r.key for r in seen[m.name].parts.values()} | {r.key for r in m.parts.values()})
            problems.append(f"{m.name}: from {', '.join(keys[:4])}")
        seen[m.name] = m
    raise_collected(problems, f"{path} holds two updates for the same module (two layouts mixed?):")


def _check_metadata_ranks(store: TensorStore, modules: list[AdapterModule]) -> list[dict[str, str]]:
    out = []
    for m in modules:
        declared = store.metadata.get(m.name.replace(".", ":") + ":rank")
        if declared is not None and declared.isdigit() and int(declared) != m.tensor_rank:
            out.append(
                {
                    "name": m.name,
                    "reason": f"metadata says rank {declared}, tensors have rank {m.tensor_rank}",
                }
            )
    return out
