"""The vocabulary kohya stems are read against: the module paths of the SD UNet (diffusers and sgm names),
FLUX and SD3 transformers (diffusers, BFL and SAI names), CLIP text encoders and transformers language models.

Written from diffusers' UNet2DConditionModel, FluxTransformer2DModel, SD3Transformer2DModel and its
``lora_conversion_utils`` (``_convert_kohya_flux_lora_to_diffusers``, ``_maybe_map_sgm_blocks_to_diffusers``),
``single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers``, and transformers' CLIP, Llama,
Qwen2-MoE, Mixtral, GPT-2, GPT-NeoX and Falcon models (``kohya_names`` says how a stem is resolved).
"""

from __future__ import annotations

from .kohya_grammar import Components, keep, path


# diffusers Transformer2DModel inside a UNet block (SD 1.x/2.x/SDXL), relative to '…attentions.N.'
SPATIAL = (
    "(proj_in|proj_out)",
    "transformer_blocks.{i}.(attn1|attn2).(to_q|to_k|to_v)",
    "transformer_blocks.{i}.(attn1|attn2).to_out.{i}",
    "transformer_blocks.{i}.ff.net.{i}.proj",
    "transformer_blocks.{i}.ff.net.{i}",
)
RESNET = "resnets.{i}.(conv1|conv2|conv_shortcut|time_emb_proj)"

UNET = tuple(
    path(p)
    for p in (
        *(f"(down_blocks|up_blocks).{{i}}.attentions.{{i}}.{s}" for s in SPATIAL),
        *(f"mid_block.attentions.{{i}}.{s}" for s in SPATIAL),
        f"(down_blocks|up_blocks).{{i}}.{RESNET}",
        f"mid_block.{RESNET}",
        "down_blocks.{i}.downsamplers.{i}.conv",
        "up_blocks.{i}.upsamplers.{i}.conv",
        "(conv_in|conv_out)",
        "(time_embedding|add_embedding).(linear_1|linear_2)",
    )
)

