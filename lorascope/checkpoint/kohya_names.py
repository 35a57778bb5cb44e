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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

Components = tuple[str, ...]
Target = Callable[[Components], "str | None"]


@dataclass(frozen=True)
class Entry:
    """One module path of the vocabulary: its components (alternatives, or None for an integer index) and
    how a parse becomes the resolved name (None: the parse itself, dotted, after the family's prefix)."""

    parts: tuple[tuple[str, ...] | None, ...]
    target: Target | None = None


def path(spec: str, target: Target | str | None = None) -> Entry:
    """'down_blocks.{i}.(attn1|attn2).to_q' -> an Entry; a str target is formatted with the parse's
    integers ({0}, {1}, …)."""
    parts = tuple(None if c == "{i}" else tuple(c.strip("()").split("|")) for c in spec.split("."))
    return Entry(parts, _formatter(target) if isinstance(target, str) else target)


def _formatter(fmt: str) -> Target:
    return lambda parse: fmt.format(*[c for c in parse if c.isdigit()])


def keep(parse: Components) -> str:
    """The parse itself, dotted, without a pipeline component: BFL / SAI module names."""
    return ".".join(parse)


def parses(tokens: list[str], parts: tuple[tuple[str, ...] | None, ...]) -> Iterator[Components]:
    """Every way the tokens split into the entry's components, in order, using all tokens."""
    if not parts:
        if not tokens:
            yield ()
        return
    head, rest = parts[0], parts[1:]
    if head is None:
        if tokens and tokens[0].isdigit():
            for tail in parses(tokens[1:], rest):
                yield (tokens[0], *tail)
        return
    for alternative in head:
        words = alternative.split("_")
        if tokens[: len(words)] == words:
            for tail in parses(tokens[len(words):], rest):
                yield (alternative, *tail)


# ---- the vocabulary -------------------------------------------------------------------------------------

# diffusers Transformer2DModel inside a UNet block (SD 1.x/2.x/SDXL), relative to '…attentions.N.'
SPATIAL = ("(proj_in|proj_out)", "transformer_blocks.{i}.(attn1|attn2).(to_q|to_k|to_v)",
           "transformer_blocks.{i}.(attn1|attn2).to_out.{i}", "transformer_blocks.{i}.ff.net.{i}.proj",
           "transformer_blocks.{i}.ff.net.{i}")
RESNET = "resnets.{i}.(conv1|conv2|conv_shortcut|time_emb_proj)"

UNET = tuple(path(p) for p in (
    *(f"(down_blocks|up_blocks).{{i}}.attentions.{{i}}.{s}" for s in SPATIAL),
    *(f"mid_block.attentions.{{i}}.{s}" for s in SPATIAL),
    f"(down_blocks|up_blocks).{{i}}.{RESNET}", f"mid_block.{RESNET}",
    "down_blocks.{i}.downsamplers.{i}.conv", "up_blocks.{i}.upsamplers.{i}.conv",
    "(conv_in|conv_out)", "(time_embedding|add_embedding).(linear_1|linear_2)",
))

# kohya's SDXL UNet (sgm/LDM names) -> diffusers; layers_per_block = 2 as in SD 1.x, 2.x and SDXL
SGM_RESNET = {"in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.3": "conv2",
              "skip_connection": "conv_shortcut"}
SGM_MID = {0: ("resnets", 0), 1: ("attentions", 0), 2: ("resnets", 1)}
SGM_PLAIN = {("time_embed", "0"): "time_embedding.linear_1", ("time_embed", "2"): "time_embedding.linear_2",
             ("label_emb", "0", "0"): "add_embedding.linear_1",
             ("label_emb", "0", "2"): "add_embedding.linear_2",
             ("input_blocks", "0", "0"): "conv_in", ("out", "2"): "conv_out"}


def _sgm_inner(prefix: str, kind_index: int, slot: int, rest: Components) -> str | None:
    """A resnet (inner index 0) or spatial transformer (1) inside sgm block ``prefix``."""
    if kind_index == 0:
        part = SGM_RESNET.get(".".join(rest))
        return None if part is None else f"{prefix}.resnets.{slot}.{part}"
    if kind_index == 1 and rest and rest[0] in ("proj_in", "proj_out", "transformer_blocks"):
        return f"{prefix}.attentions.{slot}.{'.'.join(rest)}"
    return None


