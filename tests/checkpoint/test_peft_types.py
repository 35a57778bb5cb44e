"""Every PEFT type, made by PEFT itself on tiny models: lorascope's singular values and ‖ΔW‖_F against a
float64 numpy SVD of the update PEFT applies (its merge minus the base, or its forward where it cannot
merge), to 1e-5 of σ1; and, with the base, W0 + ΔW against PEFT's merged weight, which a wrong orientation
or axis fails. Needs the `hf` extra."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from refs import assert_sigma_close, ref_sigma

import lorascope
from lorascope.checkpoint import TensorRef, open_checkpoint, open_store
from lorascope.delta import load_form, plan_deltas
from lorascope.errors import LorascopeError

transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

from checkpoint.peft_cases import (  # noqa: E402
    ConvNet,
    make_case,
    matrices,
    save_fused,
    tiny_gpt2,
    tiny_llama,
)

pytestmark = [pytest.mark.hf, pytest.mark.filterwarnings("ignore::UserWarning")]


def check_spectra(res, deltas, families=None):
    """Every σ and ‖ΔW‖_F of every reference module, to 1e-5 of σ1."""
    rows = res.modules.set_index("name")
    checked = 0
    for name, dw in deltas.items():
        for label, matrix in matrices(name, dw):
            assert label in rows.index, f"{label} missing from {list(rows.index)[:6]}"
            want = ref_sigma(matrix)
            assert_sigma_close(res.spectrum(label), want, rtol=0, atol_rel=1e-5)
            assert rows.loc[label, "fro_norm"] == pytest.approx(np.linalg.norm(matrix), rel=1e-5)
            assert sorted((rows.loc[label, "rows"], rows.loc[label, "cols"])) == sorted(matrix.shape)
            checked += 1
    assert checked == len(rows) or families is None or set(rows["family"]) <= set(families)
    if families is not None:
        assert set(rows["family"]) == set(families)
    return checked


def check_merged(case, tmp_path):
    """W0 + ΔW (both as lorascope arranges them) equals PEFT's merged weight arranged the same way."""
    from safetensors.torch import save_file

    merged_file = tmp_path / "merged.safetensors"
    save_file({k: v.clone().contiguous() for k, v in case.merged.items()}, str(merged_file))
    merged = open_store(merged_file)
    plan = plan_deltas(open_checkpoint(case.base), open_checkpoint(case.adapter))
    paired = 0
    for d in plan.deltas:
        if d.base is None:
            continue
        w0 = d.base.load(torch.float64).numpy()
        dw = np.asarray(torch.as_tensor(load_form(d, "float64").to_dense()).double())
        want = (
            TensorRef(merged, d.base.key, d.base.view, d.base.rows, d.base.index).load(torch.float64).numpy()
        )
        np.testing.assert_allclose(w0 + dw, want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=d.name)
        paired += 1
    assert paired == len(plan.deltas)


LLAMA = {
    "loha": (peft.LoHaConfig(r=2, alpha=5, target_modules=["q_proj", "v_proj", "down_proj"]), {}, ["loha"]),
    "loha-patterns": (
        peft.LoHaConfig(
            r=2,
            alpha=4,
            target_modules=["q_proj", "v_proj"],
            rank_pattern={"v_proj": 3},
            alpha_pattern={"q_proj": 9},
        ),
        {},
        ["loha"],
    ),
    "lokr": (
        peft.LoKrConfig(r=2, alpha=4, target_modules=["q_proj", "down_proj"], decompose_both=True),
        {},
        ["lokr"],
    ),
    "lokr-full": (peft.LoKrConfig(r=8, alpha=3, target_modules=["q_proj", "v_proj"]), {}, ["lokr"]),
    "adalora": (
        peft.AdaLoraConfig(
            init_r=4, target_r=2, lora_alpha=8, total_step=10, target_modules=["q_proj", "v_proj"]
        ),
        {},
        ["adalora"],
    ),
    "vera": (peft.VeraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]), {}, ["vera"]),
    "ia3": (
        peft.IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]),
        {"around_one": ("ia3_l",)},
        ["ia3"],
    ),
    "oft": (peft.OFTConfig(oft_block_size=8, target_modules=["q_proj", "v_proj"]), {"scale": 0.1}, ["oft"]),
    "oft-exact-coft": (
        peft.OFTConfig(
            oft_block_size=8, target_modules=["q_proj"], use_cayley_neumann=False, coft=True, eps=0.5
        ),
        {"scale": 0.1},
        ["oft"],
    ),
    "oft-shared-neumann7": (
        peft.OFTConfig(
            r=4,
            oft_block_size=0,
            target_modules=["q_proj", "v_proj"],
            block_share=True,
            num_cayley_neumann_terms=7,
        ),
        {"scale": 0.1},
        ["oft"],
    ),
    "boft": (
        peft.BOFTConfig(boft_block_size=8, target_modules=["q_proj", "v_proj"]),
        {"scale": 0.1, "around_one": ("boft_s",)},
        ["boft"],
    ),
}


