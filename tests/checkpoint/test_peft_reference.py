"""PEFT itself as the reference: adapters made and merged by PEFT, analyzed by lorascope.

ΔW_ref = (PEFT's merged weight − base weight) in float64; lorascope's singular values of the adapter
(alone, on its base, and the full diff base → merged) must match it. Needs the `hf` extra.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refs import assert_sigma_close, ref_sigma

import lorascope

transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

pytestmark = pytest.mark.hf


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).double()


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=2)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double()


def make(tmp_path, model, lora_kwargs):
    """Save base, wrap with PEFT, randomize the factors, save adapter and merged model; return paths and
    ΔW_ref."""
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.float().save_pretrained(tmp_path / "base")
    model.double()
    cfg = peft.LoraConfig(**lora_kwargs)
    pm = peft.get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=gen, dtype=p.dtype))
    pm.float().save_pretrained(tmp_path / "adapter")
    pm.double()
    merged = pm.merge_and_unload()
    merged_sd = merged.state_dict()
    merged.float().save_pretrained(tmp_path / "merged")
    deltas = {
        k.removesuffix(".weight"): (merged_sd[k].double() - base_sd[k].double()).numpy()
        for k in base_sd
        if k in merged_sd and not torch.equal(merged_sd[k].double(), base_sd[k].double())
    }
    return tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", deltas


def check(results, deltas, transpose_names=(), rtol=1e-5):
    rows = results.modules.set_index("name")
    for name, dw in deltas.items():
        if any(name.endswith(t) for t in transpose_names):
            dw = dw.T  # GPT-2 Conv1D is stored (in, out); ΔW is reported as (out, in)
        assert name in rows.index, f"{name} missing from {list(rows.index)[:5]}"
        want = ref_sigma(dw)
        assert_sigma_close(
            results.spectrum(name), want[: len(results.spectrum(name))], rtol=rtol, atol_rel=1e-6
        )
        assert rows.loc[name, "fro_norm"] == pytest.approx(np.linalg.norm(dw), rel=1e-5)
        assert (rows.loc[name, "rows"], rows.loc[name, "cols"]) == dw.shape


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"use_rslora": True},
        {"rank_pattern": {"layers.1.self_attn.q_proj": 3}, "alpha_pattern": {"v_proj": 40}},
    ],
)
def test_llama_lora_matches_peft_merge(tmp_path, extra):
    base, adapter, merged, deltas = make(
        tmp_path,
        tiny_llama(),
        {"r": 6, "lora_alpha": 12, "target_modules": ["q_proj", "k_proj", "v_proj", "down_proj"], **extra},
    )
    assert len(deltas) == 8
    alone = lorascope.analyze(adapter)
    check(alone, deltas)
    on_base = lorascope.analyze(base, adapter)
    check(on_base, deltas)
    assert on_base.modules["relative_update"].notna().all()
    full = lorascope.analyze(base, merged)
    check(full, deltas, rtol=1e-4)
    # the same names join adapter and full-diff analyses (DESIGN.md 'Names')
    assert set(alone.modules["name"]) <= set(full.modules["name"])
    if "rank_pattern" in extra:
        row = alone.modules.set_index("name").loc["model.layers.1.self_attn.q_proj"]
        assert row["lora_rank"] == 3 and row["scale"] == pytest.approx(12 / 3)
        row = alone.modules.set_index("name").loc["model.layers.0.self_attn.v_proj"]
        assert row["scale"] == pytest.approx(40 / 6)


def test_dora_exact_update_needs_the_base(tmp_path):
    base, adapter, merged, deltas = make(
        tmp_path,
        tiny_llama(),
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": True},
    )
    exact = lorascope.analyze(base, adapter)
    assert set(exact.modules["family"]) == {"dora"} and set(exact.modules["method"]) == {"exact"}
    check(exact, deltas)
    alone = lorascope.analyze(adapter)  # without the base: s·B@A, with a warning saying so
    assert any("DoRA" in w["reason"] for w in alone.summary["warnings"])
    assert set(alone.modules["method"]) == {"factored"}


def test_gpt2_conv1d_fan_in_fan_out(tmp_path):
    base, adapter, merged, deltas = make(
        tmp_path,
        tiny_gpt2(),
        {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True},
    )
    conv1d = ("c_attn", "c_proj")
    check(lorascope.analyze(adapter), deltas, transpose_names=conv1d)
    on_base = lorascope.analyze(base, adapter)
    check(on_base, deltas, transpose_names=conv1d)
    assert {"attn.c_proj", "mlp.c_proj"} <= set(on_base.modules["module"])  # c_proj matched both types
    check(lorascope.analyze(base, merged), deltas, transpose_names=conv1d, rtol=1e-4)


def test_embedding_lora(tmp_path):
    base, adapter, merged, deltas = make(
        tmp_path, tiny_llama(), {"r": 5, "lora_alpha": 5, "target_modules": ["embed_tokens", "o_proj"]}
    )
    assert "model.embed_tokens" in deltas
    check(lorascope.analyze(adapter), deltas)
    check(lorascope.analyze(base, adapter), deltas)


def test_gpt2_dora_on_square_conv1d_layers_uses_the_declared_orientation(tmp_path):
    """attn.c_proj is square (24×24): its base weight must be transposed because the formats declare Conv1D,
    not because the shapes happen to fit. DoRA's update depends on W0's orientation, so a wrong one shows."""
    base, adapter, merged, deltas = make(
        tmp_path,
        tiny_gpt2(),
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["c_attn", "c_proj"],
            "fan_in_fan_out": True,
            "use_dora": True,
        },
    )
    on_base = lorascope.analyze(base, adapter)
    assert set(on_base.modules["family"]) == {"dora"}
    assert {"attn.c_proj", "mlp.c_proj"} <= set(on_base.modules["module"])
    check(on_base, deltas, transpose_names=("c_attn", "c_proj"))


def test_gpt2_amplification_on_a_square_layer_uses_w_as_out_by_in(tmp_path):
    """Table 7's ‖UᵀWV‖_F with W (out, in): on the square attn.c_proj a base used untransposed gives another
    value."""
    base, adapter, merged, deltas = make(
        tmp_path, tiny_gpt2(), {"r": 4, "lora_alpha": 8, "target_modules": ["c_proj"], "fan_in_fan_out": True}
    )
    from lorascope.compare.run import compare

    res = compare(adapter, merged, base, intruders=False)
    amp = res.amplification.set_index(["name", "update"])
    from safetensors.torch import load_file

    sd = load_file(str(base / "model.safetensors"))
    for name in ("transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_proj"):
        dw = deltas[name].T  # (out, in)
        w0 = sd[f"{name}.weight"].double().numpy().T  # Conv1D stores (in, out)
        u, s, vt = np.linalg.svd(dw)
        r = 4
        want = np.linalg.norm(dw) / np.linalg.norm(u[:, :r].T @ w0 @ vt[:r].T)
        got = amp.loc[(name, res.summary["labels"][0]), "amplification"]
        assert got == pytest.approx(want, rel=1e-4)
        wrong = np.linalg.norm(dw) / np.linalg.norm(u[:, :r].T @ w0.T @ vt[:r].T)
        assert abs(wrong - want) > 1e-3 * want  # the test can tell the two orientations apart
