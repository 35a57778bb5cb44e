"""Device paths: the torch code used on GPUs, exercised on the CPU here, and GPU-vs-CPU equality where a
GPU exists."""

import numpy as np
import pytest
import torch
from builders import peft_folder, save_st
from refs import planted

import lorascope
from lorascope.analysis import Fetched, Options, compute_fetched, fetch, run_local
from lorascope.checkpoint import open_checkpoint
from lorascope.delta import plan_deltas

g = torch.Generator().manual_seed(0)


def adapter(tmp_path):
    t = {}
    for i in range(2):
        t[f"model.layers.{i}.q.lora_A.weight"] = torch.randn(4, 24, generator=g).half()
        t[f"model.layers.{i}.q.lora_B.weight"] = torch.randn(30, 4, generator=g).half()
    return peft_folder(tmp_path / "ad", t, {"r": 4, "lora_alpha": 8})


def test_factored_torch_device_path_equals_numpy_path(tmp_path):
    plan = plan_deltas(None, open_checkpoint(adapter(tmp_path)))
    opts = Options(device="cpu")
    for d in plan.deltas:
        numpy_path = compute_fetched(fetch(d, opts), opts)
        cpu = torch.device("cpu")
        stored = {part: ref.fetch() for part, ref in d.parts.items()}  # as the GPU path reads them
        torch_path = compute_fetched(Fetched(d, cpu, stored), opts)
        np.testing.assert_allclose(torch_path.sigma, numpy_path.sigma, rtol=1e-12)
        assert torch_path.row["fro_norm"] == pytest.approx(numpy_path.row["fro_norm"], rel=1e-12)


def test_read_ahead_pipeline_keeps_order(tmp_path):
    ups = {f"layers.{i}.w.weight": planted(20 + i, 16, [i + 1.0], seed=i) for i in range(6)}
    base = {k: torch.zeros(v.shape) for k, v in ups.items()}
    tuned = {k: torch.tensor(v).float() for k, v in ups.items()}
    plan = plan_deltas(
        open_checkpoint(save_st(tmp_path / "b.safetensors", base)),
        open_checkpoint(save_st(tmp_path / "t.safetensors", tuned)),
    )
    computed = run_local(plan, Options(device="cpu"), progress=False)
    assert [c.row["name"] for c in computed] == [d.name for d in plan.deltas]
    assert [round(c.row["spectral_norm"], 5) for c in computed] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)"
)
def test_gpu_results_equal_cpu_results(tmp_path):
    ups = {
        f"model.layers.{i}.mlp.up_proj.weight": planted(256, 128, np.geomspace(5, 0.01, 64), seed=i)
        for i in range(3)
    }
    base = {k: torch.randn(v.shape, generator=g) for k, v in ups.items()}
    tuned = {k: base[k] + torch.tensor(v).float() for k, v in ups.items()}
    b = save_st(tmp_path / "b.safetensors", base)
    t = save_st(tmp_path / "t.safetensors", tuned)
    for inputs in ((b, t), (adapter(tmp_path),)):  # dense and factored SVDs on the GPU
        cpu = lorascope.analyze(*inputs, device="cpu")
        gpu = lorascope.analyze(*inputs, device="cuda")
        for name, sigma in cpu.spectra.items():
            np.testing.assert_allclose(gpu.spectrum(name), sigma, rtol=1e-4, atol=1e-6 * sigma[0])
        assert gpu.summary["timing"]["gpu_peak_bytes"] > 0


# Every family's torch path on a GPU, checked against the update PEFT itself applies (its merge minus the
# base, in float64), to the same 1e-5 of σ1 as on the CPU; and the other commands that take --device.
CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)"
)


def _peft_kinds() -> list[str]:
    try:
        from checkpoint.test_peft_types import CONV, LLAMA
    except Exception:  # no hf extra: the parametrized test is skipped below
        return []
    return [f"llama:{k}" for k in LLAMA] + [f"conv:{k}" for k in CONV]


