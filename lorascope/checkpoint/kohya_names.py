"""kohya LoRA stems resolved to the module names the same model has in diffusers and transformers.

kohya's trainers name a module ``lora_<component>_<path with every '.' turned into '_'>``; the flattening
loses the component boundaries (``to_out_0`` is ``to_out.0``, ``linear_1`` is ``linear_1``). This module
restores them from a vocabulary of the module paths the libraries define, never by guessing:

- ``lora_unet_``: the SD 1.x/2.x and SDXL UNet in diffusers' names (``down_blocks_0_…``) or, for SDXL, in
  kohya's sgm/LDM names (``input_blocks_4_1_…``) -> ``unet.<diffusers path>``; FLUX.1 in BFL's names
  (``double_blocks_…``, ``single_blocks_…``) and SD3 in SAI's MMDiT names (``joint_blocks_…``) ->
  ``transformer.<diffusers path>`` where the module is one-to-one, else the BFL / SAI name;
- ``lora_transformer_``: the FLUX / SD3 transformer in diffusers' names -> ``transformer.<path>``;
- ``lora_te_``, ``lora_te1_``, ``lora_te2_``: CLIP (or LLM) text encoders -> ``text_encoder[_2].<path>``;
- ``lora_``: a transformers language model (``lora_model_layers_0_self_attn_q_proj``) -> ``<path>``.

A stem matches a vocabulary entry when its '_'-separated tokens split into that entry's components
(integers where the entry has an index). The stem is resolved when every parse under every entry of its
prefix gives the same name. Otherwise it keeps its flattened form with only the integer components dotted
(``unet_x.0.y``: the layer index is still found) and a warning: no parse (a module outside the vocabulary),
several different parses (ambiguous), or a prefix whose model part is ambiguous itself (``lora_te3_`` is
FLUX's ``text_encoder_2`` but SD3's ``text_encoder_3``).

BFL's fused projections have no one-to-one diffusers module: ``img_attn.qkv`` is diffusers' to_q, to_k and
to_v stacked, ``single_blocks.N.linear1`` is to_q, to_k, to_v and proj_mlp; diffusers' ``norm_out.linear`` is
``final_layer.adaLN_modulation.1`` with its shift and scale halves swapped (``swap_scale_shift``), and SD3's
context ``adaLN_modulation.1`` is swapped in the last block only. Those keep the BFL / SAI name
(``double_blocks.0.img_attn.qkv``), which is also what a BFL or SAI checkpoint calls them.

The vocabulary was written from diffusers' UNet2DConditionModel, FluxTransformer2DModel,
SD3Transformer2DModel and its ``lora_conversion_utils`` (``_convert_kohya_flux_lora_to_diffusers``,
``_maybe_map_sgm_blocks_to_diffusers``),
``single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers``,
and transformers' CLIP, Llama, Qwen2-MoE, Mixtral, GPT-2, GPT-NeoX and Falcon models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .kohya_grammar import Components, Entry, parses, path  # noqa: F401 - path: the names' public grammar
from .kohya_vocabulary import CLIP, FLUX_BFL, LLM, SD3_SAI, SGM, TRANSFORMER, UNET


@dataclass(frozen=True)
class Prefix:
    """A kohya prefix: the pipeline component its names go under (None: the model itself), its vocabulary,
    and the reason to keep the raw form where the component itself is ambiguous."""

    component: str | None
    entries: tuple[Entry, ...]
    ambiguous: str | None = None
    repeated: str | None = None  # a component name some converters repeat after the prefix ('unet_unet_…')


PREFIXES = {  # a stem is read under every prefix it starts with ('lora_te1_' and 'lora_')
    "lora_unet_": Prefix("unet", UNET + SGM + FLUX_BFL + SD3_SAI, repeated="unet"),
    "lora_transformer_": Prefix("transformer", TRANSFORMER),
    "lora_te1_": Prefix("text_encoder", CLIP + LLM),
    "lora_te2_": Prefix("text_encoder_2", CLIP + LLM),
    "lora_te3_": Prefix(
        None, (), ambiguous="lora_te3_ is FLUX's text_encoder_2 (T5) but SD3's text_encoder_3"
    ),
    "lora_te_": Prefix("text_encoder", CLIP + LLM),
    "lora_": Prefix(None, LLM),
}


@dataclass(frozen=True)
class Resolution:
    """A stem's name: resolved (``reason`` None) or kept in its flattened form (``reason`` says why)."""

    stem: str
    name: str
    reason: str | None = None


def raw_name(stem: str) -> str:
    """The flattened form with only the integer components dotted: 'lora_unet_x_0_y' -> 'unet_x.0.y'."""
    tokens = stem.removeprefix("lora_").split("_")
    out = tokens[0]
    for prev, tok in zip(tokens, tokens[1:]):
        out += ("." if tok.isdigit() or prev.isdigit() else "_") + tok
    return out