@pytest.mark.parametrize("kind", list(LLAMA))
def test_llama_family_with_base_matches_peft(tmp_path, kind):
    config, kwargs, families = LLAMA[kind]
    case = make_case(tmp_path, tiny_llama(), copy.deepcopy(config), **kwargs)
    res = lorascope.analyze(case.base, case.adapter)
    assert check_spectra(res, case.deltas, families) == len(res.modules) >= 2
    assert res.modules["relative_update"].notna().all()
    check_merged(case, tmp_path)
    trainable, _ = case.model.get_nb_trainable_parameters()  # PEFT's own count
    assert res.summary["totals"]["adapter_parameters"] == trainable


@pytest.mark.parametrize("kind", ["loha", "lokr", "adalora"])
def test_base_free_families_alone_match_peft(tmp_path, kind):
    config, kwargs, families = LLAMA[kind]
    case = make_case(tmp_path, tiny_llama(), copy.deepcopy(config), **kwargs)
    res = lorascope.analyze(case.adapter)
    check_spectra(res, case.deltas, families)
    assert set(res.modules["method"]) <= {"factored", "kronecker"}  # never formed densely


@pytest.mark.parametrize("kind", ["vera", "ia3", "oft", "boft"])
def test_families_that_need_the_base_are_refused_alone(tmp_path, kind):
    config, kwargs, _ = LLAMA[kind]
    case = make_case(tmp_path, tiny_llama(), copy.deepcopy(config), **kwargs)
    with pytest.raises(LorascopeError, match="Give BASE ADAPTER"):
        lorascope.analyze(case.adapter)


GPT2 = {
    "adalora": peft.AdaLoraConfig(
        init_r=4,
        target_r=2,
        lora_alpha=8,
        total_step=10,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
    ),
    "vera": peft.VeraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
    "ia3": peft.IA3Config(
        target_modules=["c_attn", "attn.c_proj", "mlp.c_proj"],
        feedforward_modules=["mlp.c_proj"],
        fan_in_fan_out=True,
    ),
}


@pytest.mark.parametrize("kind", list(GPT2))
def test_gpt2_conv1d_square_and_non_square_with_base(tmp_path, kind):
    """c_attn is 24→72, attn.c_proj 24→24 (square), mlp.c_proj 96→24: Conv1D stores each (in, out)."""
    case = make_case(tmp_path, tiny_gpt2(), copy.deepcopy(GPT2[kind]), around_one=("ia3_l",))
    res = lorascope.analyze(case.base, case.adapter)
    check_spectra(res, {n: dw.T for n, dw in case.deltas.items()}, [kind])
    assert {"attn.c_attn", "attn.c_proj", "mlp.c_proj"} <= set(res.modules["module"])
    check_merged(case, tmp_path)  # the square attn.c_proj fails here in the wrong orientation


CONV = {
    "loha-tucker": (
        peft.LoHaConfig(
            r=2, alpha=4, target_modules=["conv", "conv1d", "lin", "point"], use_effective_conv2d=True
        ),
        {},
        ["loha"],
    ),
    "loha-flat": (peft.LoHaConfig(r=2, alpha=4, target_modules=["conv", "conv1d", "lin"]), {}, ["loha"]),
    "lokr-effective": (
        peft.LoKrConfig(
            r=2,
            alpha=4,
            target_modules=["conv", "conv1d", "lin", "wide", "wide1d"],
            use_effective_conv2d=True,
        ),
        {},
        ["lokr"],
    ),  # full W2 (2-, 3-, 4-D), Tucker
    "lokr-flat": (
        peft.LoKrConfig(r=2, alpha=4, target_modules=["wide", "wide1d"], decompose_both=True),
        {},
        ["lokr"],
    ),
    "ia3": (
        peft.IA3Config(target_modules=["conv", "grouped", "lin"], feedforward_modules=["grouped", "lin"]),
        {"around_one": ("ia3_l",)},
        ["ia3"],
    ),
    "oft": (peft.OFTConfig(oft_block_size=4, target_modules=["conv", "lin", "emb"]), {"scale": 0.1}, ["oft"]),
    "boft": (
        peft.BOFTConfig(boft_block_size=4, target_modules=["conv", "lin"]),
        {"scale": 0.1, "around_one": ("boft_s",)},
        ["boft"],
    ),
}