@CUDA
@pytest.mark.parametrize("kind", _peft_kinds())
def test_every_peft_family_on_the_gpu_matches_peft(tmp_path, kind):
    import copy

    from checkpoint.peft_cases import ConvNet, make_case, tiny_llama
    from checkpoint.test_peft_types import CONV, LLAMA, check_spectra

    table, name = kind.split(":")
    config, kwargs, families = (LLAMA if table == "llama" else CONV)[name]
    model = tiny_llama() if table == "llama" else ConvNet()
    case = make_case(tmp_path, model, copy.deepcopy(config), **kwargs)
    res = lorascope.analyze(case.base, case.adapter, device="cuda")
    assert check_spectra(res, case.deltas, families) == len(res.modules) >= 1
    assert res.summary["timing"]["gpu_peak_bytes"] > 0


@CUDA
def test_float32_on_the_gpu_keeps_a_planted_rank_above_its_floor(tmp_path):
    """--precision float32 on a GPU: torch's float32 SVD, its floor (ε₃₂·max(m, n)·σ1) keeps gd_rank at the
    planted 8 where the float32 tail alone would count more; the top-k route runs on the GPU too."""
    sigma = np.geomspace(10, 1, 8)
    ups = {f"model.layers.{i}.mlp.up_proj.weight": planted(512, 256, sigma, seed=i) for i in range(2)}
    base = {k: torch.randn(v.shape, generator=g) for k, v in ups.items()}
    b = save_st(tmp_path / "b.safetensors", base)
    t = save_st(tmp_path / "t.safetensors", {k: base[k] + torch.tensor(v).float() for k, v in ups.items()})
    res = lorascope.analyze(b, t, device="cuda", precision="float32")
    assert list(res.modules["gd_rank"]) == [8, 8]
    assert list(res.modules["numerical_rank"]) == [8, 8]
    rows = res.modules.set_index("name")
    for name in ups:
        name = name.removesuffix(".weight")
        np.testing.assert_allclose(res.spectrum(name)[:8], sigma, rtol=1e-4)
        assert (
            np.abs(res.spectrum(name)[:8] - sigma).max() <= rows.loc[name, "sigma_floor"]
        )  # the bound holds
    top = lorascope.analyze(b, t, device="cuda", top_k=8)
    for name in ups:
        np.testing.assert_allclose(top.spectrum(name.removesuffix(".weight"))[:8], sigma, rtol=1e-4)


@CUDA
def test_compare_and_intruders_on_the_gpu_equal_the_cpu(tmp_path):
    from lorascope.compare import compare, intruders

    ups = {
        f"model.layers.{i}.self_attn.q_proj.weight": planted(96, 64, np.geomspace(4, 0.5, 6), seed=i)
        for i in range(2)
    }
    base = {k: torch.randn(v.shape, generator=g) for k, v in ups.items()}
    b = save_st(tmp_path / "b.safetensors", base)
    t1 = save_st(tmp_path / "t1.safetensors", {k: base[k] + torch.tensor(v).float() for k, v in ups.items()})
    t2 = save_st(
        tmp_path / "t2.safetensors",
        {
            k: base[k] + 0.5 * torch.tensor(v).float() + 0.01 * torch.randn(v.shape, generator=g)
            for k, v in ups.items()
        },
    )
    for run in (lambda d: compare(t1, t2, b, device=d), lambda d: intruders(b, t2, device=d)):
        cpu, gpu = run("cpu"), run("cuda")
        tables = [
            t
            for t in ("modules", "similarity", "amplification", "intruder_modules")
            if getattr(cpu, t) is not None
        ]
        assert tables
        for t in tables:
            want, got = getattr(cpu, t), getattr(gpu, t)
            numeric = [c for c in want.select_dtypes("number").columns if "seconds" not in c]
            np.testing.assert_allclose(
                got[numeric].to_numpy(float), want[numeric].to_numpy(float), rtol=1e-4, atol=1e-6, err_msg=t
            )


@CUDA
def test_callback_records_a_model_on_the_gpu_as_on_the_cpu(tmp_path):
    peft = pytest.importorskip("peft")
    from checkpoint.peft_cases import tiny_llama

    from lorascope.callbacks import read_training, record_spectra

    model = peft.get_peft_model(
        tiny_llama(), peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    record_spectra(model, 1, tmp_path / "cpu")
    record_spectra(model.cuda(), 1, tmp_path / "gpu")
    cpu, gpu = read_training(tmp_path / "cpu"), read_training(tmp_path / "gpu")
    numeric = [c for c in cpu.select_dtypes("number").columns if c != "seconds"]
    np.testing.assert_allclose(gpu[numeric].to_numpy(float), cpu[numeric].to_numpy(float), rtol=1e-6)
