"""Readers of the PEFT types that multiply the base weight: IA3 (a scaling vector), OFT and BOFT (rotations).

Their ΔW needs the base weight (``lorascope.delta.scaled``, ``lorascope.delta.orthogonal``); what each config
declares (feedforward modules, Cayley–Neumann options, block sizes) is read as the installed PEFT (0.21) reads
it, and every count is checked finite and positive.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef
from .peft_config import CONFIG, positive
from .peft_keys import Leftovers, finish, group_parts, part_pattern, peft_type
from .tensor_store import TensorStore


# ---- IA3 ------------------------------------------------------------------------------------------------


def is_feedforward(cfg: dict[str, Any], name: str) -> bool:
    """PEFT ``IA3Model._check_target_module_feedforward``: a regex full match, or a plain name suffix."""
    ff = cfg.get("feedforward_modules") or []
    if isinstance(ff, str):
        return re.fullmatch(ff, name) is not None
    return any(name.endswith(str(t)) for t in ff)


@peft_type("IA3", ("ia3_l",))
def open_ia3(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT IA3 folder: W' = l ⊙ W0, l scaling output rows, or input columns in feedforward modules.

    The axis comes from the config's ``feedforward_modules``; the stored shape must agree ((1, in) for a
    feedforward linear layer, (out, 1) otherwise; a conv's (1, C, 1, 1) fits either).
    """
    leftovers = Leftovers(store, "IA3")
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    modules, problems = [], []
    for name, keys in sorted(group_parts(store, part_pattern(("ia3_l",)), leftovers).items()):
        ref = TensorRef(store, keys["ia3_l"])
        shape = ref.stored_shape
        ff = is_feedforward(cfg, name)
        size = math.prod(shape)
        if len(shape) == 2 and ((ff and shape[0] != 1) or (not ff and shape[1] != 1)):
            problems.append(
                f"{name}: ia3_l is stored {list(shape)}, but the config "
                f"{'lists' if ff else 'does not list'} it among feedforward_modules, which means "
                f"{'(1, in)' if ff else '(out, 1)'}"
            )
            continue
        kind = "conv" if len(shape) > 2 else "linear"
        params = {"axis": "in" if ff else "out", "stored": "multiplier"}
        # ΔW has the base weight's shape; l gives one side, the base the other (delta.scaled fit_base)
        shape = (0, size) if ff else (size, 0)
        modules.append(
            AdapterModule(
                name,
                "ia3",
                {"scale": ref},
                shape,
                None,
                None,
                1.0,
                kind,
                "peft",
                fan_in_fan_out,
                params=params,
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, [], "IA3")


# ---- OFT and BOFT ---------------------------------------------------------------------------------------


def _block_size(n_elements: int) -> int | None:
    """b with b(b−1)/2 = n_elements (the strictly upper-triangular entries of a b×b block), or None."""
    b = int(round((1 + math.sqrt(1 + 8 * n_elements)) / 2))
    return b if b * (b - 1) // 2 == n_elements else None


def _version(text: Any) -> tuple[int, ...]:
    """(major, minor, …) of a version string; (0,) when absent (PEFT added peft_version in 0.18)."""
    return tuple(int(x) for x in re.findall(r"\d+", str(text or "0").partition("@")[0])[:3]) or (0,)


def _oft_options(cfg: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The Cayley options PEFT's OFT layers apply, checked; warnings where PEFT would apply other ones."""
    if "oft_block_size" not in cfg:
        raise LorascopeError(
            f"{path / CONFIG} has no 'oft_block_size': an OFT adapter saved by PEFT < 0.14, whose "
            "parametrization (oft_r, oft_s) the installed PEFT no longer loads and lorascope does not read. "
            "Merge it with the PEFT version that wrote it and compare base and merged checkpoints instead."
        )
    warnings = []
    neumann = cfg.get("use_cayley_neumann", True)
    if "use_cayley_neumann" not in cfg:
        warnings.append(
            {
                "name": "*",
                "reason": "the OFT config has no use_cayley_neumann: PEFT applies its "
                "default, the Cayley–Neumann series (5 terms), which older PEFT did not use",
            }
        )
    elif neumann and _version(cfg.get("peft_version")) < (0, 18):
        warnings.append(
            {
                "name": "*",
                "reason": "Cayley–Neumann OFT saved before PEFT 0.18, whose series "
                "differed; ΔW is the one the installed PEFT applies",
            }
        )
    terms = positive(cfg, "num_cayley_neumann_terms", path, integer=True, default=5) if neumann else 0
    eps = positive(cfg, "eps", path, default=6e-5) if cfg.get("coft") else 0.0
    options = {
        "coft": bool(cfg.get("coft")),
        "eps": eps,
        "block_share": bool(cfg.get("block_share")),
        "cayley_neumann": bool(neumann),
        "neumann_terms": terms,
    }
    return options, warnings


@peft_type("OFT", ("oft_R", "oft_embedding_R"), lambda cfg, path: _oft_options(cfg, path))
def open_oft(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT OFT folder (PEFT ≥ 0.14): block-diagonal Cayley rotations of the base weight's input side."""
    options, warnings = _oft_options(cfg, path)
    if any(".oft_r" in k or ".oft_s" in k for k in store.keys()):
        raise LorascopeError(
            f"{store.path} holds oft_r / oft_s tensors of the OFT of PEFT < 0.14, which the "
            "installed PEFT refuses to load and lorascope does not read."
        )
    leftovers = Leftovers(store, "OFT")
    modules, problems = [], []
    grouped = group_parts(store, part_pattern(("oft_R", "oft_embedding_R")), leftovers)
    for name, keys in sorted(grouped.items()):
        ((part, key),) = keys.items()
        ref = TensorRef(store, key)
        if len(ref.shape) != 2 or (b := _block_size(ref.shape[1])) is None or b < 2:
            problems.append(
                f"{name}: {part} is {list(ref.shape)}, not (blocks, b(b−1)/2) for a block size b ≥ 2"
            )
            continue
        if options["block_share"] != (ref.shape[0] == 1) and options["block_share"]:
            problems.append(f"{name}: block_share is set but {part} holds {ref.shape[0]} blocks")
            continue
        embedding = part == "oft_embedding_R"
        params = {**options, "block_size": b, "rotate": "embedding" if embedding else "input"}
        cols = 0 if options["block_share"] else ref.shape[0] * b  # shared: the base gives the width
        blocks = None if options["block_share"] else ref.shape[0]  # PEFT's OFT r: the number of blocks
        modules.append(
            AdapterModule(
                name,
                "oft",
                {"oft_R": ref},
                (0, cols),
                blocks,
                None,
                1.0,
                "embedding" if embedding else "matrix",
                "peft",
                params=params,
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, warnings, "OFT")


@peft_type("BOFT", ("boft_R", "boft_s"))
def open_boft(path: Path, store: TensorStore, cfg: dict[str, Any]) -> Adapter:
    """A PEFT BOFT folder: butterfly products of block Cayley rotations, and a scale per output row."""
    leftovers = Leftovers(store, "BOFT")
    modules, problems = [], []
    for name, keys in sorted(group_parts(store, part_pattern(("boft_R", "boft_s")), leftovers).items()):
        if set(keys) != {"boft_R", "boft_s"}:
            problems.append(f"{name}: has {', '.join(sorted(keys))}, not both boft_R and boft_s")
            continue
        rot, s = TensorRef(store, keys["boft_R"]), TensorRef(store, keys["boft_s"])
        shape = rot.shape
        butterfly = shape[0] == 1 or (shape[1] % 2 ** (shape[0] - 1) == 0 and shape[2] % 2 == 0)
        if len(shape) != 4 or shape[2] != shape[3] or not butterfly:
            problems.append(f"{name}: boft_R is {list(shape)}, not (factors, blocks, b, b) of a butterfly")
            continue
        params = {"factors": shape[0], "blocks": shape[1], "block_size": shape[2]}
        size = (math.prod(s.shape), shape[1] * shape[2])
        modules.append(
            AdapterModule(
                name,
                "boft",
                {"boft_R": rot, "boft_s": s},
                size,
                shape[1],
                None,
                1.0,
                "matrix",
                "peft",
                params=params,
            )
        )
    return finish(path, "peft", store, cfg, modules, leftovers, problems, [], "BOFT")
