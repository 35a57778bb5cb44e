"""Exported adapters read back by lorascope: ΔW per module equals the numpy truncation, errors equal
sqrt(1 − energy)."""

import json

import numpy as np
import pytest
import torch
from builders import save_st
from rank.planting import adapter, full_finetune, truncate
from refs import planted

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.peft import module_scale
from lorascope.errors import LorascopeError
from lorascope.rank import Policy, run_select
from lorascope.rank.export import adapter_config, pattern_problems, rank_patterns, target_problems

ROUND_TRIP = 1e-5  # relative Frobenius difference allowed between the exported and the reference truncation


def exported_updates(folder) -> dict[str, np.ndarray]:
    """ΔW of every module of an adapter folder as lorascope reads it: s · left @ right, float64."""
    ad = open_checkpoint(folder)
    return {m.name: m.scale * (m.left.load_numpy() @ m.right.load_numpy()) for m in ad.modules}


def check_round_trip(out, refs, table):
    """Each exported module against the numpy truncation of its reference ΔW at the selected rank."""
    got = exported_updates(out.export.path)
    exported = out.export.table.set_index("name")
    worst = 0.0
    for row in table.itertuples():
        if row.rank == 0:
            assert row.name not in got and not exported.loc[row.name, "exported"]
            continue
        dw = refs[row.name]
        want = truncate(dw, row.rank)
        diff = np.linalg.norm(got[row.name] - want) / np.linalg.norm(want)
        worst = max(worst, diff)
        assert diff <= ROUND_TRIP, (row.name, diff)
        # the measured error of the exported module is the sweep's sqrt(1 − energy(k))
        measured = np.linalg.norm(dw - got[row.name]) / np.linalg.norm(dw)
        assert measured == pytest.approx(row.rel_error, rel=1e-4, abs=1e-6), row.name
        assert exported.loc[row.name, "rel_error"] == pytest.approx(measured, rel=1e-4, abs=1e-6)
    return worst


def test_adapter_resize_round_trip(tmp_path):
    # 12 layers, so model.layers.1.* and model.layers.11.* both exist and must not share a pattern key
    shapes, sigmas = {}, {}
    for i in range(12):
        for j, proj in enumerate(("q_proj", "v_proj")):
            name = f"model.layers.{i}.self_attn.{proj}"
            shapes[name] = (48, 32) if proj == "q_proj" else (16, 32)
            sigmas[name] = list(np.geomspace(5, 5 * 0.5 ** (i % 6 + 1), 8)) if i != 3 else [2.0]
    source_cfg = {
        "r": 8,
        "lora_alpha": 16,
        "use_rslora": True,
        "rank_pattern": {"layers.3.self_attn.q_proj": 1, "layers.3.self_attn.v_proj": 1},
    }
    ad, refs = adapter(tmp_path, shapes, sigmas, source_cfg)
    results = lorascope.analyze(ad).save(tmp_path / "results")
    out = run_select([results], tmp_path / "sel", Policy("energy", energy=0.9), export=tmp_path / "small")
    table = out.selection.table
    assert table["rank"].nunique() > 2  # the ranks differ by module
    worst = check_round_trip(out, refs, table)
    assert worst < ROUND_TRIP
    cfg = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == int(table["rank"].max())
    assert not cfg["use_rslora"] and cfg["target_modules"] == sorted(table["name"])
    for name, r in zip(table["name"], table["rank"]):
        assert module_scale(cfg, name) == (r, float(r), 1.0)  # PEFT's first-key-wins pattern rules
    assert {"model.layers.1.self_attn.q_proj", "model.layers.11.self_attn.q_proj"} <= set(
        cfg["target_modules"]
    )
    saved = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert saved["export"]["modules"] == len(table) and saved["export"]["not_exported"] == []


@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_full_finetune_extraction_round_trip(tmp_path, svd):
    from lorascope.rank.export import ExportOptions
    from lorascope.rank.truncate import TruncateOptions

    deltas = {
        f"model.layers.{i}.mlp.{p}": planted(60, 40, np.geomspace(2, 2e-3, 40) * (i + 1), seed=10 * i + j)
        for i in range(2)
        for j, p in enumerate(("up_proj", "down_proj"))
    }
    base, tuned, refs = full_finetune(tmp_path, deltas)
    out = run_select(
        [base, tuned],
        tmp_path / "sel",
        Policy("budget", budget=1500),
        export=tmp_path / "extracted",
        export_options=ExportOptions(truncate=TruncateOptions(svd=svd)),
    )
    table = out.selection.table
    assert 0 < table["rank"].max() < 40 and out.selection.totals["params"] <= 1500
    check_round_trip(out, refs, table)
    methods = set(out.export.exported["method"])
    assert methods == ({"randomized"} if svd == "randomized" else {"exact"})


