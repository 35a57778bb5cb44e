"""kohya stems resolved to diffusers / transformers module names, checked on the real module names of the
models (tests/checkpoint/module_names, written from diffusers and transformers by make.py there) and on
the real kohya-like and diffusers LoRA files of the shared fixtures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import save_st
from refs import ref_sigma

import lorascope
from lorascope.checkpoint import kohya_names, open_checkpoint
from lorascope.checkpoint.kohya_names import Prefix, path, resolve, stem_of_key

NAMES = Path(__file__).parent / "module_names"


def lines(file: str) -> list[str]:
    return [ln for ln in (NAMES / f"{file}.txt").read_text().splitlines() if ln and not ln.startswith("#")]


def kohya_stem(prefix: str, name: str) -> str:
    """How kohya's trainers name a module: the prefix, then the module path with '.' turned into '_'."""
    return prefix + name.replace(".", "_")


@pytest.mark.parametrize(
    "file, prefix, component",
    [
        ("sd15_unet", "lora_unet_", "unet."),
        ("sdxl_unet", "lora_unet_", "unet."),
        ("flux_transformer", "lora_transformer_", "transformer."),
        ("sd3_transformer", "lora_transformer_", "transformer."),
        ("clip_l", "lora_te_", "text_encoder."),
        ("clip_l", "lora_te1_", "text_encoder."),
        ("clip_g", "lora_te2_", "text_encoder_2."),
        ("llama", "lora_", ""),
        ("qwen2_moe", "lora_", ""),
        ("gpt2", "lora_", ""),
        ("gpt_neox", "lora_", ""),
    ],
)
def test_every_module_of_the_model_resolves_to_its_library_name(file, prefix, component):
    names = lines(file)
    assert len(names) > 2
    for name in names:
        r = resolve(kohya_stem(prefix, name))
        assert (r.name, r.reason) == (component + name, None), name


def test_sdxl_sgm_names_resolve_as_diffusers_converts_the_checkpoint():
    """kohya's SDXL keys use sgm's names (input_blocks_4_1_…): the reference is diffusers'
    convert_ldm_unet_checkpoint, which maps every one of them onto diffusers' SDXL UNet."""
    pairs = [ln.split() for ln in lines("sdxl_sgm")]
    assert len(pairs) == len(lines("sdxl_unet"))
    for sgm, diffusers in pairs:
        r = resolve(kohya_stem("lora_unet_", sgm))
        assert (r.name, r.reason) == (f"unet.{diffusers}", None), sgm


@pytest.mark.parametrize("file", ["flux_bfl", "sd3_sai"])
def test_bfl_and_sai_names_map_to_diffusers_only_where_one_to_one(file):
    """The reference is diffusers' single-file converter: a module is one-to-one where a diffusers weight
    equals its weight exactly; fused qkv / linear1 and swapped shift/scale halves equal none ('-')."""
    kept = 0
    for original, diffusers in (ln.split() for ln in lines(file)):
        r = resolve(kohya_stem("lora_unet_", original))
        assert r.reason is None, original
        if "context_block.adaLN_modulation" in original:
            # swapped in the last block only, and a name does not say which block is last: kept everywhere
            assert r.name == original
        elif diffusers == "-":
            assert r.name == original  # BFL / SAI's own name
            kept += 1
        else:
            assert r.name == f"transformer.{diffusers}", original
    assert kept > 0


def test_ambiguous_unknown_and_te3_stems_keep_their_kohya_form(monkeypatch):
    monkeypatch.setitem(kohya_names.PREFIXES, "lora_x_", Prefix("x", (path("a_b.c"), path("a.b_c"))))
    r = resolve("lora_x_a_b_c")
    assert r.name == "x_a_b_c" and "ambiguous" in r.reason and "x.a.b_c or x.a_b.c" in r.reason
    r = resolve("lora_unet_x_0_y")
    assert r.name == "unet_x.0.y" and "vocabulary" in r.reason
    r = resolve("lora_te3_encoder_block_0_layer_0_SelfAttention_q")
    assert r.name.startswith("te3_encoder_block.0") and "text_encoder_3" in r.reason


