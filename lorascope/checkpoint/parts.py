"""The key grammar of single-file adapters: which part of which module a tensor is, from its name alone.

A key is ``<module><tail>``; the tail names the part. One table (``PARTS``) holds every tail the diffusion
tools write, the canonical part it stands for (the names ``lorascope.delta`` families list in their
layouts), the grammar it belongs to and how the tensor is arranged:

- kohya: ``.lora_up.weight`` / ``.lora_down.weight`` (also ``_lora_up``), ``.lora_mid.weight``. Written by
  sd-scripts, LyCORIS LoCon, ComfyUI.
- diffusers: ``.lora.up.weight``, ``_lora.up.weight`` (attention processors),
  ``.lora_linear_layer.up.weight``. Written by diffusers.
- lora-ab: ``.lora_A[.name][.weight]`` / ``.lora_B…``, ``.lora_embedding_A/B``, ``.lora_B.bias``,
  ``.lora_magnitude_vector``. Written by PEFT names without a config: ai-toolkit, newer diffusers, ComfyUI.
- lycoris: ``.hada_w1_a`` … ``.hada_t2``, ``.lokr_w1`` … ``.lokr_t2``, ``.diff`` / ``.diff_b``, ``.weight`` +
  ``.on_input`` (IA3), ``.dora_scale``, ``.w_norm`` / ``.b_norm``. Written by LyCORIS (``weight_list`` of each
  module).
- ai-toolkit: ``.magnitude`` (DoRA). Written by ai-toolkit ``DoRAModule``.
- any: ``.alpha``. Written by kohya, LyCORIS, ai-toolkit LoKr.
- cloneofsimo: ``:down`` / ``:up`` (module ``group:i``). Written by cloneofsimo/lora.

The first matching row wins, so the catch-all IA3 ``.weight`` comes last: a ``<module>.weight`` is IA3's
vector only beside an ``.on_input`` of the same module (the reader checks), else no family claims it.
LyCORIS algorithms lorascope does not read (OFT, BOFT, GLoRA, T-LoRA) are named by ``UNSUPPORTED``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

_ADAPTER = r"(?:\.(?!(?:weight|bias)$)[^.]+)?"  # PEFT's optional adapter name: lora_A.default.weight


@dataclass(frozen=True)
class Part:
    """One tail of the grammar: the canonical part, its grammar and the ``TensorRef`` view it is read with.

    ``part`` is a family part (up, down, mid, magnitude, hada_*, lokr_*, diff), or a reader-level name:
    ``alpha`` (the scale), ``on_input`` and ``weight`` (LyCORIS IA3), ``vector`` (a 1-D update kept beside
    the modules: a lora_B bias, diff_b, a norm diff).
    """

    tail: str
    part: str
    grammar: str
    view: str = "flatten"


PARTS: tuple[Part, ...] = (
    Part(r"[._]lora_up\.weight", "up", "kohya"),
    Part(r"[._]lora_down\.weight", "down", "kohya"),
    Part(r"\.lora_mid\.weight", "mid", "kohya", "as_is"),
    Part(r"(?:\.lora|_lora|\.lora_linear_layer)\.up\.weight", "up", "diffusers"),
    Part(r"(?:\.lora|_lora|\.lora_linear_layer)\.down\.weight", "down", "diffusers"),
    Part(rf"\.lora_B{_ADAPTER}\.bias", "vector", "lora-ab", "as_is"),
    Part(rf"\.lora_B{_ADAPTER}(?:\.weight)?", "up", "lora-ab"),
    Part(rf"\.lora_A{_ADAPTER}(?:\.weight)?", "down", "lora-ab"),
    Part(
        rf"\.lora_embedding_A{_ADAPTER}", "up", "lora-ab", "transpose"
    ),  # ΔW (num, dim) = (B @ A)ᵀ = Aᵀ @ Bᵀ
    Part(rf"\.lora_embedding_B{_ADAPTER}", "down", "lora-ab", "transpose"),
    Part(rf"\.lora_magnitude_vector{_ADAPTER}(?:\.weight)?", "magnitude", "lora-ab", "as_is"),
    Part(r"\.magnitude", "magnitude", "ai-toolkit", "as_is"),
    Part(r"\.dora_scale", "magnitude", "lycoris", "as_is"),
    Part(r"\.alpha", "alpha", "any", "as_is"),
    *(Part(rf"\.hada_w{i}_{ab}", f"hada_w{i}_{ab}", "lycoris") for i in (1, 2) for ab in "ab"),
    *(Part(rf"\.hada_t{i}", f"hada_t{i}", "lycoris", "as_is") for i in (1, 2)),
    *(Part(rf"\.lokr_w{i}{ab}", f"lokr_w{i}{ab}", "lycoris") for i in (1, 2) for ab in ("", "_a", "_b")),
    Part(r"\.lokr_t2", "lokr_t2", "lycoris", "as_is"),
    Part(r"\.diff", "diff", "lycoris"),
    Part(r"\.(?:diff_b|w_norm|b_norm)", "vector", "lycoris", "as_is"),
    Part(r"\.on_input", "on_input", "lycoris", "as_is"),
    Part(r":down", "down", "cloneofsimo"),
    Part(r":up", "up", "cloneofsimo"),
    Part(r"\.weight", "weight", "lycoris", "as_is"),  # IA3's vector, only beside .on_input; must stay last
)

_COMPILED = tuple((re.compile(rf"^(?P<module>.+?){p.tail}$"), p) for p in PARTS)

# LyCORIS algorithms whose update lorascope does not compute: named in warnings and refusals, never guessed.
UNSUPPORTED = {
    "LyCORIS OFT / BOFT (orthogonal blocks)": re.compile(r"[._](?:oft_blocks|oft_diag|boft_\w+)$"),
    "LyCORIS GLoRA (a1, a2, b1, b2)": re.compile(r"\.(?:a1|a2|b1|b2|bm)\.weight$"),
    "LyCORIS T-LoRA (q_layer, p_layer, lambda_layer)": re.compile(
        r"\.(?:q_layer\.weight|p_layer\.weight|lambda_layer)$"
    ),
}


@dataclass(frozen=True)
class Found:
    """One key read by the grammar: its module string (as written), canonical part and grammar row."""

    key: str
    module: str
    part: Part


def split_key(key: str) -> Found | None:
    """The module and part a key names (the first row of ``PARTS`` that matches), or None."""
    for pattern, part in _COMPILED:
        m = pattern.match(key)
        if m:
            return Found(key, m["module"], part)
    return None


def unsupported_kind(key: str) -> str | None:
    """The LyCORIS algorithm lorascope does not read that this key belongs to, or None."""
    return next((kind for kind, pat in UNSUPPORTED.items() if pat.search(key)), None)


@dataclass
class Grouped:
    """A file's keys by module (module string -> part -> Found), 1-D updates, and the keys nothing names."""

    modules: dict[str, dict[str, Found]]
    vectors: list[Found]
    unsupported: dict[str, list[str]]  # kind -> keys
    unknown: list[str]
    duplicates: list[str]  # 'module: part' named by two keys


def group_keys(keys: Iterable[str]) -> Grouped:
    """Group keys by module and canonical part. Reads names only."""
    modules: dict[str, dict[str, Found]] = defaultdict(dict)
    vectors: list[Found] = []
    unsupported: dict[str, list[str]] = defaultdict(list)
    unknown: list[str] = []
    duplicates: list[str] = []
    for key in keys:
        kind = unsupported_kind(key)
        if kind is not None:
            unsupported[kind].append(key)
            continue
        found = split_key(key)
        if found is None:
            unknown.append(key)
        elif found.part.part == "vector":
            vectors.append(found)
        elif found.part.part in modules[found.module]:
            duplicates.append(
                f"{found.module}: {found.part.part} in {modules[found.module][found.part.part].key} and {key}"
            )
        else:
            modules[found.module][found.part.part] = found
    return Grouped(dict(modules), vectors, dict(unsupported), unknown, duplicates)
