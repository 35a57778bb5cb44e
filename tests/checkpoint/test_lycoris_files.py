"""LyCORIS files made by the lycoris-lora package itself (LoCon, LoHa, LoKr incl. Tucker cores, full, IA3,
DoRA in both axis conventions), read by lorascope: every singular value against a float64 SVD of the ΔW
LyCORIS's own forward applies (tests/checkpoint/lycoris_nets.py), to 1e-5 of σ1 — in LyCORIS's naming, in
kohya's, and re-keyed under diffusers, ComfyUI and ai-toolkit prefixes."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from builders import save_st
from refs import assert_sigma_close, ref_sigma
from safetensors.torch import load_file

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.lora_files import kohya_name

lycoris_nets = pytest.importorskip(
    "checkpoint.lycoris_nets", reason="needs the lycoris-lora package (test extra)"
)

logging.getLogger("LyCORIS").setLevel(logging.ERROR)

CONFIGS = lycoris_nets.CONFIGS
NEEDS_BASE = {"ia3", "dora"}


def make(tmp_path, config, key_prefix="lycoris"):
    algo, options, family, scale = CONFIGS[config]
    model, net, path, base = lycoris_nets.build(
        tmp_path / config, algo, key_prefix=key_prefix, **dict(options)
    )
    return net, path, base, family, scale


def check_spectra(res, refs, names=None):
    names = names or {n: n for n in refs}
    for ref_name, dw in refs.items():
        assert_sigma_close(res.spectrum(names[ref_name]), ref_sigma(dw), rtol=0, atol_rel=1e-5)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_family_matches_the_lycoris_forward_with_the_base(tmp_path, config):
    net, path, base, family, scale = make(tmp_path, config)
    refs = lycoris_nets.references(net)
    res = lorascope.analyze(base, path)
    rows = res.modules.set_index("name")
    assert sorted(rows.index) == sorted(refs)  # every module, named as the base names it
    assert set(rows["family"]) == {family}
    assert rows.loc["blocks.0.q", "scale"] == pytest.approx(scale)
    check_spectra(res, refs)
    for name, dw in refs.items():  # relative_update from the base weight the file was trained on
        w0 = load_file(str(base))[f"{name}.weight"].double().reshape(dw.shape[0], -1).numpy()
        assert rows.loc[name, "relative_update"] == pytest.approx(
            np.linalg.norm(dw) / np.linalg.norm(w0), rel=1e-5
        )


@pytest.mark.parametrize("config", [c for c, v in CONFIGS.items() if v[2] not in NEEDS_BASE])
def test_base_free_families_alone_in_lycoris_naming(tmp_path, config):
    net, path, _, family, scale = make(tmp_path, config)
    refs = lycoris_nets.references(net)
    res = lorascope.analyze(path)
    names = {n: kohya_name(f"lycoris_{n.replace('.', '_')}") for n in refs}  # 'lycoris_blocks.0.q'
    rows = res.modules.set_index("name")
    assert sorted(rows.index) == sorted(names.values()) and set(rows["source"]) == {"kohya"}
    assert rows.loc[names["blocks.0.q"], "layer"] == 0
    check_spectra(res, refs, names)
    if family == "full":  # LyCORIS diff_b: a 1-D update of its own, recorded without a base
        assert res.vectors is not None and len(res.vectors) == len(refs)


def test_kohya_prefix_from_lycoris_save(tmp_path):
    net, path, base, _, _ = make(tmp_path, "loha-tucker", key_prefix="lora_unet")
    keys = list(load_file(str(path)))
    assert all(k.startswith("lora_unet_blocks_") for k in keys)
    refs = lycoris_nets.references(net, "lora_unet")
    res = lorascope.analyze(path)
    check_spectra(res, refs, {n: "unet_" + n for n in refs})  # kohya_name drops 'lora_', keeps 'unet_'
    check_spectra(lorascope.analyze(base, path), refs)


# every family under every prefix style at least once (all pairs would triple the time for no new path)
REKEYED = [
    ("locon-tucker", "ai-toolkit"),
    ("locon", "diffusers"),
    ("loha-tucker", "comfyui"),
    ("lokr-both", "diffusers"),
    ("lokr-tucker", "comfyui"),
    ("full", "ai-toolkit"),
    ("ia3-in", "comfyui"),
    ("dora-in", "ai-toolkit"),
    ("dokr-out", "diffusers"),
]
SOURCES = {"diffusers": "diffusers", "comfyui": "diffusers", "ai-toolkit": "lora-ab"}


@pytest.mark.parametrize("config,style", REKEYED)
def test_the_same_files_rekeyed_under_other_tools_prefixes(tmp_path, config, style):
    source = SOURCES[style]
    net, path, base, family, _ = make(tmp_path, config)
    refs = lycoris_nets.references(net)
    rekeyed = save_st(tmp_path / f"{style}.safetensors", lycoris_nets.rekey(load_file(str(path)), style))
    ckpt = open_checkpoint(rekeyed)
    head = {"diffusers": "unet.", "comfyui": "diffusion_model.", "ai-toolkit": "transformer."}[style]
    assert sorted(m.name for m in ckpt.modules) == sorted(head + n for n in refs)
    expected_source = (
        source if family in ("lora", "dora") else "diffusers"
    )  # lora_A/B only where LoRA factors are
    assert {m.source for m in ckpt.modules} == {expected_source}
    res = lorascope.analyze(base, rekeyed)  # under their component's declared prefixes
    check_spectra(res, refs)
    assert set(res.modules["family"]) == {family}


def test_dora_without_the_base_is_the_undecomposed_update_with_a_warning(tmp_path):
    net, path, _, _, _ = make(tmp_path, "doha-in")
    res = lorascope.analyze(path)
    assert set(res.modules["family"]) == {"loha"}  # LoHa's own ΔW′ stands in for DoRA over LoHa
    assert any("DoRA" in w["reason"] and "base" in w["reason"] for w in res.summary["warnings"])
    raw = load_file(str(path))
    stem = "lycoris_blocks_0_q"
    w1 = raw[f"{stem}.hada_w1_a"].double() @ raw[f"{stem}.hada_w1_b"].double()
    w2 = raw[f"{stem}.hada_w2_a"].double() @ raw[f"{stem}.hada_w2_b"].double()
    assert_sigma_close(res.spectrum("lycoris_blocks.0.q"), ref_sigma((0.5 * w1 * w2).numpy()), 0, 1e-6)


def test_ia3_needs_the_base_and_says_so(tmp_path):
    _, path, _, _, _ = make(tmp_path, "ia3-in")
    with pytest.raises(lorascope.LorascopeError, match="ia3 adapter.*needs the base"):
        lorascope.analyze(path)


# ---- the real LoKr file --------------------------------------------------------------------------------

REAL_LOKR = "lycoris/lycoris_smart_falcon_4_lokr.safetensors"


def lokr_reference(raw, stem):
    """s · W1 ⊗ W2 in float64 numpy from the file's own factors, s = α / r (r: lokr_w1_b's rows)."""
    w1 = raw[f"{stem}.lokr_w1_a"].double().numpy() @ raw[f"{stem}.lokr_w1_b"].double().numpy()
    w2 = raw[f"{stem}.lokr_w2_a"].double().numpy() @ raw[f"{stem}.lokr_w2_b"].double().numpy()
    scale = float(raw[f"{stem}.alpha"]) / raw[f"{stem}.lokr_w1_b"].shape[0]
    return scale * np.kron(w1, w2)


def dense_sigma(dw):
    """σ of a dense float64 matrix: LAPACK's SVD, or for an elongated one (a UNet conv, 1280 × 23040) the
    square roots of the eigenvalues of its smaller Gram matrix — absolute error ~1e-8·σ1, several times
    cheaper."""
    m, n = dw.shape
    if max(m, n) <= 2 * min(m, n):
        return ref_sigma(dw)
    gram = dw @ dw.T if m < n else dw.T @ dw  # (p, p), p = min(m, n)
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None))


def real_lokr_check(real_fixtures, pick):
    path = real_fixtures / REAL_LOKR
    raw = load_file(str(path))
    res = lorascope.analyze(path)
    stems = sorted({k.split(".")[0] for k in raw})
    rows = res.modules.set_index("name")
    assert len(rows) == len(stems) == 350 and set(rows["family"]) == {"lokr"}
    assert not [w for w in res.summary["warnings"] if "skipped" in w["reason"]]  # every tensor claimed
    for stem in pick(stems):
        dw = lokr_reference(raw, stem)
        name = kohya_name(stem)
        assert (rows.loc[name, "rows"], rows.loc[name, "cols"]) == dw.shape
        assert_sigma_close(res.spectrum(name), dense_sigma(dw), rtol=0, atol_rel=1e-5)
        assert rows.loc[name, "fro_norm"] == pytest.approx(np.linalg.norm(dw), rel=1e-5)
    return res


def test_real_lokr_file_sampled(real_fixtures):
    def pick(stems):  # text-encoder and UNet modules, linear and conv, the largest kept out
        te = [s for s in stems if s.startswith("lora_te_")][::23]
        conv = [s for s in stems if "resnets_0_conv1" in s and "down_blocks_0" in s]
        return te + conv

    real_lokr_check(real_fixtures, pick)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LORASCOPE_SLOW"),
    reason="every module of the real LoKr file (dense float64 "
    "spectra up to 1280 × 23040) takes minutes; set LORASCOPE_SLOW=1 to run it",
)
def test_real_lokr_file_every_module(real_fixtures):
    real_lokr_check(real_fixtures, lambda stems: stems)


# ---- refusals and warnings -----------------------------------------------------------------------------


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("alpha", [-2.0, float("nan"), float("inf")])
def test_alpha_must_be_finite_and_positive(tmp_path, alpha):
    p = save_st(
        tmp_path / "a.safetensors",
        {
            "lora_unet_x.hada_w1_a": rnd(6, 2),
            "lora_unet_x.hada_w1_b": rnd(2, 5),
            "lora_unet_x.hada_w2_a": rnd(6, 2),
            "lora_unet_x.hada_w2_b": rnd(2, 5),
            "lora_unet_x.alpha": torch.tensor(alpha),
        },
    )
    with pytest.raises(lorascope.LorascopeError, match=r"lora_unet_x\.alpha.*finite and positive"):
        open_checkpoint(p)


def test_a_stored_alpha_of_zero_means_alpha_equals_r(tmp_path):
    """sd-scripts' LoRAModule and LyCORIS's modules read alpha 0 (or None) as alpha = r: scale 1."""
    p = save_st(
        tmp_path / "a.safetensors",
        {
            "lora_unet_x.hada_w1_a": rnd(6, 2),
            "lora_unet_x.hada_w1_b": rnd(2, 5),
            "lora_unet_x.hada_w2_a": rnd(6, 2),
            "lora_unet_x.hada_w2_b": rnd(2, 5),
            "lora_unet_x.alpha": torch.tensor(0.0),
        },
    )
    (m,) = open_checkpoint(p).modules
    assert (m.alpha, m.scale) == (2.0, 1.0)


def test_a_tensor_no_family_claims_is_a_warning_and_a_file_of_them_is_refused(tmp_path):
    good = {"lycoris_a.lokr_w1": rnd(2, 3), "lycoris_a.lokr_w2": rnd(4, 5)}
    mixed = save_st(
        tmp_path / "m.safetensors",
        {**good, "lycoris_b.hada_w1_a": rnd(4, 2), "lycoris_c.oft_blocks": rnd(2, 3, 3)},
    )
    ckpt = open_checkpoint(mixed)
    assert [m.name for m in ckpt.modules] == ["lycoris_a"]
    reasons = {w["name"]: w["reason"] for w in ckpt.warnings}
    assert "no update family" in reasons["lycoris_b.hada_w1_a"] and "OFT" in reasons["lycoris_c.oft_blocks"]
    alone = save_st(
        tmp_path / "b.safetensors", {"lycoris_b.hada_w1_a": rnd(4, 2), "lycoris_b.hada_w2_a": rnd(4, 2)}
    )
    with pytest.raises(lorascope.LorascopeError, match="no adapter module lorascope can read.*lycoris_b"):
        open_checkpoint(alone)


def test_parts_that_do_not_fit_are_refused_naming_the_module(tmp_path):
    p = save_st(
        tmp_path / "p.safetensors",
        {"lycoris_x.lokr_w1": rnd(2, 3), "lycoris_x.lokr_w2_a": rnd(4, 2), "lycoris_x.lokr_w2_b": rnd(3, 5)},
    )
    with pytest.raises(lorascope.LorascopeError, match="lycoris_x.*do not chain"):
        open_checkpoint(p)
    ia3 = save_st(
        tmp_path / "i.safetensors", {"lycoris_y.weight": rnd(4), "lycoris_y.on_input": torch.tensor(2.0)}
    )
    with pytest.raises(lorascope.LorascopeError, match="on_input must hold 0 or 1"):
        open_checkpoint(ia3)


# ---- every command on every family ---------------------------------------------------------------------

MIXED = {
    "blocks.0.q": "lokr-both",
    "blocks.0.conv": "loha-tucker",
    "blocks.0.point": "locon",
    "blocks.1.q": "dora-in",
    "blocks.1.conv": "full",
    "blocks.1.point": "ia3-in",
}


def test_every_command_on_a_file_mixing_the_families(tmp_path):
    from lorascope import render_report
    from lorascope.compare import compare, intruders
    from lorascope.rank import Policy, run_select, run_sweep

    path, base, refs = lycoris_nets.mixed(tmp_path / "a", MIXED, net_seed=1)
    other, _, refs_b = lycoris_nets.mixed(tmp_path / "b", MIXED, net_seed=2)
    res = lorascope.analyze(base, path)
    assert dict(zip(res.modules["name"], res.modules["family"])) == {
        "blocks.0.q": "lokr",
        "blocks.0.conv": "loha",
        "blocks.0.point": "lora",
        "blocks.1.q": "dora",
        "blocks.1.conv": "full",
        "blocks.1.point": "ia3",
    }
    check_spectra(res, refs)
    folder = res.save(tmp_path / "spectrum")
    assert render_report(folder).stat().st_size > 0

    cmp = compare(path, other, base=base, labels=("a", "b"))
    cos = dict(zip(cmp.modules["name"], cmp.modules["cosine"]))
    for name, dw in refs.items():
        want = float(np.sum(dw * refs_b[name]) / (np.linalg.norm(dw) * np.linalg.norm(refs_b[name])))
        assert cos[name] == pytest.approx(want, abs=1e-6), name
    intr = intruders(base, path)
    assert set(intr.intruder_modules["name"]) == set(refs)

    sweep = run_sweep([folder], tmp_path / "sweep", ranks=[1, 2])
    rows = sweep.truncation.set_index(["name", "k"])
    for name, dw in refs.items():
        s = ref_sigma(dw)
        assert rows.loc[(name, 1), "energy"] == pytest.approx(s[0] ** 2 / np.sum(s**2), rel=1e-5), name
    sel = run_select([folder], tmp_path / "select", Policy("energy", energy=0.9), export=tmp_path / "peft")
    assert set(sel.export.exported["name"]) == set(refs)


def test_cli_reads_lycoris_files_and_refuses_bad_ones_cleanly(tmp_path):
    from click.testing import CliRunner

    from lorascope.cli import main

    _, path, base, _, _ = make(tmp_path, "dokr-out")
    ok = CliRunner().invoke(
        main, ["spectrum", str(base), str(path), "--out", str(tmp_path / "o"), "-q", "--no-report"]
    )
    assert ok.exit_code == 0, ok.output
    assert lorascope.load_results(tmp_path / "o").modules["family"].tolist() == ["dora"] * 6
    raw = load_file(str(path))
    raw["lycoris_blocks_0_q.alpha"] = torch.tensor(float("nan"))
    bad = save_st(tmp_path / "bad.safetensors", raw)
    res = CliRunner().invoke(main, ["spectrum", str(bad), "--out", str(tmp_path / "b"), "-q"])
    assert res.exit_code == 2 and "lycoris_blocks_0_q.alpha" in res.output and "Traceback" not in res.output
