"""Single-file LoRAs of diffusion tools, built in tmp_path: layout detection, names, scales, conv
flattening."""

import math

import numpy as np
import pytest
import torch
from builders import save_st
from refs import assert_sigma_close, ref_sigma

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.lora_files import kohya_name
from lorascope.errors import LorascopeError

g = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=g)


def spectra(path):
    res = lorascope.analyze(path)
    return res, res.modules.set_index("name")


def test_kohya_linear_and_conv_with_alpha(tmp_path):
    down, up = rnd(4, 32), rnd(48, 4)
    cdown, cup = rnd(4, 8, 3, 3), rnd(16, 4, 1, 1)
    p = save_st(
        tmp_path / "k.safetensors",
        {
            "lora_unet_down_blocks_0_attentions_1_proj_in.lora_down.weight": down,
            "lora_unet_down_blocks_0_attentions_1_proj_in.lora_up.weight": up,
            "lora_unet_down_blocks_0_attentions_1_proj_in.alpha": torch.tensor(2.0),
            "lora_unet_down_blocks_1_resnets_0_conv1.lora_down.weight": cdown,
            "lora_unet_down_blocks_1_resnets_0_conv1.lora_up.weight": cup,
            "lora_unet_down_blocks_1_resnets_0_conv1.alpha": torch.tensor(8.0),
        },
    )
    res, rows = spectra(p)
    lin = "unet.down_blocks.0.attentions.1.proj_in"
    conv = "unet.down_blocks.1.resnets.0.conv1"
    assert rows.loc[lin, "scale"] == pytest.approx(2.0 / 4) and rows.loc[lin, "layer"] == 0
    assert_sigma_close(res.spectrum(lin), ref_sigma(0.5 * (up.double() @ down.double()).numpy()), 1e-6, 1e-9)
    dense_conv = (
        cup.reshape(16, 4).double() @ cdown.reshape(4, 72).double()
    ).numpy() * 2.0  # flattened (out, in·kh·kw)
    assert (rows.loc[conv, "rows"], rows.loc[conv, "cols"]) == (16, 72)
    assert_sigma_close(res.spectrum(conv), ref_sigma(dense_conv), 1e-6, 1e-9)
    assert set(rows["source"]) == {"kohya"}


def test_kohya_without_alpha_uses_scale_one_and_warns(tmp_path):
    p = save_st(
        tmp_path / "k.safetensors",
        {
            "lora_te_text_model_encoder_layers_3_mlp_fc1_lora_down.weight": rnd(2, 8),
            "lora_te_text_model_encoder_layers_3_mlp_fc1_lora_up.weight": rnd(8, 2),
        },
    )
    res, rows = spectra(p)
    assert rows["scale"].tolist() == [1.0]
    assert any("alpha" in w["reason"] for w in res.summary["warnings"])
    assert (
        kohya_name("lora_te_text_model_encoder_layers_3_mlp_fc1")
        == "text_encoder.text_model.encoder.layers.3.mlp.fc1"
    )


def test_diffusers_processor_keys_map_to_module_names(tmp_path):
    pre = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
    p = save_st(
        tmp_path / "pytorch_lora_weights.safetensors",
        {
            f"{pre}.to_q_lora.down.weight": rnd(4, 10),
            f"{pre}.to_q_lora.up.weight": rnd(10, 4),
            f"{pre}.to_out_lora.down.weight": rnd(4, 10),
            f"{pre}.to_out_lora.up.weight": rnd(10, 4),
            "unet.mid_block.attentions.0.proj_in.lora.down.weight": rnd(4, 10),
            "unet.mid_block.attentions.0.proj_in.lora.up.weight": rnd(12, 4),
        },
    )
    ckpt = open_checkpoint(p)
    assert ckpt.format == "diffusers"
    names = sorted(m.name for m in ckpt.modules)
    assert names == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet.mid_block.attentions.0.proj_in",
    ]


def test_lora_ab_scale_from_alpha_tensor_then_metadata_then_one(tmp_path):
    a, b = rnd(4, 20), rnd(6, 4)
    with_alpha = save_st(
        tmp_path / "a.safetensors",
        {
            "transformer.blocks.0.proj.lora_A.weight": a,
            "transformer.blocks.0.proj.lora_B.weight": b,
            "transformer.blocks.0.proj.alpha": torch.tensor(8.0),
        },
    )
    with_meta = save_st(
        tmp_path / "m.safetensors",
        {"transformer.blocks.0.proj.lora_A.weight": a, "transformer.blocks.0.proj.lora_B.weight": b},
        {"ss_network_alpha": "2", "ss_network_dim": "4"},
    )
    bare = save_st(
        tmp_path / "b.safetensors",
        {"transformer.blocks.0.proj.lora_A.weight": a, "transformer.blocks.0.proj.lora_B.weight": b},
    )
    for path, scale in ((with_alpha, 2.0), (with_meta, 0.5), (bare, 1.0)):
        res, rows = spectra(path)
        assert rows["scale"].iloc[0] == pytest.approx(scale)
        assert rows["source"].iloc[0] == "lora-ab"
        assert_sigma_close(
            res.spectrum("transformer.blocks.0.proj"),
            ref_sigma(scale * (b.double() @ a.double()).numpy()),
            1e-6,
            1e-9,
        )
    assert any("scale 1 assumed" in w["reason"] for w in lorascope.analyze(bare).summary["warnings"])