def test_conv1d_embedding_conv_and_skipped_modules(tmp_path):
    rng = np.random.default_rng(0)
    tensors_base, tensors_tuned, refs = {}, {}, {}

    def put(key, w0, dw_stored):
        tensors_base[key] = torch.tensor(w0, dtype=torch.float32)
        tensors_tuned[key] = torch.tensor(w0 + dw_stored, dtype=torch.float32)
        return tensors_tuned[key].double().numpy() - tensors_base[key].double().numpy()

    conv1d = planted(24, 36, [3, 1, 0.5], seed=1)  # ΔW (out=24, in=36); GPT-2 stores (in, out)
    refs["transformer.h.0.attn.c_attn"] = put(
        "transformer.h.0.attn.c_attn.weight", rng.standard_normal((36, 24)), conv1d.T
    ).T
    emb = planted(50, 16, [2, 1, 0.25], seed=2)  # (vocab, dim)
    refs["transformer.wte"] = put("transformer.wte.weight", rng.standard_normal((50, 16)), emb)
    kernel = planted(8, 4 * 9, [2, 0.5], seed=3).reshape(8, 4, 3, 3)  # (out, in, kh, kw)
    refs["transformer.conv"] = put(
        "transformer.conv.weight", rng.standard_normal((8, 4, 3, 3)), kernel
    ).reshape(8, -1)
    refs["transformer.h.0.mlp.c_fc"] = put(
        "transformer.h.0.mlp.c_fc.weight", rng.standard_normal((24, 24)), planted(24, 24, [1, 0.5], seed=4).T
    ).T
    experts = np.stack([planted(12, 12, [1.0], seed=5 + e) for e in range(2)])
    put("transformer.h.0.moe.experts.weight", rng.standard_normal((2, 12, 12)), experts)
    for name, tensors in (("base", tensors_base), ("tuned", tensors_tuned)):
        save_st(tmp_path / name / "model.safetensors", tensors)
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    results = lorascope.analyze(tmp_path / "base", tmp_path / "tuned")
    assert {"transformer.h.0.moe.experts.0", "transformer.h.0.moe.experts.1"} <= set(results.modules["name"])
    out = run_select(
        [tmp_path / "base", tmp_path / "tuned"],
        tmp_path / "sel",
        Policy("energy", energy=0.7),
        export=tmp_path / "ad",
    )
    t = out.export.table.set_index("name")
    assert (
        t.loc["transformer.h.0.attn.c_attn", "kind"] == "linear"
        and t.loc["transformer.wte", "kind"] == "embedding"
    )
    assert t.loc["transformer.conv", "kind"] == "conv"
    assert not t.loc["transformer.h.0.moe.experts.0", "exported"]
    assert "expert" in t.loc["transformer.h.0.moe.experts.0", "reason"]
    cfg = out.export.config
    assert cfg["fan_in_fan_out"] is True
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ad" / "adapter_model.safetensors"), "np") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    r_emb, r_conv = int(t.loc["transformer.wte", "rank"]), int(t.loc["transformer.conv", "rank"])
    assert shapes["base_model.model.transformer.wte.lora_embedding_A"] == [r_emb, 50]
    assert shapes["base_model.model.transformer.wte.lora_embedding_B"] == [16, r_emb]
    assert shapes["base_model.model.transformer.conv.lora_A.weight"] == [r_conv, 4, 3, 3]
    assert shapes["base_model.model.transformer.conv.lora_B.weight"] == [8, r_conv, 1, 1]
    assert shapes["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"][1] == 36  # (r, in)
    refs = {k: v for k, v in refs.items()}
    table = out.selection.table[~out.selection.table["name"].str.contains("experts")]
    check_round_trip(out, refs, table)


def test_rank_zero_modules_are_listed_not_exported(tmp_path):
    shapes = {"model.layers.0.self_attn.q_proj": (16, 16), "model.layers.1.self_attn.q_proj": (16, 16)}
    ad, refs = adapter(
        tmp_path,
        shapes,
        {"model.layers.0.self_attn.q_proj": [5, 4, 3], "model.layers.1.self_attn.q_proj": [0.01]},
        {"r": 4, "lora_alpha": 4},
    )
    out = run_select([ad], tmp_path / "sel", Policy("budget", budget=3 * 32), export=tmp_path / "small")
    assert out.selection.ranks() == {
        "model.layers.0.self_attn.q_proj": 3,
        "model.layers.1.self_attn.q_proj": 0,
    }
    assert list(exported_updates(tmp_path / "small")) == ["model.layers.0.self_attn.q_proj"]
    skipped = json.loads((tmp_path / "sel" / "selection.json").read_text())["export"]["not_exported"]
    assert skipped == [{"name": "model.layers.1.self_attn.q_proj", "reason": "rank 0 selected"}]