def test_a_name_kept_in_kohya_form_is_a_warning_of_the_run(tmp_path):
    g = torch.Generator().manual_seed(0)
    p = save_st(
        tmp_path / "k.safetensors",
        {
            "lora_unet_x_0_y.lora_down.weight": torch.randn(2, 6, generator=g),
            "lora_unet_x_0_y.lora_up.weight": torch.randn(6, 2, generator=g),
            "lora_unet_mid_block_resnets_0_conv1.lora_down.weight": torch.randn(2, 6, generator=g),
            "lora_unet_mid_block_resnets_0_conv1.lora_up.weight": torch.randn(6, 2, generator=g),
        },
    )
    res = lorascope.analyze(p)
    assert set(res.modules["name"]) == {"unet_x.0.y", "unet.mid_block.resnets.0.conv1"}
    kept = [w for w in res.summary["warnings"] if "flattened" in w["reason"]]
    assert [w["name"] for w in kept] == ["unet_x.0.y"]


def test_stem_of_key():
    assert stem_of_key("lora_unet_a_0_b.lora_down.weight") == "lora_unet_a_0_b"
    assert stem_of_key("lora_unet_a_0_b_lora_up.weight") == "lora_unet_a_0_b"
    assert stem_of_key("lora_unet_a_0_b.alpha") == "lora_unet_a_0_b"
    assert stem_of_key("unet.a.lora.down.weight") is None


