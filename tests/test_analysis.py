"""lorascope.analyze on full fine-tunes built in tmp_path: every column against numpy float64 on the
dense ΔW."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from builders import save_st
from refs import assert_sigma_close, planted, ref_metrics

import lorascope
from lorascope.errors import LorascopeError
from lorascope.results import MODULE_COLUMNS

rng = np.random.default_rng(0)


def pair(tmp_path, updates: dict, dtype=torch.float32, extra_base=None, extra_tuned=None):
    """Base weights W and tuned W + ΔW (ΔW given as float64 arrays); returns paths and the stored arrays."""
    base, tuned = {}, {}
    for key, dw in updates.items():
        w = rng.standard_normal(dw.shape)
        base[key] = torch.tensor(w).to(dtype)
        tuned[key] = torch.tensor(w + dw).to(dtype)
    base.update(extra_base or {})
    tuned.update(extra_tuned or {})
    return (
        save_st(tmp_path / "base.safetensors", base),
        save_st(tmp_path / "tuned.safetensors", tuned),
        base,
        tuned,
    )


def stored_delta(base, tuned, key):
    return tuned[key].double().numpy() - base[key].double().numpy()


def test_every_column_matches_numpy_reference(tmp_path):
    updates = {
        # planted rank 4 plus small noise: gd_rank is well defined (4) rather than decided by rounding
        "model.layers.0.self_attn.q_proj.weight": planted(48, 32, [10, 5, 2, 1], seed=1)
        + 1e-3 * rng.standard_normal((48, 32)),
        "model.layers.1.mlp.down_proj.weight": planted(32, 64, np.geomspace(3, 0.01, 20), seed=2),
        "model.layers.1.mlp.up_proj.weight": rng.standard_normal((64, 32)) * 0.1,
    }
    b, t, base, tuned = pair(tmp_path, updates, torch.float64)
    res = lorascope.analyze(b, t, precision="float64")
    rows = res.modules.set_index("name")
    assert list(res.modules.columns[: len(MODULE_COLUMNS)]) == MODULE_COLUMNS
    for key in updates:
        name = key.removesuffix(".weight")
        dw = stored_delta(base, tuned, key)
        ref = ref_metrics(dw, base[key].numpy())
        for col, want in ref.items():
            assert rows.loc[name, col] == pytest.approx(want, rel=1e-9), (name, col)
        assert rows.loc[name, "method"] == "exact" and rows.loc[name, "source"] == "dense"
        assert (rows.loc[name, "rows"], rows.loc[name, "cols"]) == dw.shape
        assert rows.loc[name, "n_singular"] == min(dw.shape)
    q = rows.loc["model.layers.0.self_attn.q_proj"]
    assert (q["layer"], q["module"]) == (0, "self_attn.q_proj")
    assert (q["rank_90"], q["gd_rank"]) == (2, 4)  # energies 100/130 = .77, 125/130 = .96


def test_float32_default_is_accurate_for_the_planted_values(tmp_path):
    sig = [10.0, 5.0, 2.0, 1.0]
    b, t, base, tuned = pair(tmp_path, {"l.0.w.weight": planted(64, 64, sig, seed=3)})
    res = lorascope.analyze(b, t)
    assert_sigma_close(res.spectrum("l.0.w")[:4], sig, rtol=1e-5)
    assert (res.modules["rank_90"].iloc[0], res.modules["rank_99"].iloc[0]) == (2, 3)  # 125/130, 129/130


def test_gaussian_update_reproduces_sanity_values(tmp_path):
    n = 256
    b, t, *_ = pair(tmp_path, {"layers.0.x.weight": rng.standard_normal((n, n))})
    row = lorascope.analyze(b, t).modules.iloc[0]
    assert row["rank_90"] / n == pytest.approx(0.51, abs=0.02)
    assert row["entropy_rank"] / n == pytest.approx(0.805, abs=0.01)
    assert row["stable_rank"] / n == pytest.approx(0.25, abs=0.04)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoints_are_upcast_before_subtracting(tmp_path, dtype):
    b, t, base, tuned = pair(tmp_path, {"layers.0.x.weight": planted(40, 30, [8, 4, 2], seed=5)}, dtype)
    res = lorascope.analyze(b, t)
    ref = ref_metrics(stored_delta(base, tuned, "layers.0.x.weight"))
    assert res.modules["fro_norm"].iloc[0] == pytest.approx(ref["fro_norm"], rel=1e-6)
    assert_sigma_close(
        res.spectrum("layers.0.x"),
        np.linalg.svd(stored_delta(base, tuned, "layers.0.x.weight"), compute_uv=False),
        rtol=1e-5,
        atol_rel=1e-6,
    )


def test_top_k_randomized_never_reports_a_wrong_rank(tmp_path):
    flat = np.ones(60)  # energy spread evenly: rank_90 = 54 lies beyond k = 10
    steep = np.concatenate([[100.0, 50.0], np.full(58, 0.01)])
    b, t, base, tuned = pair(
        tmp_path,
        {
            "layers.0.flat.weight": planted(80, 60, flat, 1),
            "layers.0.steep.weight": planted(80, 60, steep, 2),
        },
        torch.float64,
    )
    res = lorascope.analyze(b, t, top_k=10, precision="float64")
    rows = res.modules.set_index("name")
    f, s = rows.loc["layers.0.flat"], rows.loc["layers.0.steep"]
    assert f["method"] == "randomized" and f["n_singular"] == 10
    assert pd.isna(f["rank_90"]) and bool(f["rank_beyond_k"]) and pd.isna(f["entropy_rank"])
    assert f["fro_norm"] == pytest.approx(np.sqrt(60), rel=1e-9)  # exact from the entries
    assert (s["rank_90"], s["rank_99"]) == (2, 2) and not bool(s["rank_beyond_k"])
    csv = (res.save(tmp_path / "out") / "modules.csv").read_text().splitlines()
    flat_line = next(line for line in csv if line.startswith("layers.0.flat,"))
    assert ",True," in flat_line and ",," in flat_line  # empty cells, flagged


def test_workers_give_identical_results(tmp_path):
    ups = {f"model.layers.{i}.mlp.up_proj.weight": planted(40, 30, [3, 2, 1], seed=i) for i in range(5)}
    b, t, *_ = pair(tmp_path, ups)
    one = lorascope.analyze(b, t).modules
    two = lorascope.analyze(b, t, workers=2).modules
    pd.testing.assert_frame_equal(one, two)


def test_include_exclude_and_bad_regex(tmp_path):
    ups = {f"model.layers.{i}.{m}.weight": planted(20, 20, [1], seed=i) for i in range(2) for m in ("q", "v")}
    b, t, *_ = pair(tmp_path, ups)
    names = set(lorascope.analyze(b, t, include=r"\.q$").modules["name"])
    assert names == {"model.layers.0.q", "model.layers.1.q"}
    names = set(lorascope.analyze(b, t, exclude=r"layers\.0\.").modules["name"])
    assert names == {"model.layers.1.q", "model.layers.1.v"}
    with pytest.raises(LorascopeError, match="not a valid regular expression"):
        lorascope.analyze(b, t, include="(")
    with pytest.raises(LorascopeError, match="no module name passes"):
        lorascope.analyze(b, t, include="nothing-matches")


def test_pairing_tolerates_prefixes_and_records_unpaired_and_vectors(tmp_path):
    w = rng.standard_normal((16, 12))
    base = {
        "layers.0.q.weight": torch.tensor(w).float(),
        "layers.0.norm.weight": torch.ones(12),
        "only_base.weight": torch.ones(3, 3),
    }
    tuned = {
        "model.layers.0.q.weight": torch.tensor(w + planted(16, 12, [2, 1], 0)).float(),
        "model.layers.0.norm.weight": torch.full((12,), 1.5),
        "model.extra.weight": torch.ones(2, 2),
    }
    b = save_st(tmp_path / "b.safetensors", base)
    t = save_st(tmp_path / "t.safetensors", tuned)
    res = lorascope.analyze(b, t)
    assert list(res.modules["name"]) == ["model.layers.0.q"]
    reasons = {w["name"]: w["reason"] for w in res.summary["warnings"]}
    assert (
        "only in the tuned" in reasons["model.extra.weight"]
        and "only in the base" in reasons["only_base.weight"]
    )
    v = res.vectors.set_index("name").loc["model.layers.0.norm"]
    assert v["fro_norm"] == pytest.approx(0.5 * np.sqrt(12)) and v["relative_update"] == pytest.approx(0.5)


def test_added_vocabulary_rows_are_analyzed_on_the_common_rows(tmp_path):
    w = rng.standard_normal((50, 16))
    dw = planted(50, 16, [4, 2], 1)
    b = save_st(tmp_path / "b.safetensors", {"model.embed_tokens.weight": torch.tensor(w).float()})
    t = save_st(
        tmp_path / "t.safetensors",
        {"model.embed_tokens.weight": torch.tensor(np.vstack([w + dw, np.ones((3, 16))])).float()},
    )
    res = lorascope.analyze(b, t)
    row = res.modules.iloc[0]
    assert (row["rows"], row["cols"], row["added_rows"]) == (50, 16, 3)
    assert_sigma_close(res.spectrum("model.embed_tokens")[:2], [4, 2], rtol=1e-5)
    assert any("3 rows added" in w["reason"] for w in res.summary["warnings"])


def test_shape_mismatch_lists_every_key(tmp_path):
    b = save_st(
        tmp_path / "b.safetensors",
        {"a.weight": torch.ones(4, 4), "b.weight": torch.ones(4, 4), "c.weight": torch.ones(2, 2)},
    )
    t = save_st(
        tmp_path / "t.safetensors",
        {"a.weight": torch.ones(4, 5), "b.weight": torch.ones(5, 4), "c.weight": torch.ones(2, 2)},
    )
    with pytest.raises(LorascopeError) as err:
        lorascope.analyze(b, t)
    assert "a.weight: base [4, 4] vs tuned [4, 5]" in str(err.value) and "b.weight" in str(err.value)


def test_conv_expert_stack_and_gpt2_conv1d_layouts(tmp_path):
    conv_dw = rng.standard_normal((8, 4, 3, 3))
    experts_dw = np.stack([planted(6, 5, [e + 1.0], e) for e in range(3)])
    b, t, base, tuned = pair(
        tmp_path, {"down.0.conv.weight": conv_dw, "model.layers.0.mlp.experts.w1": experts_dw}
    )
    rows = lorascope.analyze(b, t).modules.set_index("name")
    assert (rows.loc["down.0.conv", "rows"], rows.loc["down.0.conv", "cols"]) == (8, 36)
    for e in range(3):
        assert rows.loc[f"model.layers.0.mlp.experts.w1.{e}", "spectral_norm"] == pytest.approx(
            e + 1.0, rel=1e-5
        )
    # GPT-2 Conv1D (in, out) is reported as (out, in) when the config says gpt2
    for side in ("b", "t"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    w = torch.randn(24, 72)
    save_st(tmp_path / "b" / "model.safetensors", {"h.0.attn.c_attn.weight": w})
    save_st(tmp_path / "t" / "model.safetensors", {"h.0.attn.c_attn.weight": w + torch.randn(24, 72)})
    row = lorascope.analyze(tmp_path / "b", tmp_path / "t").modules.iloc[0]
    assert (row["rows"], row["cols"], row["layer"], row["module"]) == (72, 24, 0, "attn.c_attn")


def test_save_and_load_round_trip(tmp_path):
    b, t, *_ = pair(
        tmp_path,
        {"layers.0.a.weight": planted(20, 10, [3, 1], 1)},
        extra_base={"n.weight": torch.ones(4)},
        extra_tuned={"n.weight": torch.zeros(4)},
    )
    res = lorascope.analyze(b, t)
    out = res.save(tmp_path / "res")
    back = lorascope.load_results(out)
    pd.testing.assert_frame_equal(back.modules, res.modules)
    np.testing.assert_allclose(back.spectrum("layers.0.a"), res.spectrum("layers.0.a"), rtol=1e-7)
    assert back.summary == json.loads((out / "summary.json").read_text())
    assert back.summary["inputs"][0]["sha256"] and back.summary["totals"]["modules"] == 1
    assert len(back.vectors) == 1
    with pytest.raises(LorascopeError, match="not a lorascope results folder"):
        lorascope.load_results(tmp_path)


def test_options_are_validated(tmp_path):
    b, t, *_ = pair(tmp_path, {"x.weight": planted(4, 4, [1], 0)})
    with pytest.raises(LorascopeError, match="precision"):
        lorascope.analyze(b, t, precision="float16")
    with pytest.raises(LorascopeError, match="top_k"):
        lorascope.analyze(b, t, top_k=0)
    with pytest.raises(LorascopeError, match="first of two inputs must be the base"):
        adapter = save_st(
            tmp_path / "ad.safetensors",
            {"m.lora_A.weight": torch.ones(1, 4), "m.lora_B.weight": torch.ones(4, 1)},
        )
        lorascope.analyze(adapter, t)


def test_zero_updates_are_metrics_of_zero_and_one_warning(tmp_path):
    g = torch.Generator().manual_seed(3)
    base = {f"layers.{i}.w.weight": torch.randn(12, 8, generator=g) for i in range(4)}
    b = save_st(tmp_path / "b.safetensors", base)
    same = lorascope.analyze(
        b, save_st(tmp_path / "same.safetensors", {k: v.clone() for k, v in base.items()})
    )
    assert (same.modules[["fro_norm", "entropy_rank", "rank_90", "stable_rank", "gd_rank"]] == 0).all().all()
    [w] = same.summary["warnings"]
    assert "every one of the 4 modules" in w["reason"] and "same weights" in w["reason"]

    tuned = {
        k: v + (i % 2) * torch.tensor(planted(12, 8, [1.0, 0.5], seed=i)).float()
        for i, (k, v) in enumerate(base.items())
    }
    part = lorascope.analyze(b, save_st(tmp_path / "t.safetensors", tuned))
    assert part.modules.set_index("name")["rank_90"].to_dict() == {
        "layers.0.w": 0,
        "layers.1.w": 2,
        "layers.2.w": 0,
        "layers.3.w": 2,
    }
    [w] = part.summary["warnings"]
    assert "zero in 2 of 4 modules" in w["reason"] and "layers.0.w, layers.2.w" in w["reason"]
    assert part.summary["totals"]["skipped"] == 0  # a zero update is analyzed, not skipped

    from builders import peft_folder

    untrained = {
        f"model.layers.{i}.self_attn.q_proj.{f}.weight": (
            torch.randn(4, 8, generator=g) if f == "lora_A" else torch.zeros(8, 4)
        )
        for i in range(2)
        for f in ("lora_A", "lora_B")
    }
    ad = lorascope.analyze(peft_folder(tmp_path / "untrained", untrained, {"r": 4, "lora_alpha": 8}))
    [w] = ad.summary["warnings"]
    assert (
        "every one of the 2 adapter modules" in w["reason"]
        and "lora_B (up) factors are all zeros" in w["reason"]
    )


def test_results_of_other_inputs_drop_the_tables_computed_from_the_old_ones(tmp_path):
    from lorascope.compare.results import SUMMARY_JSON, TABLES
    from lorascope.rank import folders
    from lorascope.results import DERIVED_FILES

    written = {getattr(folders, n) for n in dir(folders) if n.endswith(("_CSV", "_JSON"))} - {
        "modules.csv",
        "summary.json",
    }
    assert written | set(TABLES.values()) | {SUMMARY_JSON} <= set(DERIVED_FILES)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = pair(tmp_path / "a", {"model.layers.0.mlp.up_proj.weight": planted(12, 8, [2.0, 1.0], seed=1)})
    other = pair(tmp_path / "b", {"model.layers.0.mlp.up_proj.weight": planted(12, 8, [3.0], seed=2)})
    from lorascope.outputs import writing

    out = lorascope.analyze(*first[:2]).save(tmp_path / "res")
    with writing(out, "sweep", mode="update") as tx:  # a sweep table, as lorascope writes one
        (tx.stage / "sweep.csv").write_text("k\n1\n")
    (out / "notes.txt").write_text("mine")
    (out / "sweep_uniform.csv").write_text("the user's own table")  # not lorascope's: never dropped
    lorascope.analyze(*first[:2]).save(out)  # the same analysis again: its sweep still applies
    assert (out / "sweep.csv").is_file()
    lorascope.analyze(*other[:2]).save(out)
    assert not (out / "sweep.csv").exists() and (out / "notes.txt").read_text() == "mine"
    assert (out / "sweep_uniform.csv").read_text() == "the user's own table"