@pytest.mark.parametrize("kind", list(CONV))
def test_conv_and_embedding_layers_with_base(tmp_path, kind):
    config, kwargs, families = CONV[kind]
    case = make_case(tmp_path, ConvNet(), copy.deepcopy(config), **kwargs)
    res = lorascope.analyze(case.base, case.adapter)
    check_spectra(res, case.deltas, families)
    check_merged(case, tmp_path)
    parts = {p for m in open_checkpoint(case.adapter).modules for p in m.parts}
    expected = {
        "loha-tucker": {"hada_t1"},
        "lokr-effective": {"lokr_t2", "lokr_w2"},
        "lokr-flat": {"lokr_w2_b"},
    }
    assert expected.get(kind, set()) <= parts  # the layouts the case is meant to cover


def test_lokr_conv1d_full_factor_is_the_matrix_peft_applies(tmp_path):
    """A Conv1d LoKr with a full 3-D lokr_w2: PEFT's torch.kron interleaves W1 into W2, so its update is a
    permutation of W1 ⊗ W2_flat; the σ agree either way, the matrix (and so every vector) only when exact."""
    case = make_case(tmp_path, ConvNet(), peft.LoKrConfig(r=2, alpha=4, target_modules=["conv1d"]))
    (d,) = plan_deltas(None, open_checkpoint(case.adapter)).deltas
    assert d.parts["lokr_w2"].stored_shape == (3, 2, 3)
    got = np.asarray(load_form(d, "float64").to_dense())
    np.testing.assert_allclose(got, case.deltas["conv1d"].reshape(6, -1), rtol=0, atol=1e-6)
    w1 = d.parts["lokr_w1"].load_numpy()
    w2 = d.parts["lokr_w2"].load_numpy()
    plain = d.module.scale * np.kron(w1, w2.reshape(w2.shape[0], -1))
    assert np.abs(plain - got).max() > 1e-3 * np.abs(got).max()  # the plain Kronecker product is not it


def test_grouped_conv_lora_follows_peft_forward(tmp_path):
    """PEFT cannot merge a LoRA on a grouped conv (its lora_B is grouped): the update is its forward's."""
    case = make_case(
        tmp_path,
        ConvNet(),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["grouped", "conv"]),
        forward_deltas={"grouped": (4, 3, 3), "conv": (4, 3, 3)},
    )
    for res in (lorascope.analyze(case.adapter), lorascope.analyze(case.base, case.adapter)):
        check_spectra(res, case.deltas, ["lora"])
    with_base = lorascope.analyze(case.base, case.adapter)
    assert any("grouped convolution" in w["reason"] for w in with_base.summary["warnings"])
    rows = with_base.modules.set_index("name")
    assert (rows.loc["grouped", "rows"], rows.loc["grouped", "cols"]) == (
        6,
        4 * 9,
    )  # a full conv beside the base


def test_adalora_after_rank_allocation_matches_peft_reload(tmp_path):
    """AdaLoRA's rank_pattern keeps some of init_r ranks per module; PEFT saves the kept triplets and, on
    loading, keeps ranknum = init_r. The reference is PEFT's own reload of the saved adapter, merged."""
    model = tiny_llama()
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    cfg = peft.AdaLoraConfig(
        init_r=6, target_r=2, lora_alpha=7, total_step=10, target_modules=["q_proj", "v_proj"]
    )
    pm = peft.get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    masks = {}
    for i, (name, _) in enumerate(n for n in pm.base_model.model.named_parameters() if "lora_E" in n[0]):
        keep = [(j + i) % 3 != 0 for j in range(6)]
        masks[name.replace(".default", "")] = keep
    masks[next(iter(masks))] = [False] * 6  # one module loses every rank
    pm.peft_config["default"].rank_pattern = masks
    pm.base_model.rankallocator.mask_using_rank_pattern(pm.base_model.model, masks)
    pm.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(
        transformers.LlamaForCausalLM.from_pretrained(base_dir), tmp_path / "adapter"
    ).double()
    base_sd = transformers.LlamaForCausalLM.from_pretrained(base_dir).double().state_dict()
    merged = reloaded.merge_and_unload().state_dict()
    deltas = {
        k.removesuffix(".weight"): (merged[k] - base_sd[k]).numpy()
        for k in base_sd
        if not torch.equal(merged[k], base_sd[k])
    }
    assert len(deltas) == 3
    res = lorascope.analyze(base_dir, tmp_path / "adapter")
    check_spectra(res, deltas, ["adalora"])
    rows = res.modules.set_index("name")
    assert set(rows["lora_rank"]) == {4}  # two of every three ranks kept
    assert rows["scale"].iloc[0] == pytest.approx(7 / (6 + 1e-5))
    zero = [w for w in res.summary["warnings"] if "kept no rank" in w["reason"]]
    assert len(zero) == 1


