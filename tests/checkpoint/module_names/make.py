"""Writes the real module names the kohya-name tests resolve to: every Linear, Conv and Embedding module of
the models, as diffusers and transformers name them, built on the meta device (no weights, no download).

Run by hand when the vocabulary grows (needs diffusers and transformers):
    python tests/checkpoint/module_names/make.py
Each list is one name per line, preceded by a comment line naming the library version and the config.
"""

from __future__ import annotations

from pathlib import Path

import torch

HERE = Path(__file__).parent


def layers(model: torch.nn.Module) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    types = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, Conv1D)
    return [n for n, m in model.named_modules() if isinstance(m, types)]


def write(name: str, model: torch.nn.Module, source: str, prefix: str = "") -> None:
    names = [prefix + n for n in layers(model)]
    (HERE / f"{name}.txt").write_text(f"# {source}\n" + "\n".join(names) + "\n")
    print(name, len(names))


SPATIAL = (
    "norm1",
    "norm2",
    "norm3",
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)


def sdxl_sgm_modules() -> list[str]:
    """SDXL's UNet in sgm's names (sd_xl_base_1.0.safetensors, kohya's SDXL LoRA keys): every module with a
    weight. Checked below against diffusers' own converter, which must map them onto diffusers' SDXL UNet."""

    def res(p: str, skip: bool) -> list[str]:
        return [
            f"{p}.in_layers.0",
            f"{p}.in_layers.2",
            f"{p}.emb_layers.1",
            f"{p}.out_layers.0",
            f"{p}.out_layers.3",
        ] + ([f"{p}.skip_connection"] if skip else [])

    def spatial(p: str, depth: int) -> list[str]:
        return [f"{p}.norm", f"{p}.proj_in", f"{p}.proj_out"] + [
            f"{p}.transformer_blocks.{k}.{x}" for k in range(depth) for x in SPATIAL
        ]

    names = [
        "time_embed.0",
        "time_embed.2",
        "label_emb.0.0",
        "label_emb.0.2",
        "input_blocks.0.0",
        "out.0",
        "out.2",
    ]
    depth = {0: 0, 1: 2, 2: 10}
    for n in range(1, 9):  # down: 3 blocks of (res, res, downsample), the last without downsample
        block, slot = divmod(n - 1, 3)
        if slot == 2:
            names.append(f"input_blocks.{n}.0.op")
            continue
        names += res(f"input_blocks.{n}.0", skip=slot == 0 and block > 0)
        if depth[block]:
            names += spatial(f"input_blocks.{n}.1", depth[block])
    names += res("middle_block.0", False) + spatial("middle_block.1", 10) + res("middle_block.2", False)
    for n in range(9):  # up: 3 blocks of 3 (res [+ attention]), upsample after the last of blocks 0, 1
        block, slot = divmod(n, 3)
        d = depth[2 - block]
        names += res(f"output_blocks.{n}.0", skip=True)
        if d:
            names += spatial(f"output_blocks.{n}.1", d)
        if slot == 2 and block < 2:
            names.append(f"output_blocks.{n}.{2 if d else 1}.conv")
    return names


def write_sgm_pairs(sdxl: torch.nn.Module, dv: str) -> None:
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

    sgm = sdxl_sgm_modules()
    ckpt = {f"{LDM_UNET_KEY}{n}.{p}": f"{n}" for n in sgm for p in ("weight", "bias")}
    converted = convert_ldm_unet_checkpoint(ckpt, dict(sdxl.config))  # diffusers key -> the sgm module name
    weights = {k for k in sdxl.state_dict() if k.endswith(".weight")}
    converted = {k: v for k, v in converted.items() if k.endswith(".weight")}
    assert set(converted) == weights, sorted(set(converted) ^ weights)[:10]
    wanted = set(layers(sdxl))
    pairs = sorted({(v, k.rsplit(".", 1)[0]) for k, v in converted.items() if k.rsplit(".", 1)[0] in wanted})
    assert {d for _, d in pairs} == wanted
    (HERE / "sdxl_sgm.txt").write_text(
        f"# {dv} convert_ldm_unet_checkpoint: sgm module name, diffusers module name (SDXL base 1.0)\n"
        + "\n".join(f"{s} {d}" for s, d in pairs)
        + "\n"
    )
    print("sdxl_sgm", len(pairs))