def diffusers_to_kohya(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers LoRA renamed the way kohya's trainers name it: 'unet.<path>.lora.down.weight' ->
    'lora_unet_<path with _>.lora_down.weight', with alpha = r (scale 1, as the diffusers file has none)."""
    out = {}
    for key, t in tensors.items():
        m = re.match(r"^unet\.(.+)\.lora\.(down|up)\.weight$", key)
        stem = kohya_stem("lora_unet_", m[1])
        out[f"{stem}.lora_{m[2]}.weight"] = t
        if m[2] == "down":
            out[f"{stem}.alpha"] = torch.tensor(float(t.shape[0]))
    return out


def test_real_kohya_and_diffusers_files_join_row_for_row(real_fixtures, tmp_path):
    from safetensors.torch import load_file

    files = real_fixtures / "lora_files"
    kohya = open_checkpoint(files / "timohavdk_new.safetensors")  # kohya-like: lora_unet_unet_down_blocks_…
    diffusers_file = files / "timohavdk_pytorch_lora_weights.safetensors"
    k_mods = {m.name: m for m in kohya.modules}
    d_mods = {m.name: m for m in open_checkpoint(diffusers_file).modules}
    assert len(k_mods) == len(d_mods) == 128 and set(k_mods) == set(d_mods)
    assert all(k_mods[n].shape == d_mods[n].shape for n in d_mods)
    assert not [w for w in kohya.warnings if "flattened" in w["reason"] or "ambiguous" in w["reason"]]
    # The two real files hold different tensors (two checkpoints of one training, not one LoRA twice) ...
    raw_k, source = load_file(str(kohya.path)), load_file(str(diffusers_file))
    name = sorted(d_mods)[0]
    assert not torch.allclose(raw_k[k_mods[name].right.key], source[d_mods[name].right.key], rtol=1e-3)
    # ... so the join of equal updates is shown on a kohya file made from the diffusers one.
    diffusers = lorascope.analyze(diffusers_file)
    made = lorascope.analyze(save_st(tmp_path / "kohya.safetensors", diffusers_to_kohya(source)))
    d_rows, m_rows = diffusers.modules.set_index("name"), made.modules.set_index("name")
    assert set(m_rows.index) == set(d_rows.index) == set(d_mods)
    cols = ["layer", "module", "rows", "cols", "scale"]
    assert (m_rows.loc[d_rows.index, cols] == d_rows[cols]).all().all()
    for name in d_rows.index:
        np.testing.assert_allclose(made.spectrum(name), diffusers.spectrum(name), rtol=1e-6, atol=1e-9)
    for name in list(d_rows.index)[::32]:  # and against float64 s·up@down of the diffusers tensors (s = 1)
        stem = name.removeprefix("unet.")
        up, down = source[f"unet.{stem}.lora.up.weight"], source[f"unet.{stem}.lora.down.weight"]
        want = ref_sigma((up.double() @ down.double()).numpy())
        np.testing.assert_allclose(
            made.spectrum(name), want[: len(made.spectrum(name))], rtol=1e-5, atol=1e-7 * want[0]
        )


def test_the_base_names_decide(tmp_path):
    """A kohya SDXL (sgm-named) module pairs with an sgm-named base by kohya's own stem, and with a
    diffusers-named base by the resolved name; the row takes the base's name either way."""
    g = torch.Generator().manual_seed(0)
    down, up, w = (
        torch.randn(2, 8, generator=g),
        torch.randn(8, 2, generator=g),
        torch.randn(8, 8, generator=g),
    )
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    adapter = save_st(
        tmp_path / "k.safetensors",
        {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(2.0)},
    )
    assert (
        open_checkpoint(adapter).modules[0].name
        == "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    )
    sgm = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    diffusers = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    for base_key in (sgm, diffusers):
        base = save_st(tmp_path / f"{base_key[:5]}.safetensors", {f"{base_key}.weight": w})
        res = lorascope.analyze(base, adapter)
        rows = res.modules.set_index("name")
        assert list(rows.index) == [base_key]
        assert rows.loc[base_key, "base_fro_norm"] == pytest.approx(float(w.double().norm()), rel=1e-6)
        want = ref_sigma((up.double() @ down.double()).numpy())
        np.testing.assert_allclose(res.spectrum(base_key), want[:2], rtol=1e-6)


def test_a_kohya_component_pairs_only_under_its_own_prefixes(tmp_path):
    """lora_te_ names the text encoder: a base weight of the same path under the UNet's prefix is another
    model's weight and pairs with nothing (here nothing pairs at all, so the base is refused)."""
    g = torch.Generator().manual_seed(1)
    stem = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    adapter = save_st(
        tmp_path / "te.safetensors",
        {
            f"{stem}.lora_down.weight": torch.randn(2, 8, generator=g),
            f"{stem}.lora_up.weight": torch.randn(8, 2, generator=g),
        },
    )
    wrong = "model.diffusion_model.text_model.encoder.layers.0.self_attn.q_proj"
    right = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj"
    base = save_st(
        tmp_path / "b.safetensors",
        {f"{wrong}.weight": torch.randn(8, 8, generator=g), "other.weight": torch.randn(8, 8, generator=g)},
    )
    with pytest.raises(lorascope.LorascopeError, match="Is this the adapter's base model"):
        lorascope.analyze(base, adapter)
    base = save_st(tmp_path / "b2.safetensors", {f"{right}.weight": torch.randn(8, 8, generator=g)})
    assert list(lorascope.analyze(base, adapter).modules["name"]) == [right]


def test_a_dotted_component_name_pairs_under_its_components_prefixes(tmp_path):
    """A diffusers pipeline LoRA's 'unet.X' pairs with a bare UNet's 'X' or a single file's
    'model.diffusion_model.X'; ComfyUI's 'diffusion_model.X' likewise; a LyCORIS 'lycoris_X' with the wrapped
    module's 'X'. A base holding two of them pairs nothing and says which."""
    g = torch.Generator().manual_seed(2)
    down, up = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    w = torch.randn(8, 8, generator=g)
    adapters = {
        "unet": save_st(
            tmp_path / "d.safetensors",
            {"unet.blocks.0.q.lora_A.weight": down, "unet.blocks.0.q.lora_B.weight": up},
        ),
        "comfy": save_st(
            tmp_path / "c.safetensors",
            {
                "diffusion_model.blocks.0.q.lora_A.weight": down,
                "diffusion_model.blocks.0.q.lora_B.weight": up,
            },
        ),
        "lycoris": save_st(
            tmp_path / "l.safetensors",
            {"lycoris_blocks_0_q.lora_down.weight": down, "lycoris_blocks_0_q.lora_up.weight": up},
        ),
    }
    for key in ("blocks.0.q", "model.diffusion_model.blocks.0.q"):
        base = save_st(tmp_path / f"{key[:5]}.safetensors", {f"{key}.weight": w})
        for kind, adapter in adapters.items():
            if kind == "lycoris" and key != "blocks.0.q":
                continue  # a LyCORIS network wraps one module: no checkpoint prefix is declared for it
            assert list(lorascope.analyze(base, adapter).modules["name"]) == [key], kind
    both = save_st(
        tmp_path / "both.safetensors",
        {"blocks.0.q.weight": w, "model.diffusion_model.blocks.0.q.weight": w.clone()},
    )
    with pytest.raises(lorascope.LorascopeError, match=r"ambiguous.*blocks\.0\.q"):
        lorascope.analyze(both, adapters["unet"])