def test_pattern_keys_select_exactly_their_module():
    ranks = {
        "lm_head": 2,
        "model.lm_head": 8,
        "model.layers.1.mlp.up_proj": 3,
        "model.layers.11.mlp.up_proj": 8,
        "layers.1.mlp.up_proj": 8,
    }
    # plain keys for the non-default ranks would let 'lm_head' also match 'model.lm_head' (default r = 8) and
    # 'model.layers.1.mlp.up_proj' … no: but 'lm_head' must not decide 'model.lm_head'
    plain = {
        "r": 8,
        "lora_alpha": 8,
        "rank_pattern": rank_patterns(ranks, 8),
        "alpha_pattern": rank_patterns(ranks, 8),
    }
    assert pattern_problems(plain, ranks)  # the naive form is wrong here: model.lm_head resolves to r=2
    cfg = adapter_config(ranks, fan_in_fan_out=False)
    assert pattern_problems(cfg, ranks) == []
    assert list(cfg["rank_pattern"])[0] == "model.layers.11.mlp.up_proj"  # longest first
    for name, r in ranks.items():
        assert module_scale(cfg, name) == (r, float(r), 1.0)


def test_target_modules_fall_back_to_a_regex_when_a_name_is_a_suffix(tmp_path):
    assert target_problems(["lm_head"], ["lm_head"], ["lm_head", "vision.lm_head", "q"]) == ["vision.lm_head"]
    rng = np.random.default_rng(1)
    base = {
        "lm_head.weight": torch.tensor(rng.standard_normal((8, 8)), dtype=torch.float32),
        "vision.lm_head.weight": torch.tensor(rng.standard_normal((8, 8)), dtype=torch.float32),
    }
    tuned = dict(base)
    tuned["lm_head.weight"] = base["lm_head.weight"] + torch.tensor(
        planted(8, 8, [1.0], seed=1), dtype=torch.float32
    )
    save_st(tmp_path / "b" / "model.safetensors", base)
    save_st(tmp_path / "t" / "model.safetensors", tuned)
    out = run_select(
        [tmp_path / "b", tmp_path / "t"],
        tmp_path / "sel",
        Policy("energy", energy=0.9),
        export=tmp_path / "ad",
        include="^lm_head$",
    )
    import re

    target = out.export.config["target_modules"]
    assert (
        isinstance(target, str)
        and re.fullmatch(target, "lm_head")
        and not re.fullmatch(target, "vision.lm_head")
    )


def test_export_refuses_a_foreign_folder(tmp_path):
    ad, _ = adapter(
        tmp_path,
        {"model.layers.0.self_attn.q_proj": (8, 8)},
        {"model.layers.0.self_attn.q_proj": [1.0]},
        {"r": 2, "lora_alpha": 2},
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LorascopeError, match="non-empty folder"):
        run_select([ad], tmp_path / "sel", Policy("energy"), export=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_export_never_overwrites_an_input_or_a_foreign_adapter(tmp_path):
    ad, _ = adapter(
        tmp_path,
        {"model.layers.0.self_attn.q_proj": (8, 8)},
        {"model.layers.0.self_attn.q_proj": [2.0, 1.0]},
        {"r": 2, "lora_alpha": 2},
    )
    before = {p.name: p.read_bytes() for p in ad.iterdir()}
    with pytest.raises(LorascopeError, match="is or holds the input"):
        run_select([ad], tmp_path / "sel", Policy("energy"), export=ad)
    with pytest.raises(LorascopeError, match="is or holds the input"):
        run_select([ad], tmp_path / "sel", Policy("energy"), export=ad.parent)
    # a copy of the adapter somewhere else was not written by an export: refused as well
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name, data in before.items():
        (foreign / name).write_bytes(data)
    with pytest.raises(LorascopeError, match="does not hold an adapter lorascope exported"):
        run_select([ad], tmp_path / "sel", Policy("energy"), export=foreign)
    assert {p.name: p.read_bytes() for p in ad.iterdir()} == before
    assert {p.name: p.read_bytes() for p in foreign.iterdir()} == before
    # a folder an earlier export wrote is replaced
    first = run_select([ad], tmp_path / "sel", Policy("energy", energy=0.99), export=tmp_path / "small")
    assert first.export.config["r"] == 2
    again = run_select([ad], tmp_path / "sel2", Policy("energy", energy=0.5), export=tmp_path / "small")
    assert again.export.config["r"] == 1 and open_checkpoint(tmp_path / "small").modules[0].rank == 1