def flux_bfl_modules() -> list[str]:
    """FLUX.1-dev's Linear modules in BFL's names (flux1-dev.safetensors, kohya's FLUX LoRA keys)."""
    names = []
    for i in range(19):
        for s in ("img", "txt"):
            names += [
                f"double_blocks.{i}.{s}_{m}" for m in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2", "mod.lin")
            ]
    for i in range(38):
        names += [f"single_blocks.{i}.{m}" for m in ("linear1", "linear2", "modulation.lin")]
    names += ["img_in", "txt_in", "final_layer.linear", "final_layer.adaLN_modulation.1"]
    return names + [
        f"{e}.{p}" for e in ("time_in", "vector_in", "guidance_in") for p in ("in_layer", "out_layer")
    ]


def sd3_sai_modules(layers: int = 24, dual: int = 13) -> list[str]:
    """SD 3.5 medium's Linear / Conv modules in SAI's MMDiT names (kohya's SD3 LoRA keys)."""
    names = [
        "x_embedder.proj",
        "context_embedder",
        "t_embedder.mlp.0",
        "t_embedder.mlp.2",
        "y_embedder.mlp.0",
        "y_embedder.mlp.2",
        "final_layer.linear",
        "final_layer.adaLN_modulation.1",
    ]
    for i in range(layers):
        b = f"joint_blocks.{i}"
        names += [
            f"{b}.x_block.{m}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
        ]
        names += [f"{b}.x_block.attn2.{m}" for m in ("qkv", "proj")] if i < dual else []
        last = i == layers - 1  # the last context block is pre-only: no output projection, no MLP
        names += [f"{b}.context_block.{m}" for m in ("attn.qkv", "adaLN_modulation.1")]
        names += [] if last else [f"{b}.context_block.{m}" for m in ("attn.proj", "mlp.fc1", "mlp.fc2")]
    return names


def one_to_one(
    convert, modules: list[str], rows: dict[str, int], model: torch.nn.Module
) -> list[tuple[str, str]]:
    """(original name, diffusers name or '-') for each module, from diffusers' own single-file converter:
    a module is one-to-one where a diffusers weight equals its weight exactly (random values); fused or
    reordered ones (qkv, linear1, shift/scale swaps) match none."""
    g = torch.Generator().manual_seed(0)
    ckpt = {}
    for n in modules:
        r = next((v for k, v in rows.items() if k in n), 6144)
        ckpt.update({f"{n}.weight": torch.randn(r, 1, generator=g), f"{n}.bias": torch.randn(r, generator=g)})
    for _ in range(1000):  # norms and other parameters the converter also expects
        try:
            out = convert(dict(ckpt))
            break
        except KeyError as exc:
            ckpt[exc.args[0]] = torch.randn(6144, 1, generator=g)
    by_value = {}
    for k, v in out.items():
        if k.endswith(".weight"):
            src = [
                n
                for n in modules
                if ckpt[f"{n}.weight"].shape == v.shape and torch.equal(ckpt[f"{n}.weight"], v)
            ]
            by_value.update({src[0]: k.removesuffix(".weight")} if len(src) == 1 else {})
    assert set(by_value.values()) <= set(layers(model))
    return [(n, by_value.get(n, "-")) for n in modules]


def write_pairs(name: str, pairs: list[tuple[str, str]], source: str) -> None:
    (HERE / f"{name}.txt").write_text(f"# {source}\n" + "\n".join(f"{a} {b}" for a, b in pairs) + "\n")
    print(name, len(pairs), sum(b != "-" for _, b in pairs), "one-to-one")


