"""The streaming driver: module pairing across inputs, every table against numpy references, clear errors."""

import numpy as np
import pandas as pd
import pytest

from lorascope.compare import TABLES, compare, intruders, load_compare
from lorascope.errors import LorascopeError


def ref_phi_all(dx, dy, cap=64):
    ux = np.linalg.svd(dx)[0][:, : min(np.linalg.matrix_rank(dx), cap)]
    uy = np.linalg.svd(dy)[0][:, : min(np.linalg.matrix_rank(dy), cap)]
    return np.linalg.norm(ux.T @ uy) ** 2 / min(ux.shape[1], uy.shape[1])


def ref_intruder_max_cos(w, dw, k=10):
    x = np.linalg.svd(w, full_matrices=False)[0]
    y = np.linalg.svd(w + dw)[0][:, :k]
    return np.abs(x.T @ y).max(axis=0)


def test_two_adapters_without_base(tiny):
    a = tiny.adapter("r4", 4, seed=1)
    b = tiny.adapter("r8", 8, seed=2)
    res = compare(a, b)
    mods = res.modules.set_index("name")
    assert len(mods) == 6 and res.summary["labels"] == ["r4", "r8"]
    for name, dx in tiny.deltas["r4"].items():
        dy = tiny.deltas["r8"][name]
        cos = (dx * dy).sum() / (np.linalg.norm(dx) * np.linalg.norm(dy))
        assert mods.loc[name, "cosine"] == pytest.approx(cos, abs=1e-6)
        assert mods.loc[name, "phi_all"] == pytest.approx(ref_phi_all(dx, dy), abs=1e-6)
        assert (mods.loc[name, "k_x"], mods.loc[name, "k_y"]) == (4, 8)
    assert res.amplification is None and res.intruders is None  # both need a base
    grid = res.similarity
    assert set(grid.columns) >= {"name", "layer", "module", "side", "i", "j", "phi", "random"}
    assert len(grid) == 6 * 4 * 8


def test_identical_adapters_with_differing_name_prefixes_give_phi_one(tiny):
    a = tiny.adapter("a", 6, seed=3)
    b = tiny.adapter("b", 6, seed=3, prefix="")  # same factors
    c = tiny.adapter("c", 6, seed=3, prefix="decoder.")  # same factors, a module path no wrapper rule relates
    res = compare(a, b, side="right")  # 'model.' is a wrapper prefix (lorascope.names.WRAPPER_PREFIXES)
    assert len(res.modules) == 6
    np.testing.assert_allclose(res.similarity["phi"], 1.0, atol=1e-9)
    np.testing.assert_allclose(res.modules["cosine"], 1.0, atol=1e-12)
    # paired by declared names only, not suffixes
    with pytest.raises(LorascopeError, match="share no module"):
        compare(a, c, side="right")


