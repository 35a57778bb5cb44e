"""PEFT adapter folders built by hand: PEFT's scale rules (rank_pattern, alpha_pattern, rslora), .bin
weights, errors."""

import json
import math

import pytest
import torch
from builders import peft_folder
from refs import assert_sigma_close, ref_sigma

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.checkpoint.peft import module_scale, pattern_key
from lorascope.errors import LorascopeError

g = torch.Generator().manual_seed(0)


def factors(out, inp, r):
    return torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)


def layers(n=2, r=4, r_by_name=None):
    tensors = {}
    for i in range(n):
        for proj in ("q_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{proj}"
            rr = (r_by_name or {}).get(name, r)
            a, b = factors(12, 10, rr)
            tensors[f"{name}.lora_A.weight"] = a
            tensors[f"{name}.lora_B.weight"] = b
    return tensors


def test_pattern_key_follows_peft():
    pats = {"layers.1.self_attn.q_proj": 2, "v_proj": 3, r"layers\.\d\.mlp.*": 5}
    assert pattern_key(pats, "model.layers.1.self_attn.q_proj") == "layers.1.self_attn.q_proj"
    assert pattern_key(pats, "model.layers.11.self_attn.q_proj") is None  # '.' boundary: 11 is not 1
    assert pattern_key(pats, "model.layers.0.self_attn.v_proj") == "v_proj"
    assert pattern_key(pats, "model.layers.3.mlp.up_proj") == r"layers\.\d\.mlp.*"
    assert pattern_key(pats, "model.layers.0.self_attn.xv_proj") is None


def test_scale_rules():
    cfg = {
        "r": 8,
        "lora_alpha": 16,
        "rank_pattern": {"q_proj": 4},
        "alpha_pattern": {"layers.0.self_attn.q_proj": 2},
    }
    assert module_scale(cfg, "model.layers.0.self_attn.q_proj") == (4, 2.0, 0.5)
    assert module_scale(cfg, "model.layers.1.self_attn.q_proj") == (4, 16.0, 4.0)
    assert module_scale(cfg, "model.layers.1.self_attn.v_proj") == (8, 16.0, 2.0)
    assert module_scale({"r": 16, "lora_alpha": 8, "use_rslora": True}, "x")[2] == pytest.approx(8 / 4)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_rank_and_alpha_patterns_end_to_end(tmp_path, weights):
    q1 = "model.layers.1.self_attn.q_proj"
    tensors = layers(r_by_name={q1: 2})
    cfg = {
        "r": 4,
        "lora_alpha": 8,
        "rank_pattern": {"layers.1.self_attn.q_proj": 2},
        "alpha_pattern": {"v_proj": 1},
    }
    res = lorascope.analyze(peft_folder(tmp_path / "ad", tensors, cfg, weights))
    rows = res.modules.set_index("name")
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{proj}"
            r, alpha = (2, 8) if name == q1 else (4, 1 if proj == "v_proj" else 8)
            a, b = tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"]
            assert rows.loc[name, "lora_rank"] == r and rows.loc[name, "scale"] == pytest.approx(alpha / r)
            assert_sigma_close(
                res.spectrum(name), ref_sigma(alpha / r * (b.double() @ a.double()).numpy()), 1e-6, 1e-9
            )
    assert res.summary["inputs"][0]["format"] == "peft" and res.summary["kind"] == "adapter"


def test_rslora_scale(tmp_path):
    tensors = layers(n=1, r=9)
    res = lorascope.analyze(
        peft_folder(tmp_path / "ad", tensors, {"r": 9, "lora_alpha": 6, "use_rslora": True})
    )
    assert set(res.modules["scale"].round(12)) == {round(6 / math.sqrt(9), 12)}


def test_config_rank_differing_from_tensors_is_refused(tmp_path):
    """PEFT builds the layer at the config's r and cannot load rank-4 factors into it: the scale is
    ambiguous."""
    with pytest.raises(
        LorascopeError,
        match="factors have rank 4 but adapter_config.json's r gives r=8.*PEFT cannot load them",
    ):
        lorascope.analyze(peft_folder(tmp_path / "ad", layers(n=1, r=4), {"r": 8, "lora_alpha": 8}))


def test_non_lora_peft_types_fail_naming_the_type(tmp_path):
    d = tmp_path / "ia3"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(LorascopeError, match="PREFIX_TUNING"):
        open_checkpoint(d)


def test_broken_configs_and_missing_weights(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "adapter_config.json").write_text("{not json")
    with pytest.raises(LorascopeError, match="not valid JSON"):
        open_checkpoint(d)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 0}))
    with pytest.raises(LorascopeError, match="'r' must be a positive integer"):
        open_checkpoint(d)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 4}))
    with pytest.raises(LorascopeError, match="no adapter weights"):
        open_checkpoint(d)