def test_cloneofsimo_rank_from_metadata(tmp_path):
    p = save_st(
        tmp_path / "c.safetensors",
        {
            "unet:0:down": rnd(3, 16),
            "unet:0:up": rnd(16, 3),
            "unet:1:down": rnd(3, 16),
            "unet:1:up": rnd(16, 3),
        },
        {"unet:0:rank": "3", "unet:1:rank": "5"},
    )
    ckpt = open_checkpoint(p)
    assert ckpt.format == "cloneofsimo" and [m.name for m in ckpt.modules] == ["unet.0", "unet.1"]
    assert any("metadata says rank 5" in w["reason"] for w in ckpt.warnings)


def test_unsupported_and_unknown_layouts_fail_clearly(tmp_path):
    oft = save_st(
        tmp_path / "oft.safetensors",
        {"lycoris_x.oft_blocks": rnd(2, 4, 4), "lycoris_x.alpha": torch.tensor(1.0)},
    )
    with pytest.raises(LorascopeError, match="OFT"):
        open_checkpoint(oft)
    unknown = save_st(tmp_path / "u.safetensors", {"w_a_000": rnd(4, 8), "w_b_000": rnd(8, 4)})
    with pytest.raises(LorascopeError, match="not a LoRA adapter"):
        lorascope.analyze(unknown)
    half = save_st(tmp_path / "h.safetensors", {"lora_unet_x.lora_down.weight": rnd(4, 8)})
    with pytest.raises(LorascopeError, match="only the down factor"):
        open_checkpoint(half)


def test_forced_format_overrides_detection(tmp_path):
    p = save_st(
        tmp_path / "k.safetensors",
        {"lora_unet_x_0_y.lora_down.weight": rnd(2, 6), "lora_unet_x_0_y.lora_up.weight": rnd(6, 2)},
    )
    assert open_checkpoint(p, "kohya").format == "kohya"
    assert open_checkpoint(p, "safetensors").kind == "weights"
    with pytest.raises(LorascopeError, match="unknown format"):
        open_checkpoint(p, "ggml")
    with pytest.raises(LorascopeError, match="was given as gguf but does not start with the GGUF magic"):
        open_checkpoint(p, "gguf")
    assert math.isfinite(lorascope.analyze(p).modules["fro_norm"].iloc[0])
    assert np.isfinite(lorascope.analyze(p, format="kohya").spectrum("unet_x.0.y")).all()


def test_ai_toolkit_dora_magnitude_is_exact_with_the_base(tmp_path):
    """ai-toolkit's DoRAModule (toolkit/models/DoRA.py; the forward in toolkit/network_mixins.py) adds
    (m / ‖W + BA‖_row − 1) ⊙ ((W + BA) x) to W x + B A x, B A unscaled:
    W' = diag(m / ‖W + BA‖_row) (W + BA)."""
    out, inp, r = 12, 10, 3
    w0, a, b = rnd(out, inp), rnd(r, inp), 0.3 * rnd(out, r)
    m = rnd(out).abs() + 0.5
    key = "transformer.single_transformer_blocks.0.attn.to_q"
    base = save_st(tmp_path / "base.safetensors", {f"{key}.weight": w0})
    dora = save_st(
        tmp_path / "dora.safetensors",
        {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b, f"{key}.magnitude": m},
    )
    x = np.eye(inp)  # the forward on the identity, in float64: columns of the effective weight
    w, ba = w0.double().numpy(), (b.double() @ a.double()).numpy()
    merged = w + ba
    y = w @ x + ba @ x + (m.double().numpy() / np.linalg.norm(merged, axis=1) - 1)[:, None] * (merged @ x)
    res, rows = spectra_of(lorascope.analyze(base, dora))
    assert rows["family"].tolist() == ["dora"] and rows["scale"].tolist() == [1.0]
    assert_sigma_close(res.spectrum(key), ref_sigma(y - w), 0, 1e-6)
    alone, rows = spectra_of(lorascope.analyze(dora))  # without the base: B@A, said so
    assert rows["family"].tolist() == ["lora"]
    assert_sigma_close(alone.spectrum(key), ref_sigma(ba), 0, 1e-6)
    reasons = " ".join(w["reason"] for w in alone.summary["warnings"])
    assert "DoRA" in reasons and "scale 1 assumed" in reasons