def test_vera_without_saved_projections_is_refused(tmp_path):
    case = make_case(
        tmp_path, tiny_llama(), peft.VeraConfig(r=4, target_modules=["q_proj"], save_projection=False)
    )
    for args in ((case.adapter,), (case.base, case.adapter)):
        with pytest.raises(LorascopeError, match="save_projection=True"):
            lorascope.analyze(*args)


def test_boft_with_two_butterfly_factors_matches_peft_own_functions(tmp_path):
    """PEFT forces one butterfly factor without its CUDA extension, so two are built here from PEFT's own
    permutation and Cayley functions (BOFTLayer.block_butterfly_perm, perm2mat, cayley_batch) on its layer."""
    case = make_case(
        tmp_path,
        tiny_llama(),
        peft.BOFTConfig(boft_block_size=4, target_modules=["q_proj"]),
        scale=0.1,
        around_one=("boft_s",),
    )
    from safetensors.torch import load_file, save_file

    weights = case.adapter / "adapter_model.safetensors"
    sd = load_file(str(weights))
    layer = case.model.base_model.model.model.layers[0].self_attn.q_proj
    gen = torch.Generator().manual_seed(5)
    for key in [k for k in sd if k.endswith("boft_R")]:
        sd[key] = torch.randn((2, 8, 4, 4), generator=gen) * 0.1  # N = 2 factors of 8 blocks of 4
    save_file(sd, str(weights))
    base_sd = transformers.LlamaForCausalLM.from_pretrained(case.base).double().state_dict()
    deltas = {}
    for key in (k for k in sd if k.endswith("boft_R")):
        name = key.removeprefix("base_model.model.").removesuffix(".boft_R")
        rot, s = sd[key].double(), sd[key.replace("boft_R", "boft_s")].double()
        blocks = layer.cayley_batch(rot.reshape(16, 4, 4)).reshape(2, 8, 4, 4)
        total = torch.eye(32, dtype=torch.float64)
        for i in range(2):
            perm = layer.block_butterfly_perm(32, 8 // 2**i, 2, 1)
            p = layer.perm2mat(perm).double()
            total = p @ torch.block_diag(*blocks[i]) @ p.T @ total  # M = M_1 M_0, M_i = P_i BD_i P_iᵀ
        w0 = base_sd[f"{name}.weight"]
        deltas[name] = ((w0 @ total.T) * s - w0).numpy()  # PEFT's merge: (M W0ᵀ)ᵀ ⊙ s
    res = lorascope.analyze(case.base, case.adapter)
    check_spectra(res, deltas, ["boft"])


# ---- LoRA on fused MoE experts (target_parameters) ------------------------------------------------------


def tiny_qwen_moe():
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        moe_intermediate_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=3,
        num_experts_per_tok=2,
        head_dim=8,
    )
    torch.manual_seed(0)
    return transformers.Qwen3MoeForCausalLM(cfg)


def tiny_gpt_oss():
    """is_transposed experts (E, in, out); down_proj is square (16×16)."""
    cfg = transformers.GptOssConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        num_local_experts=3,
        num_experts_per_tok=2,
        layer_types=["full_attention"],
    )
    torch.manual_seed(0)
    return transformers.GptOssForCausalLM(cfg)


BOTH = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def test_moe_one_parameter_one_factored_lora_per_expert(tmp_path):
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], target_parameters=[BOTH[0]])
    case = make_case(tmp_path, tiny_qwen_moe(), config)
    for res in (lorascope.analyze(case.adapter), lorascope.analyze(case.base, case.adapter)):
        assert check_spectra(res, case.deltas, ["lora", "lora_expert"]) == 4  # q_proj + 3 experts
        experts = res.modules[res.modules["family"] == "lora_expert"]
        assert list(experts["name"]) == [f"model.layers.0.mlp.experts.gate_up_proj.{e}" for e in range(3)]
        assert set(experts["method"]) == {"factored"} and set(experts["lora_rank"]) == {2}