def test_adapter_against_full_fine_tune_with_base(tiny):
    base = tiny.base_file()
    lora = tiny.adapter("lora", 4, seed=4)
    full = tiny.full("full", seed=5)
    res = compare(lora, full, base, intruder_k=5)
    mods = res.modules.set_index("name")
    amp = res.amplification.set_index(["name", "update"])
    for name, w in tiny.weights.items():
        dx, dy = tiny.deltas["lora"][name], tiny.deltas["full"][name]
        cos = (dx * dy).sum() / (np.linalg.norm(dx) * np.linalg.norm(dy))
        assert mods.loc[name, "cosine"] == pytest.approx(cos, abs=1e-5)
        # Table 7 on ΔW's top-4 (the dense update takes the LoRA update's rank)
        for label, dw in (("lora", dx), ("full", dy)):
            u, _, vt = np.linalg.svd(dw)
            proj = np.linalg.norm(u[:, :4].T @ w @ vt[:4].T)
            row = amp.loc[(name, label)]
            assert row["rank"] == 4
            assert row["proj_delta"] == pytest.approx(proj, rel=1e-4)
            assert row["amplification"] == pytest.approx(np.linalg.norm(dw) / proj, rel=1e-4)
            assert row["proj_w"] == pytest.approx(
                np.sqrt(np.sum(np.linalg.svd(w, compute_uv=False)[:4] ** 2)), rel=1e-5
            )
            assert row["base_fro_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-6)
        assert mods.loc[name, "amplification_x"] == pytest.approx(amp.loc[(name, "lora"), "amplification"])
    intr = res.intruders
    assert set(intr["update"]) == {"lora", "full"} and len(intr) == 6 * 2 * 5
    for (name, label), g in intr.groupby(["name", "update"]):
        want = ref_intruder_max_cos(tiny.weights[name], tiny.deltas[label][name], 5)
        np.testing.assert_allclose(g.sort_values("j")["max_cos"], want, atol=2e-4)
    counts = res.intruder_modules.set_index(["name", "update"])
    per = intr.groupby(["name", "update"])["intruder"].sum()
    assert (counts["intruders"] == per.reindex(counts.index)).all()
    sweep = res.sweep
    assert len(sweep) == 2 * 17 and (sweep.groupby("update")["intruders"].diff().dropna() >= 0).all()
    assert res.summary["headline"]["updates"]["full"]["intruders"] == int(
        counts.xs("full", level="update")["intruders"].sum()
    )


def test_planted_intruder_shows_in_one_module(tiny):
    """A rank-1 adapter λ·v vᵀ (λ > σ₁) on one square module: an intruder there, none elsewhere."""
    import torch
    from builders import peft_folder

    base = tiny.base_file()
    name = "model.layers.1.self_attn.q_proj"
    v = np.random.default_rng(6).standard_normal(48)
    v /= np.linalg.norm(v)
    lam = 2.5 * np.linalg.svd(tiny.weights[name], compute_uv=False)[0]
    tensors = {
        f"{name}.lora_A.weight": torch.tensor(v[None, :], dtype=torch.float32),
        f"{name}.lora_B.weight": torch.tensor(lam * v[:, None], dtype=torch.float32),
    }
    other = "model.layers.0.self_attn.q_proj"  # a tiny update elsewhere
    tensors[f"{other}.lora_A.weight"] = torch.tensor(v[None, :] * 1e-3, dtype=torch.float32)
    tensors[f"{other}.lora_B.weight"] = torch.tensor(v[:, None] * 1e-3, dtype=torch.float32)
    ad = peft_folder(tiny.root / "planted", tensors, {"r": 1, "lora_alpha": 1, "target_modules": ["q_proj"]})
    res = intruders(base, ad)
    counts = res.intruder_modules.set_index("name")["intruders"]
    assert counts[name] >= 1 and counts[other] == 0
    assert res.intruders.query("name == @name and j == 1")["intruder"].item()
    assert res.summary["kind"] == "intruders" and res.modules is None


def test_full_fine_tune_intruders_and_saved_tables_round_trip(tiny, tmp_path):
    base = tiny.base_file()
    full = tiny.full("full", seed=7)
    res = intruders(base, full, include="q_proj", intruder_k=3, epsilon=0.3)
    assert set(res.intruders["name"]) == {
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    }
    assert (res.intruder_modules["epsilon"] == 0.3).all() and len(res.intruders) == 6
    out = res.save(tmp_path / "out")
    back = load_compare(out)
    pd.testing.assert_frame_equal(back.intruders, res.intruders, check_dtype=False)
    assert back.summary["kind"] == "intruders"
    assert not (out / TABLES["modules"]).exists()


def test_unpaired_modules_are_warned(tiny):
    a = tiny.adapter("a", 4, seed=8)
    b = tiny.adapter("b", 4, seed=9, only="q_proj")
    res = compare(a, b)
    assert sorted(res.modules["module"]) == ["self_attn.q_proj"] * 2
    only_x = {w["name"] for w in res.summary["warnings"] if w["reason"].startswith("only in X")}
    assert only_x == {n for n in tiny.weights if "q_proj" not in n}
    res = compare(b, a, include="layers.0")
    assert res.modules["name"].tolist() == ["model.layers.0.self_attn.q_proj"]
    assert any(w["reason"].startswith("only in Y") for w in res.summary["warnings"])


def test_errors_are_clear(tiny):
    base = tiny.base_file()
    full = tiny.full("full", seed=10)
    lora = tiny.adapter("lora", 4, seed=11)
    with pytest.raises(LorascopeError, match="needs the base model"):
        compare(lora, full)
    with pytest.raises(LorascopeError, match="base must be the model's own weights"):
        compare(lora, lora, base=lora)
    with pytest.raises(LorascopeError, match="unknown option"):
        compare(lora, lora, bogus=1)
    with pytest.raises(LorascopeError, match="side"):
        compare(lora, lora, side="up")
    with pytest.raises(LorascopeError, match="no module name passes"):
        compare(lora, full, base, include="nothing-matches")