def sgm_to_diffusers(parse: Components) -> str | None:
    """diffusers' name of an sgm UNet module (diffusers' ``_maybe_map_sgm_blocks_to_diffusers`` and
    ``_convert_unet_lora_key``): input block n ≥ 1 is down block (n−1)//3, slot (n−1)%3, slot 2 being
    the downsampler; output block n is up block n//3, slot n%3, a bare 'conv' being its upsampler;
    middle 0, 1, 2 are resnet 0, attention 0, resnet 1; inner index 0 is the resnet, 1 the attention.
    None where the parse names no LoRA-able module (norms, activations)."""
    if parse in SGM_PLAIN:
        return "unet." + SGM_PLAIN[parse]
    head, rest = parse[0], parse[1:]
    if head == "middle_block":
        if int(rest[0]) not in SGM_MID:
            return None
        kind, slot = SGM_MID[int(rest[0])]
        name = _sgm_inner("mid_block", 0 if kind == "resnets" else 1, slot, rest[1:])
    elif head == "input_blocks" and int(rest[0]) > 0:
        n, k, inner = int(rest[0]), int(rest[1]), rest[2:]
        block, slot = divmod(n - 1, 3)
        if slot == 2:
            return f"unet.down_blocks.{block}.downsamplers.0.conv" if (k, inner) == (0, ("op",)) else None
        name = _sgm_inner(f"down_blocks.{block}", k, slot, inner)
    elif head == "output_blocks":
        n, k, inner = int(rest[0]), int(rest[1]), rest[2:]
        block, slot = divmod(n, 3)
        if inner == ("conv",) and k in (1, 2):
            return f"unet.up_blocks.{block}.upsamplers.0.conv"
        name = _sgm_inner(f"up_blocks.{block}", k, slot, inner)
    else:
        return None
    return None if name is None else "unet." + name


SGM = tuple(path(p, sgm_to_diffusers) for p in (
    *(f"(input_blocks|output_blocks).{{i}}.{{i}}.{s}" for s in SPATIAL),
    *(f"middle_block.{{i}}.{s}" for s in SPATIAL),
    "(input_blocks|output_blocks).{i}.{i}.(in_layers|emb_layers|out_layers).{i}",
    "(input_blocks|output_blocks).{i}.{i}.skip_connection",
    "middle_block.{i}.(in_layers|emb_layers|out_layers).{i}", "middle_block.{i}.skip_connection",
    "input_blocks.{i}.{i}.op", "output_blocks.{i}.{i}.conv", "input_blocks.{i}.{i}",
    "time_embed.{i}", "label_emb.{i}.{i}", "out.{i}",
))

# FLUX.1, BFL's names (kohya lora_unet_ for FLUX) -> diffusers FluxTransformer2DModel where one-to-one
DOUBLE = "transformer.transformer_blocks.{0}."
SINGLE = "transformer.single_transformer_blocks.{0}."
FLUX_BFL = tuple(path(p, t) for p, t in (
    ("double_blocks.{i}.img_attn.proj", DOUBLE + "attn.to_out.0"),
    ("double_blocks.{i}.txt_attn.proj", DOUBLE + "attn.to_add_out"),
    ("double_blocks.{i}.img_mlp.0", DOUBLE + "ff.net.0.proj"),
    ("double_blocks.{i}.img_mlp.2", DOUBLE + "ff.net.2"),
    ("double_blocks.{i}.txt_mlp.0", DOUBLE + "ff_context.net.0.proj"),
    ("double_blocks.{i}.txt_mlp.2", DOUBLE + "ff_context.net.2"),
    ("double_blocks.{i}.img_mod.lin", DOUBLE + "norm1.linear"),
    ("double_blocks.{i}.txt_mod.lin", DOUBLE + "norm1_context.linear"),
    ("double_blocks.{i}.(img_attn|txt_attn).qkv", keep),  # fused q, k, v
    ("single_blocks.{i}.linear1", keep),  # fused q, k, v and the MLP's input
    ("single_blocks.{i}.linear2", SINGLE + "proj_out"),
    ("single_blocks.{i}.modulation.lin", SINGLE + "norm.linear"),
    ("img_in", "transformer.x_embedder"),
    ("txt_in", "transformer.context_embedder"),
    ("time_in.in_layer", "transformer.time_text_embed.timestep_embedder.linear_1"),
    ("time_in.out_layer", "transformer.time_text_embed.timestep_embedder.linear_2"),
    ("vector_in.in_layer", "transformer.time_text_embed.text_embedder.linear_1"),
    ("vector_in.out_layer", "transformer.time_text_embed.text_embedder.linear_2"),
    ("guidance_in.in_layer", "transformer.time_text_embed.guidance_embedder.linear_1"),
    ("guidance_in.out_layer", "transformer.time_text_embed.guidance_embedder.linear_2"),
    ("final_layer.linear", "transformer.proj_out"),
    ("final_layer.adaLN_modulation.{i}", keep),  # shift/scale halves swapped in diffusers' norm_out.linear
))