def _candidates(tokens: list[str], prefix: Prefix) -> set[str]:
    names = set()
    for entry in prefix.entries:
        for parse in parses(tokens, entry.parts):
            if entry.target is not None:
                name = entry.target(parse)
            else:
                dotted = ".".join(parse)
                name = dotted if prefix.component is None else f"{prefix.component}.{dotted}"
            if name is not None:
                names.add(name)
    return names


def resolve(stem: str) -> Resolution:
    """The diffusers / transformers module name of one kohya stem ('lora_unet_down_blocks_0_…').

    Returns:
        a ``Resolution``: the resolved name, or the raw form (``raw_name``) with the reason it was kept.
    """
    keys = [p for p in PREFIXES if stem.startswith(p)]  # 'lora_transformer_wte' is also 'lora_' + GPT-2's
    if not keys:
        return Resolution(stem, raw_name(stem), "not a kohya stem (no lora_ prefix)")
    names: set[str] = set()
    for key in keys:
        prefix = PREFIXES[key]
        tokens = stem[len(key) :].split("_")
        found = _candidates(tokens, prefix)
        if not found and prefix.repeated and tokens[0] == prefix.repeated:
            found = _candidates(tokens[1:], prefix)  # 'lora_unet_unet_…': diffusers' own 'unet.' flattened
        names |= found
    ambiguous = [PREFIXES[k].ambiguous for k in keys if PREFIXES[k].ambiguous]
    if ambiguous and not names:
        return Resolution(stem, raw_name(stem), ambiguous[0])
    if len(names) == 1:
        return Resolution(stem, names.pop())
    if names:
        readings = " or ".join(sorted(names))
        return Resolution(stem, raw_name(stem), f"ambiguous kohya name: it reads as {readings}")
    return Resolution(
        stem,
        raw_name(stem),
        "not in lorascope's vocabulary of diffusers / transformers "
        "module names; kept in kohya's flattened form",
    )


def kohya_warnings(stems: Iterable[str]) -> list[dict[str, str]]:
    """One warning per stem whose name was kept in its flattened form, with the reason."""
    out = []
    for stem in stems:
        r = resolve(stem)
        if r.reason is not None:
            out.append({"name": r.name, "reason": r.reason})
    return out


_STEM = re.compile(r"^(?P<stem>(?:lora|lycoris)_[^.]+?)(?:[._]lora_(?:down|up)\.weight|\..+)$")


def stem_of_key(key: str) -> str | None:
    """The kohya stem of a tensor key ('lora_unet_x.lora_down.weight', 'lora_unet_x_lora_up.weight',
    'lora_unet_x.hada_w1_a' -> 'lora_unet_x'), or None."""
    m = _STEM.match(key)
    return m["stem"] if m else None


# Where each kohya component lives in the checkpoints people pair a kohya file with: a diffusers component
# folder (no prefix), a diffusers pipeline state dict ('unet.', 'text_encoder.'), or an original single-file
# checkpoint (SD / SDXL 'model.diffusion_model.', 'cond_stage_model.transformer.',
# 'conditioner.embedders.N.…'; FLUX / SD3 saved by ComfyUI under 'model.diffusion_model.'). A base name pairs
# with a kohya stem only when removing one of its component's prefixes leaves exactly the stem's path
# (kohya's own tokens, or the resolved name's).
COMPONENT_PREFIXES: dict[str | None, tuple[str, ...]] = {
    "unet": ("", "unet.", "model.diffusion_model."),
    "transformer": ("", "transformer.", "model.diffusion_model."),
    "text_encoder": (
        "",
        "text_encoder.",
        "cond_stage_model.transformer.",
        "conditioner.embedders.0.transformer.",
    ),
    "text_encoder_2": ("", "text_encoder_2.", "conditioner.embedders.1.model."),
    None: ("",),
    "lycoris": ("",),
    "diffusion_model": ("", "model.diffusion_model."),
}
# LyCORIS's create_lycoris on any torch module names each wrapped layer 'lycoris_' + its path in that module
# with '.' flattened to '_' (lycoris.wrapper.LycorisNetwork.LORA_PREFIX): the base is the wrapped module
# itself.
LYCORIS_PREFIX = "lycoris_"


def component_of(stem: str) -> tuple[str | None, str] | None:
    """(component, the stem's path after its prefix, '_'-joined) of a kohya stem — the longest prefix of
    ``PREFIXES`` it starts with — or None for a stem with no known prefix or an ambiguous component."""
    if stem.startswith(LYCORIS_PREFIX):
        return "lycoris", stem[len(LYCORIS_PREFIX) :]
    keys = sorted((p for p in PREFIXES if stem.startswith(p)), key=len, reverse=True)
    if not keys or PREFIXES[keys[0]].ambiguous:
        return None
    prefix = PREFIXES[keys[0]]
    rest = stem[len(keys[0]) :]
    if prefix.repeated and rest.startswith(prefix.repeated + "_"):
        rest = rest[len(prefix.repeated) + 1 :]
    return prefix.component, rest