def test_module_with_one_factor_is_an_error(tmp_path):
    a, _ = factors(6, 5, 2)
    with pytest.raises(LorascopeError, match="not both LoRA factors"):
        open_checkpoint(peft_folder(tmp_path / "ad", {"model.q.lora_A.weight": a}, {"r": 2}))


def test_modules_to_save_listed_as_skipped_without_base(tmp_path):
    tensors = {**layers(n=1), "classifier.weight": torch.randn(3, 12), "classifier.bias": torch.zeros(3)}
    res = lorascope.analyze(
        peft_folder(tmp_path / "ad", tensors, {"r": 4, "modules_to_save": ["classifier"]})
    )
    reasons = {w["name"]: w["reason"] for w in res.summary["warnings"]}
    assert "modules_to_save" in reasons["classifier"] and "classifier.bias" in reasons
    assert "classifier" not in set(res.modules["name"])


# ---- every peft_type: config checks and what no family claims (hand-built folders) ---------------------


@pytest.mark.parametrize(
    "config, match",
    [
        ({"r": 4, "lora_alpha": float("nan")}, r"not valid JSON \(NaN is not a JSON number\)"),  # strict JSON
        ({"r": 4, "lora_alpha": 0.0}, "'lora_alpha' must be a positive number, found 0.0"),
        ({"r": 4, "lora_alpha": -2}, "'lora_alpha' must be a positive number"),
        ({"r": 4, "rank_pattern": {"q_proj": 0}}, "'rank_pattern' entry 'q_proj' must be a positive integer"),
        (
            {"r": 4, "alpha_pattern": {"q_proj": float("inf")}},
            r"not valid JSON \(Infinity is not a JSON number\)",
        ),
        ({"r": 4, "alpha_pattern": {"q_proj": -1.5}}, "'alpha_pattern' entry 'q_proj'"),
        ({"r": 4, "use_qalora": True}, "use_qalora"),
        ({"r": 4, "kasa_config": {"x": 1}}, "kasa_config"),
        ({"r": 4, "layer_replication": [[0, 1]]}, "layer_replication"),
    ],
)
def test_lora_configs_that_are_not_usable_name_the_key(tmp_path, config, match):
    with pytest.raises(LorascopeError, match=match):
        open_checkpoint(peft_folder(tmp_path / "ad", layers(n=1), config))


@pytest.mark.parametrize(
    "peft_type, config, match",
    [
        ("LOHA", {"r": 2, "alpha": 0}, "'alpha' must be a positive number"),
        ("LOKR", {"r": -1, "alpha": 4}, "'r' must be a positive integer"),
        ("ADALORA", {"init_r": 4, "lora_alpha": 0}, "'lora_alpha'"),
        ("OFT", {"r": 0}, "no 'oft_block_size'"),
    ],
)
def test_other_types_check_their_config(tmp_path, peft_type, config, match):
    with pytest.raises(LorascopeError, match=match):
        tensors = {"m.x.ia3_l": torch.ones(3, 1)}
        open_checkpoint(peft_folder(tmp_path / "ad", tensors, {"peft_type": peft_type, **config}))


def test_a_tensor_of_another_type_is_a_warning_and_an_adapter_of_none_is_refused(tmp_path):
    tensors = {**layers(n=1), "model.layers.0.mlp.down_proj.hada_w1_a": torch.randn(4, 2)}
    adapter = open_checkpoint(peft_folder(tmp_path / "mixed", tensors, {"r": 4}))
    (w,) = [w for w in adapter.warnings if "hada_w1_a" in w["name"]]
    assert "a part of PEFT type LOHA in this LORA adapter" in w["reason"]
    only = {"model.layers.0.mlp.down_proj.hada_w1_a": torch.randn(4, 2)}
    with pytest.raises(LorascopeError, match="holds no LoRA modules.*parts of PEFT type LOHA"):
        open_checkpoint(peft_folder(tmp_path / "none", only, {"r": 4}))