def spectra_of(res):
    return res, res.modules.set_index("name")


def test_diffusers_lora_adapter_metadata_gives_r_and_alpha(tmp_path):
    """diffusers' save_lora_weights packs each component's LoraConfig as '<component>.<field>' in the header
    (lora_base.py _pack_dict_with_prefix, LORA_ADAPTER_METADATA_KEY); PEFT's rules then apply per module."""
    import json

    a, b = rnd(4, 20), rnd(6, 4)
    tensors = {
        f"{m}.lora_{ab}.weight": t
        for m in ("transformer.blocks.0.proj", "transformer.blocks.1.proj", "text_encoder.layers.0.q")
        for ab, t in (("A", a.clone()), ("B", b.clone()))
    }
    header = {
        "transformer.r": 4,
        "transformer.lora_alpha": 8,
        "transformer.alpha_pattern": {"blocks.1.proj": 2},
        "transformer.rank_pattern": {},
        "text_encoder.r": 4,
        "text_encoder.lora_alpha": 4,
        "text_encoder.use_rslora": True,
    }
    p = save_st(
        tmp_path / "pytorch_lora_weights.safetensors",
        tensors,
        {"format": "pt", "lora_adapter_metadata": json.dumps(header)},
    )
    scales = {m.name: m.scale for m in open_checkpoint(p).modules}
    # PEFT: s = lora_alpha / r, alpha_pattern overriding α; rsLoRA: α / √r
    assert scales == {
        "transformer.blocks.0.proj": 8 / 4,
        "transformer.blocks.1.proj": 2 / 4,
        "text_encoder.layers.0.q": 4 / math.sqrt(4),
    }
    res = lorascope.analyze(p)
    want = ref_sigma(0.5 * (b.double() @ a.double()).numpy())
    assert_sigma_close(res.spectrum("transformer.blocks.1.proj"), want, 1e-6, 1e-9)
    header["transformer.lora_alpha"] = -1
    bad = save_st(tmp_path / "bad.safetensors", tensors, {"lora_adapter_metadata": json.dumps(header)})
    with pytest.raises(LorascopeError, match="lora_adapter_metadata.*transformer.*lora_alpha"):
        open_checkpoint(bad)
    both = save_st(
        tmp_path / "both.safetensors",
        {**tensors, "transformer.blocks.0.proj.alpha": torch.tensor(1.0)},
        {"lora_adapter_metadata": json.dumps({**header, "transformer.lora_alpha": 8})},
    )
    with pytest.raises(LorascopeError, match="declares its scale twice"):
        open_checkpoint(both)
    header["transformer.lora_alpha"] = 8
    other_r = save_st(
        tmp_path / "r8.safetensors",
        tensors,
        {"lora_adapter_metadata": json.dumps({**header, "transformer.r": 8})},
    )
    with pytest.raises(
        LorascopeError, match="factors have rank 4 but the lora_adapter_metadata header gives r=8"
    ):
        open_checkpoint(other_r)  # PEFT builds rank-8 layers and cannot load these factors


def test_peft_names_with_an_adapter_name_or_without_weight_suffix(tmp_path):
    """ComfyUI reads '<module>.lora_B.default.weight' (Qwen) and '<module>.lora_B' (Mochi) as LoRA factors."""
    a, b = rnd(2, 8), rnd(5, 2)
    named = save_st(tmp_path / "n.safetensors", {"x.lora_A.default.weight": a, "x.lora_B.default.weight": b})
    bare = save_st(tmp_path / "b.safetensors", {"x.lora_A": a, "x.lora_B": b})
    for p in (named, bare):
        ckpt = open_checkpoint(p)
        assert [(m.name, m.family, m.source) for m in ckpt.modules] == [("x", "lora", "lora-ab")]
    two = save_st(
        tmp_path / "t.safetensors",
        {
            "x.lora_A.one.weight": a,
            "x.lora_B.one.weight": b,
            "x.lora_A.two.weight": a.clone(),
            "x.lora_B.two.weight": b.clone(),
        },
    )
    with pytest.raises(LorascopeError, match="more than one adapter"):
        open_checkpoint(two)


def test_a_model_checkpoint_with_a_stray_diff_tensor_stays_a_model(tmp_path):
    model = {f"layers.{i}.proj.weight": rnd(4, 4) for i in range(3)}
    p = save_st(tmp_path / "m.safetensors", {**model, "layers.0.time.diff": rnd(4, 4)})
    assert open_checkpoint(p).kind == "weights"
    full = save_st(
        tmp_path / "f.safetensors",
        {"lycoris_a.diff": rnd(4, 4), "lycoris_b.diff": rnd(4, 4), "lycoris_a.diff_b": rnd(4)},
    )
    ckpt = open_checkpoint(full)
    assert ckpt.families == ["full"] and list(ckpt.vectors) == ["lycoris_a.diff_b"]
