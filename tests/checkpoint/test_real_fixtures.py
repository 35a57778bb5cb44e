"""Adapters and LoRA files written by other people's tools (../shared/fixtures/real): each loads, and its
singular values match a dense float64 reference built from the raw tensors; each negative fails cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from refs import assert_sigma_close, ref_sigma

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.cli import main

# The fixtures MANIFEST.md lists; a test for each, skipping with the reason where the folder is absent.
PEFT = [
    "Tashu014+lora-imdb-distilbert",
    "TheSotti+Lightweight-Fine-Tuning-to-FM",
    "abrhaleyarefaine1997+gpt2-tigrinya-lora",
    "anirudh-ak+peft-gpt2",
    "dayanidhi04+emotion-classification-distilbert-lora",
    "sidkris+Parameter-Efficient-Fine-Tuning-with-LoRA",
]
FILES = [
    "catundchat_pytorch_lora_weights.safetensors",
    "cloneofsimo_analog_svd_rank4.safetensors",
    "leighwoods_lora.safetensors",
    "timohavdk_new.safetensors",
    "timohavdk_pytorch_lora_weights.safetensors",
]
NEGATIVE = ["huggingface+peft_mt0-large_IA3", "JamesQFreeman_LoRA-ViT_lora.safetensors"]


def raw_tensors(path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def dense_reference(module, raw, scale):
    """s · up @ down from the raw stored tensors in float64, conv kernels flattened to (out, in·kh·kw)."""
    assert module.kind != "embedding"  # none of the real fixtures has an embedding LoRA
    up = raw[module.left.key].double()
    down = raw[module.right.key].double()
    return scale * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).numpy()


def sample(modules, most=8, big=5_000_000):
    """Evenly spaced modules (all of them when few), at most one whose dense SVD is large: keeps CI fast."""
    step = max(1, len(modules) // most)
    picked, big_seen = [], False
    for m in modules[::step]:
        large = m.shape[0] * m.shape[1] > big
        if large and big_seen:
            continue
        big_seen |= large
        picked.append(m)
    return picked


def check_adapter(path, weight_file, expected_scale):
    ckpt = open_checkpoint(path)
    res = lorascope.analyze(ckpt)
    raw = raw_tensors(weight_file)
    rows = res.modules.set_index("name")
    assert len(rows) == len(ckpt.modules) > 0
    for m in ckpt.modules:
        assert m.scale == pytest.approx(expected_scale(m))
        assert rows.loc[m.name, "n_singular"] == min(m.tensor_rank, *m.shape)
    for m in sample(ckpt.modules):
        want = ref_sigma(dense_reference(m, raw, expected_scale(m)))
        assert_sigma_close(res.spectrum(m.name), want, rtol=1e-5, atol_rel=1e-7)
        assert rows.loc[m.name, "fro_norm"] == pytest.approx(float(np.sqrt((want**2).sum())), rel=1e-6)
    return res


@pytest.mark.parametrize("name", PEFT)
def test_real_peft_adapter(real_fixtures, name):
    folder = real_fixtures / "peft" / name
    cfg = json.loads((folder / "adapter_config.json").read_text())
    weights = next(
        folder / f for f in ("adapter_model.safetensors", "adapter_model.bin") if (folder / f).exists()
    )
    res = check_adapter(folder, weights, lambda m: cfg["lora_alpha"] / cfg["r"])
    assert res.summary["inputs"][0]["format"] == "peft"


@pytest.mark.parametrize("name", FILES)
def test_real_lora_file(real_fixtures, name):
    path = real_fixtures / "lora_files" / name
    res = check_adapter(path, path, lambda m: 1.0)  # none of these files stores an alpha
    assert any("scale" in w["reason"] or "alpha" in w["reason"] for w in res.summary["warnings"])


def test_gpt2_c_proj_target_matches_two_module_types(real_fixtures):
    res = lorascope.analyze(real_fixtures / "peft" / "abrhaleyarefaine1997+gpt2-tigrinya-lora")
    assert {"attn.c_proj", "mlp.c_proj", "attn.c_attn"} == set(res.modules["module"])


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_inputs_fail_cleanly(real_fixtures, name, tmp_path):
    path = real_fixtures / "negative" / name
    assert path.exists(), path  # a missing file would fail for the wrong reason
    result = CliRunner().invoke(main, ["spectrum", str(path), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and str(path.name) in result.output
    assert not (tmp_path / "o").exists()  # nothing written for a failed run


def test_unrelated_pickled_state_dicts_fail_listing_every_mismatch(real_fixtures, tmp_path):
    base = real_fixtures / "negative" / "persimmon_vanilla_model.pt"
    tuned = real_fixtures / "negative" / "persimmon_finetuned_model.pt"
    before = (base.stat().st_mtime_ns, tuned.stat().st_mtime_ns)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorascope.cli",
            "spectrum",
            str(base),
            str(tuned),
            "-q",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for key in ("layer1.0.weight", "layer2.0.weight", "fc1.weight", "fc2.weight"):
        assert key in proc.stderr
    assert (base.stat().st_mtime_ns, tuned.stat().st_mtime_ns) == before  # inputs never written


IA3_REAL = "huggingface+peft_mt0-large_IA3"


def test_real_ia3_adapter_is_read_and_refused_alone_because_it_needs_the_base(real_fixtures, tmp_path):
    """PEFT's mt0-large IA3 example: 192 modules (k, v, wi_1), no feedforward modules: l scales output rows.
    Alone there is no ΔW = (l − 1) ⊙ W0 to take: refused for that reason, not as an unknown type."""
    folder = real_fixtures / "negative" / IA3_REAL
    adapter = open_checkpoint(folder)
    assert len(adapter.modules) == 192 and adapter.families == ["ia3"]
    assert {m.params["axis"] for m in adapter.modules} == {"out"}
    result = CliRunner().invoke(main, ["spectrum", str(folder), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    for words in ("ia3 adapter", "needs the base", "BASE ADAPTER"):
        assert words in result.output


def test_real_ia3_adapter_on_a_stand_in_base_of_mt0_large_shapes(real_fixtures, tmp_path):
    """A stand-in base, not mt0-large: random weights of mt0-large's shapes (d_model 1024, 16 heads × d_kv 64)
    for decoder block 0's cross-attention k only (a module with no encoder twin of the same suffix). It is
    analyzed exactly; the other 191 are skipped with the reason (IA3 needs its base weight)."""
    from safetensors.torch import save_file

    folder = real_fixtures / "negative" / IA3_REAL
    names = ["decoder.block.0.layer.1.EncDecAttention.k"]
    gen = torch.Generator().manual_seed(0)
    base = {f"{n}.weight": torch.randn(1024, 1024, generator=gen) * 0.02 for n in names}
    save_file(base, str(tmp_path / "stand_in.safetensors"))
    res = lorascope.analyze(tmp_path / "stand_in.safetensors", folder)
    assert sorted(res.modules["name"]) == names and set(res.modules["family"]) == {"ia3"}
    skipped = [w for w in res.summary["warnings"] if "needs the base weight" in w["reason"]]
    assert len(skipped) == 191
    raw = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    for n in names:
        l_vec = raw[f"base_model.model.{n}.ia3_l"].double().numpy()  # (1024, 1): a multiplier per output row
        dw = (l_vec - 1) * base[f"{n}.weight"].double().numpy()
        assert_sigma_close(res.spectrum(n), ref_sigma(dw), rtol=0, atol_rel=1e-5)
        assert res.modules.set_index("name").loc[n, "fro_norm"] == pytest.approx(np.linalg.norm(dw), rel=1e-5)