def main() -> None:
    import diffusers
    import transformers
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    dv, tv = f"diffusers {diffusers.__version__}", f"transformers {transformers.__version__}"
    with torch.device("meta"):
        # SD 1.5: UNet2DConditionModel's defaults are the SD 1.x layout (runwayml/stable-diffusion-v1-5 unet)
        write(
            "sd15_unet", UNet2DConditionModel(cross_attention_dim=768), f"{dv} UNet2DConditionModel (SD 1.5)"
        )
        # SDXL base 1.0 unet/config.json
        sdxl = UNet2DConditionModel(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        write("sdxl_unet", sdxl, f"{dv} UNet2DConditionModel (SDXL base 1.0)")
        write_sgm_pairs(sdxl, dv)
        # FLUX.1-dev transformer/config.json
        flux = FluxTransformer2DModel(num_layers=19, num_single_layers=38, guidance_embeds=True)
        write("flux_transformer", flux, f"{dv} FluxTransformer2DModel (FLUX.1-dev)")
        # SD 3.5 medium transformer/config.json: MMDiT-X with a second attention in blocks 0-12
        sd3 = SD3Transformer2DModel(
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            joint_attention_dim=4096,
            caption_projection_dim=1536,
            pooled_projection_dim=2048,
            out_channels=16,
            pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)),
            qk_norm="rms_norm",
            sample_size=128,
        )
        write("sd3_transformer", sd3, f"{dv} SD3Transformer2DModel (SD 3.5 medium)")
        # transformers 4 saved CLIPTextModel under 'text_model.' (SD checkpoints and kohya keys carry it);
        # transformers 5 drops the prefix and converts old checkpoints when loading
        write(
            "clip_l",
            transformers.CLIPTextModel(transformers.CLIPTextConfig()),
            f"{tv} CLIPTextModel (CLIP ViT-L/14 text tower), names as saved: text_model.*",
            "text_model.",
        )
        write(
            "clip_g",
            transformers.CLIPTextModelWithProjection(
                transformers.CLIPTextConfig(
                    hidden_size=1280,
                    intermediate_size=5120,
                    num_hidden_layers=32,
                    num_attention_heads=20,
                    projection_dim=1280,
                )
            ),
            f"{tv} CLIPTextModelWithProjection (OpenCLIP bigG, SDXL text_encoder_2)",
        )
        write(
            "llama",
            transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=2)),
            f"{tv} LlamaForCausalLM (2 layers)",
        )
        write(
            "qwen2_moe",
            transformers.Qwen2MoeForCausalLM(
                transformers.Qwen2MoeConfig(
                    num_hidden_layers=2,
                    num_experts=4,
                    hidden_size=64,
                    intermediate_size=64,
                    moe_intermediate_size=32,
                    shared_expert_intermediate_size=64,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                    vocab_size=128,
                )
            ),
            f"{tv} Qwen2MoeForCausalLM (2 layers, 4 experts)",
        )
        write(
            "gpt2",
            transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2)),
            f"{tv} GPT2LMHeadModel (2 layers)",
        )
        write(
            "gpt_neox",
            transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(num_hidden_layers=2)),
            f"{tv} GPTNeoXForCausalLM (2 layers)",
        )

    from diffusers.loaders import single_file_utils as sf

    write_pairs(
        "flux_bfl",
        one_to_one(
            sf.convert_flux_transformer_checkpoint_to_diffusers,
            flux_bfl_modules(),
            {"qkv": 9216, "linear1": 21504},
            flux,
        ),
        f"{dv} convert_flux_transformer_checkpoint_to_diffusers: BFL name, diffusers name or - (not 1:1)",
    )
    write_pairs(
        "sd3_sai",
        one_to_one(
            sf.convert_sd3_transformer_checkpoint_to_diffusers,
            sd3_sai_modules(),
            {"qkv": 4608, "context_embedder": 1536},
            sd3,
        ),
        f"{dv} convert_sd3_transformer_checkpoint_to_diffusers: SAI name, diffusers name or - (not 1:1)",
    )


if __name__ == "__main__":
    main()