def test_moe_nested_parameters_need_the_base(tmp_path):
    """gate_up_proj and down_proj on one module: PEFT nests them in registration order. Alone: refused. With
    a transformers-saved base (experts kept one by one on disk) the config's model type tells the order."""
    case = make_case(
        tmp_path,
        tiny_qwen_moe(),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=BOTH),
    )
    with pytest.raises(LorascopeError, match="Give BASE ADAPTER"):
        lorascope.analyze(case.adapter)
    res = lorascope.analyze(case.base, case.adapter)
    assert check_spectra(res, case.deltas, ["lora_expert"]) == 6
    assert any("one by one" in w["reason"] for w in res.summary["warnings"])


def test_moe_fused_base_pairs_each_expert_by_shape(tmp_path):
    model = tiny_qwen_moe()
    fused = save_fused(copy.deepcopy(model), tmp_path / "fused")
    case = make_case(
        tmp_path, model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=BOTH)
    )
    res = lorascope.analyze(fused, case.adapter)
    check_spectra(res, case.deltas, ["lora_expert"])
    assert res.modules["relative_update"].notna().all()
    case.base = fused
    check_merged(case, tmp_path)


def test_moe_square_transposed_experts_follow_the_declared_model_type(tmp_path):
    case = make_case(
        tmp_path,
        tiny_gpt_oss(),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=BOTH),
    )
    res = lorascope.analyze(case.base, case.adapter)
    check_spectra(res, case.deltas, ["lora_expert"])
    check_merged(case, tmp_path)  # down_proj is square: only the declared (E, in, out) orientation passes


def test_moe_square_experts_without_a_declaration_are_refused_with_a_base(tmp_path):
    """A base without config.json: square experts cannot be oriented, so pairing is refused; alone is fine."""
    model = tiny_gpt_oss()
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "bare.safetensors"),
    )
    case = make_case(
        tmp_path,
        model,
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=["mlp.experts.down_proj"]),
    )
    with pytest.raises(LorascopeError, match="square experts"):
        lorascope.analyze(tmp_path / "bare.safetensors", case.adapter)
    check_spectra(lorascope.analyze(case.adapter), case.deltas, ["lora_expert"])


def cli_case(tmp_path, kind):
    if kind == "loha":
        return make_case(tmp_path, tiny_llama(), peft.LoHaConfig(r=2, alpha=4, target_modules=["q_proj"]))
    if kind == "oft":
        return make_case(
            tmp_path, tiny_llama(), peft.OFTConfig(oft_block_size=8, target_modules=["q_proj"]), scale=0.1
        )
    model = tiny_qwen_moe()
    fused = save_fused(copy.deepcopy(model), tmp_path / "fused")  # intruders needs the base's expert weights
    case = make_case(
        tmp_path, model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=BOTH)
    )
    case.base = fused
    return case


@pytest.mark.parametrize("kind", ["loha", "oft", "moe"])
def test_every_command_runs_on_peft_families(tmp_path, kind):
    """spectrum, compare, intruders, sweep, select --export (and report once) through the CLI: a factored
    family, a dense one that needs the base, and LoRA on fused experts."""
    from click.testing import CliRunner

    from lorascope.cli import main

    case = cli_case(tmp_path, kind)
    run = CliRunner()
    out = tmp_path / "out"

    def ok(*args):
        result = run.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (args, result.output)

    ok("spectrum", case.base, case.adapter, "--out", out / "spec", "-q", "--no-report")
    ok("compare", case.adapter, case.adapter, "--base", case.base, "--out", out / "cmp", "-q", "--no-report")
    ok("intruders", case.base, case.adapter, "--out", out / "intr", "-q", "--no-report")
    ok("sweep", out / "spec", "--out", out / "sweep", "-q", "--no-report")
    ok(
        "select",
        out / "sweep",
        "--energy",
        "0.9",
        "--export",
        out / "exp",
        "--out",
        out / "sel",
        "-q",
        "--no-report",
    )
    if kind == "moe":
        ok("report", out / "spec")
        assert (out / "spec" / "report.html").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = transformers.AutoModelForCausalLM.from_pretrained(
            case.base if kind != "moe" else tmp_path / "case" / "base"
        )
        peft.PeftModel.from_pretrained(base, out / "exp")  # the export loads