# kohya's SDXL UNet (sgm/LDM names) -> diffusers; layers_per_block = 2 as in SD 1.x, 2.x and SDXL
SGM_RESNET = {
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
SGM_MID = {0: ("resnets", 0), 1: ("attentions", 0), 2: ("resnets", 1)}
SGM_PLAIN = {
    ("time_embed", "0"): "time_embedding.linear_1",
    ("time_embed", "2"): "time_embedding.linear_2",
    ("label_emb", "0", "0"): "add_embedding.linear_1",
    ("label_emb", "0", "2"): "add_embedding.linear_2",
    ("input_blocks", "0", "0"): "conv_in",
    ("out", "2"): "conv_out",
}


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


SGM = tuple(
    path(p, sgm_to_diffusers)
    for p in (
        *(f"(input_blocks|output_blocks).{{i}}.{{i}}.{s}" for s in SPATIAL),
        *(f"middle_block.{{i}}.{s}" for s in SPATIAL),
        "(input_blocks|output_blocks).{i}.{i}.(in_layers|emb_layers|out_layers).{i}",
        "(input_blocks|output_blocks).{i}.{i}.skip_connection",
        "middle_block.{i}.(in_layers|emb_layers|out_layers).{i}",
        "middle_block.{i}.skip_connection",
        "input_blocks.{i}.{i}.op",
        "output_blocks.{i}.{i}.conv",
        "input_blocks.{i}.{i}",
        "time_embed.{i}",
        "label_emb.{i}.{i}",
        "out.{i}",
    )
)

# FLUX.1, BFL's names (kohya lora_unet_ for FLUX) -> diffusers FluxTransformer2DModel where one-to-one
DOUBLE = "transformer.transformer_blocks.{0}."
SINGLE = "transformer.single_transformer_blocks.{0}."
FLUX_BFL = tuple(
    path(p, t)
    for p, t in (
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
        (
            "final_layer.adaLN_modulation.{i}",
            keep,
        ),  # shift/scale halves swapped in diffusers' norm_out.linear
    )
)

# SD3 MMDiT, SAI's names (kohya lora_unet_ for SD3) -> diffusers SD3Transformer2DModel where one-to-one
SD3_SAI = tuple(
    path(p, t)
    for p, t in (
        ("joint_blocks.{i}.x_block.attn.proj", DOUBLE + "attn.to_out.0"),
        ("joint_blocks.{i}.x_block.attn2.proj", DOUBLE + "attn2.to_out.0"),
        ("joint_blocks.{i}.context_block.attn.proj", DOUBLE + "attn.to_add_out"),
        ("joint_blocks.{i}.x_block.mlp.fc1", DOUBLE + "ff.net.0.proj"),
        ("joint_blocks.{i}.x_block.mlp.fc2", DOUBLE + "ff.net.2"),
        ("joint_blocks.{i}.context_block.mlp.fc1", DOUBLE + "ff_context.net.0.proj"),
        ("joint_blocks.{i}.context_block.mlp.fc2", DOUBLE + "ff_context.net.2"),
        (
            "joint_blocks.{i}.x_block.adaLN_modulation.{i}",
            lambda p: None if p[-1] != "1" else f"transformer.transformer_blocks.{p[1]}.norm1.linear",
        ),
        ("joint_blocks.{i}.context_block.adaLN_modulation.{i}", keep),  # halves swapped in the last block
        ("joint_blocks.{i}.(x_block|context_block).(attn|attn2).qkv", keep),  # fused q, k, v
        ("x_embedder.proj", "transformer.pos_embed.proj"),
        ("context_embedder", "transformer.context_embedder"),
        ("t_embedder.mlp.0", "transformer.time_text_embed.timestep_embedder.linear_1"),
        ("t_embedder.mlp.2", "transformer.time_text_embed.timestep_embedder.linear_2"),
        ("y_embedder.mlp.0", "transformer.time_text_embed.text_embedder.linear_1"),
        ("y_embedder.mlp.2", "transformer.time_text_embed.text_embedder.linear_2"),
    )
)

# diffusers FluxTransformer2DModel and SD3Transformer2DModel (kohya lora_transformer_)
TRANSFORMER = tuple(
    path(p)
    for p in (
        "transformer_blocks.{i}.(attn|attn2).(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_add_out)",
        "transformer_blocks.{i}.(attn|attn2).to_out.{i}",
        "transformer_blocks.{i}.(ff|ff_context).net.{i}.proj",
        "transformer_blocks.{i}.(ff|ff_context).net.{i}",
        "transformer_blocks.{i}.(norm1|norm1_context).linear",
        "single_transformer_blocks.{i}.attn.(to_q|to_k|to_v)",
        "single_transformer_blocks.{i}.(proj_mlp|proj_out)",
        "single_transformer_blocks.{i}.norm.linear",
        "(x_embedder|context_embedder|proj_out)",
        "norm_out.linear",
        "pos_embed.proj",
        "time_text_embed.(timestep_embedder|text_embedder|guidance_embedder).(linear_1|linear_2)",
    )
)

# transformers CLIPTextModel / CLIPTextModelWithProjection, as SD checkpoints and kohya keys name them
CLIP = tuple(
    path(p)
    for p in (
        "text_model.encoder.layers.{i}.self_attn.(q_proj|k_proj|v_proj|out_proj)",
        "text_model.encoder.layers.{i}.mlp.(fc1|fc2)",
        "text_model.embeddings.(token_embedding|position_embedding)",
        "text_projection",
    )
)

# transformers language models: Llama-style (Llama, Mistral, Qwen2/3, Gemma, Phi-3, Qwen2-MoE, Mixtral),
# GPT-2, GPT-NeoX, Falcon
LLM = tuple(
    path(p)
    for p in (
        "model.layers.{i}.self_attn.(q_proj|k_proj|v_proj|o_proj|qkv_proj)",
        "model.layers.{i}.mlp.(gate_proj|up_proj|down_proj|gate_up_proj|gate|shared_expert_gate)",
        "model.layers.{i}.mlp.(experts|shared_expert).(gate_proj|up_proj|down_proj)",
        "model.layers.{i}.mlp.experts.{i}.(gate_proj|up_proj|down_proj)",
        "model.layers.{i}.block_sparse_moe.gate",
        "model.layers.{i}.block_sparse_moe.experts.{i}.(w1|w2|w3)",
        "model.embed_tokens",
        "(lm_head|embed_out)",
        "transformer.h.{i}.attn.(c_attn|c_proj)",
        "transformer.h.{i}.mlp.(c_fc|c_proj)",
        "transformer.(wte|wpe)",
        "transformer.h.{i}.self_attention.(query_key_value|dense)",
        "transformer.h.{i}.mlp.(dense_h_to_4h|dense_4h_to_h)",
        "gpt_neox.layers.{i}.mlp.(dense_h_to_4h|dense_4h_to_h)",
        "gpt_neox.layers.{i}.attention.(query_key_value|dense)",
        "gpt_neox.embed_in",
    )
)
