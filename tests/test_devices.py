"""Device paths: the torch code used on GPUs, exercised on the CPU here, and GPU-vs-CPU equality where a GPU exists."""

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
    plan = plan_deltas(open_checkpoint(save_st(tmp_path / "b.safetensors", base)),
                       open_checkpoint(save_st(tmp_path / "t.safetensors", tuned)))
    computed = run_local(plan, Options(device="cpu"), progress=False)
    assert [c.row["name"] for c in computed] == [d.name for d in plan.deltas]
    assert [round(c.row["spectral_norm"], 5) for c in computed] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a GPU machine)")
def test_gpu_results_equal_cpu_results(tmp_path):
    ups = {f"model.layers.{i}.mlp.up_proj.weight": planted(256, 128, np.geomspace(5, 0.01, 64), seed=i) for i in range(3)}
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