def test_ia3_axis_comes_from_feedforward_modules_and_must_fit_the_stored_shape(tmp_path):
    tensors = {
        "model.layers.0.mlp.down_proj.ia3_l": torch.ones(1, 8),
        "model.layers.0.self_attn.q_proj.ia3_l": torch.ones(6, 1),
    }
    cfg = {
        "peft_type": "IA3",
        "target_modules": ["q_proj", "down_proj"],
        "feedforward_modules": ["down_proj"],
    }
    adapter = open_checkpoint(peft_folder(tmp_path / "ok", tensors, cfg))
    axes = {m.name: m.params["axis"] for m in adapter.modules}
    assert axes == {"model.layers.0.mlp.down_proj": "in", "model.layers.0.self_attn.q_proj": "out"}
    with pytest.raises(LorascopeError, match="feedforward_modules"):
        open_checkpoint(peft_folder(tmp_path / "bad", tensors, {**cfg, "feedforward_modules": []}))
    with pytest.raises(LorascopeError, match="Give BASE ADAPTER"):
        lorascope.analyze(tmp_path / "ok")


def test_vera_without_its_projections_is_refused_naming_the_prng_key(tmp_path):
    tensors = {"model.q_proj.vera_lambda_b": torch.ones(6), "model.q_proj.vera_lambda_d": torch.ones(2)}
    cfg = {"peft_type": "VERA", "r": 2, "save_projection": False, "projection_prng_key": 7}
    with pytest.raises(LorascopeError, match="projection_prng_key=7"):
        open_checkpoint(peft_folder(tmp_path / "v", tensors, cfg))


def test_adalora_ranks_must_match_the_allocation_and_a_stored_ranknum_applies(tmp_path):
    a, b, e = torch.randn(2, 5), torch.randn(6, 2), torch.randn(2, 1)
    tensors = {
        "model.q.lora_A": a,
        "model.q.lora_B": b,
        "model.q.lora_E": e,
        "model.q.ranknum": torch.tensor([3.0]),
    }
    cfg = {"peft_type": "ADALORA", "init_r": 4, "lora_alpha": 6}
    adapter = open_checkpoint(peft_folder(tmp_path / "ok", tensors, cfg))
    (m,) = adapter.modules
    assert m.scale == pytest.approx(6 / (3 + 1e-5)) and m.rank == 2
    res = lorascope.analyze(tmp_path / "ok")
    want = ref_sigma(m.scale * (b.double() @ (a.double() * e.double())).numpy())
    assert_sigma_close(res.spectrum("model.q"), want, rtol=1e-9, atol_rel=1e-12)
    masks = {"model.q.lora_E": [True, False, False, True, True, False]}
    with pytest.raises(LorascopeError, match="rank_pattern keeps 3 ranks but the tensors have 2"):
        open_checkpoint(peft_folder(tmp_path / "bad", tensors, {**cfg, "rank_pattern": masks}))


def test_target_parameters_factors_must_chain_per_expert(tmp_path):
    tensors = {
        "model.experts.lora_A.weight": torch.randn(5, 4),
        "model.experts.lora_B.weight": torch.randn(6, 5),
    }
    cfg = {"r": 2, "target_modules": [], "target_parameters": ["experts.w"]}
    with pytest.raises(LorascopeError, match=r"not \(E·r, in\) and \(out, r·E\) for r=2"):
        open_checkpoint(peft_folder(tmp_path / "ad", tensors, cfg))
    ok = {"model.experts.lora_A.weight": torch.randn(6, 4), "model.experts.lora_B.weight": torch.randn(5, 6)}
    adapter = open_checkpoint(peft_folder(tmp_path / "ok", ok, cfg))
    assert [m.name for m in adapter.modules] == [f"model.experts.w.{e}" for e in range(3)]
    assert {m.family for m in adapter.modules} == {"lora_expert"} and adapter.modules[0].shape == (5, 4)