# SD3 MMDiT, SAI's names (kohya lora_unet_ for SD3) -> diffusers SD3Transformer2DModel where one-to-one
SD3_SAI = tuple(path(p, t) for p, t in (
    ("joint_blocks.{i}.x_block.attn.proj", DOUBLE + "attn.to_out.0"),
    ("joint_blocks.{i}.x_block.attn2.proj", DOUBLE + "attn2.to_out.0"),
    ("joint_blocks.{i}.context_block.attn.proj", DOUBLE + "attn.to_add_out"),
    ("joint_blocks.{i}.x_block.mlp.fc1", DOUBLE + "ff.net.0.proj"),
    ("joint_blocks.{i}.x_block.mlp.fc2", DOUBLE + "ff.net.2"),
    ("joint_blocks.{i}.context_block.mlp.fc1", DOUBLE + "ff_context.net.0.proj"),
    ("joint_blocks.{i}.context_block.mlp.fc2", DOUBLE + "ff_context.net.2"),
    ("joint_blocks.{i}.x_block.adaLN_modulation.{i}", lambda p: None if p[-1] != "1" else
     f"transformer.transformer_blocks.{p[1]}.norm1.linear"),
    ("joint_blocks.{i}.context_block.adaLN_modulation.{i}", keep),  # halves swapped in the last block
    ("joint_blocks.{i}.(x_block|context_block).(attn|attn2).qkv", keep),  # fused q, k, v
    ("x_embedder.proj", "transformer.pos_embed.proj"),
    ("context_embedder", "transformer.context_embedder"),
    ("t_embedder.mlp.0", "transformer.time_text_embed.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "transformer.time_text_embed.timestep_embedder.linear_2"),
    ("y_embedder.mlp.0", "transformer.time_text_embed.text_embedder.linear_1"),
    ("y_embedder.mlp.2", "transformer.time_text_embed.text_embedder.linear_2"),
))

# diffusers FluxTransformer2DModel and SD3Transformer2DModel (kohya lora_transformer_)
TRANSFORMER = tuple(path(p) for p in (
    "transformer_blocks.{i}.(attn|attn2).(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_add_out)",
    "transformer_blocks.{i}.(attn|attn2).to_out.{i}",
    "transformer_blocks.{i}.(ff|ff_context).net.{i}.proj", "transformer_blocks.{i}.(ff|ff_context).net.{i}",
    "transformer_blocks.{i}.(norm1|norm1_context).linear",
    "single_transformer_blocks.{i}.attn.(to_q|to_k|to_v)",
    "single_transformer_blocks.{i}.(proj_mlp|proj_out)", "single_transformer_blocks.{i}.norm.linear",
    "(x_embedder|context_embedder|proj_out)", "norm_out.linear", "pos_embed.proj",
    "time_text_embed.(timestep_embedder|text_embedder|guidance_embedder).(linear_1|linear_2)",
))

# transformers CLIPTextModel / CLIPTextModelWithProjection, as SD checkpoints and kohya keys name them
CLIP = tuple(path(p) for p in (
    "text_model.encoder.layers.{i}.self_attn.(q_proj|k_proj|v_proj|out_proj)",
    "text_model.encoder.layers.{i}.mlp.(fc1|fc2)",
    "text_model.embeddings.(token_embedding|position_embedding)",
    "text_projection",
))

# transformers language models: Llama-style (Llama, Mistral, Qwen2/3, Gemma, Phi-3, Qwen2-MoE, Mixtral),
# GPT-2, GPT-NeoX, Falcon
LLM = tuple(path(p) for p in (
    "model.layers.{i}.self_attn.(q_proj|k_proj|v_proj|o_proj|qkv_proj)",
    "model.layers.{i}.mlp.(gate_proj|up_proj|down_proj|gate_up_proj|gate|shared_expert_gate)",
    "model.layers.{i}.mlp.(experts|shared_expert).(gate_proj|up_proj|down_proj)",
    "model.layers.{i}.mlp.experts.{i}.(gate_proj|up_proj|down_proj)",
    "model.layers.{i}.block_sparse_moe.gate", "model.layers.{i}.block_sparse_moe.experts.{i}.(w1|w2|w3)",
    "model.embed_tokens", "(lm_head|embed_out)",
    "transformer.h.{i}.attn.(c_attn|c_proj)", "transformer.h.{i}.mlp.(c_fc|c_proj)", "transformer.(wte|wpe)",
    "transformer.h.{i}.self_attention.(query_key_value|dense)",
    "transformer.h.{i}.mlp.(dense_h_to_4h|dense_4h_to_h)",
    "gpt_neox.layers.{i}.mlp.(dense_h_to_4h|dense_4h_to_h)",
    "gpt_neox.layers.{i}.attention.(query_key_value|dense)", "gpt_neox.embed_in",
))


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
    "lora_te3_": Prefix(None, (), ambiguous="lora_te3_ is FLUX's text_encoder_2 (T5) but SD3's "
                        "text_encoder_3"),
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
        tokens = stem[len(key):].split("_")
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
    return Resolution(stem, raw_name(stem), "not in lorascope's vocabulary of diffusers / transformers "
                      "module names; kept in kohya's flattened form")


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


# Where each kohya component lives in the checkpoints people pair a kohya file with: a diffusers component folder
# (no prefix), a diffusers pipeline state dict ('unet.', 'text_encoder.'), or an original single-file checkpoint
# (SD / SDXL 'model.diffusion_model.', 'cond_stage_model.transformer.', 'conditioner.embedders.N.…'; FLUX / SD3
# saved by ComfyUI under 'model.diffusion_model.'). A base name pairs with a kohya stem only when removing one of
# its component's prefixes leaves exactly the stem's path (kohya's own tokens, or the resolved name's).
COMPONENT_PREFIXES: dict[str | None, tuple[str, ...]] = {
    "unet": ("", "unet.", "model.diffusion_model."),
    "transformer": ("", "transformer.", "model.diffusion_model."),
    "text_encoder": ("", "text_encoder.", "cond_stage_model.transformer.", "conditioner.embedders.0.transformer."),
    "text_encoder_2": ("", "text_encoder_2.", "conditioner.embedders.1.model."),
    None: ("",),
    "lycoris": ("",),
    "diffusion_model": ("", "model.diffusion_model."),
}
# LyCORIS's create_lycoris on any torch module names each wrapped layer 'lycoris_' + its path in that module
# with '.' flattened to '_' (lycoris.wrapper.LycorisNetwork.LORA_PREFIX): the base is the wrapped module itself.
LYCORIS_PREFIX = "lycoris_"


def component_of(stem: str) -> tuple[str | None, str] | None:
    """(component, the stem's path after its prefix, '_'-joined) of a kohya stem — the longest prefix of
    ``PREFIXES`` it starts with — or None for a stem with no known prefix or an ambiguous component."""
    if stem.startswith(LYCORIS_PREFIX):
        return "lycoris", stem[len(LYCORIS_PREFIX):]
    keys = sorted((p for p in PREFIXES if stem.startswith(p)), key=len, reverse=True)
    if not keys or PREFIXES[keys[0]].ambiguous:
        return None
    prefix = PREFIXES[keys[0]]
    rest = stem[len(keys[0]):]
    if prefix.repeated and rest.startswith(prefix.repeated + "_"):
        rest = rest[len(prefix.repeated) + 1:]
    return prefix.component, rest
