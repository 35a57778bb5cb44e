"""lorascope/compute.py: one module's work — fetch within the memory budget, take the spectrum, measure it."""

import numpy as np
import pytest
import torch
from builders import peft_folder, save_st
from refs import assert_sigma_close, planted, ref_sigma

from lorascope.checkpoint import open_checkpoint
from lorascope.compute import (
    Options,
    Streamed,
    compute_delta,
    compute_fetched,
    fetch,
    in_memory_bytes,
    streams,
)
from lorascope.delta import plan_deltas
from lorascope.errors import LorascopeError

NAME = "model.layers.0.mlp.up_proj"


@pytest.fixture
def full_diff(tmp_path):
    base = planted(96, 64, np.geomspace(3.0, 0.1, 64), seed=1)
    dw = planted(96, 64, np.geomspace(1.0, 1e-3, 64), seed=2)
    b = save_st(tmp_path / "b" / "model.safetensors", {f"{NAME}.weight": torch.tensor(base)})
    t = save_st(tmp_path / "t" / "model.safetensors", {f"{NAME}.weight": torch.tensor(base + dw)})
    (d,) = plan_deltas(open_checkpoint(b), open_checkpoint(t)).deltas
    return d, dw, base


def test_a_dense_update_on_the_cpu_streams_and_matches_float64_numpy(full_diff):
    d, dw, base = full_diff
    opts = Options(device="cpu")
    assert streams(d, opts) and isinstance(fetch(d, opts), Streamed)
    got = compute_delta(d, opts)
    assert_sigma_close(got.sigma, ref_sigma(dw), rtol=1e-9, atol_rel=1e-12)
    assert got.row["method"] == "exact"  # streamed, but min(m, n) < GRAM_MIN: read whole for LAPACK's bound
    assert got.row["rows"] == 96 and got.row["cols"] == 64
    assert got.row["base_fro_norm"] == pytest.approx(np.linalg.norm(base), rel=1e-12)
    assert got.row["fro_norm"] == pytest.approx(np.linalg.norm(dw), rel=1e-10)


def test_top_k_takes_the_randomized_route_and_reads_whole(full_diff):
    d, dw, _ = full_diff
    opts = Options(device="cpu", top_k=8)
    assert not streams(d, opts)
    got = compute_fetched(fetch(d, opts), opts)
    assert got.row["method"] == "randomized" and got.sigma.size == 8
    assert_sigma_close(got.sigma, ref_sigma(dw)[:8], rtol=1e-6)


def test_a_module_over_the_budget_is_refused_with_what_it_needs(full_diff):
    d, _, _ = full_diff
    opts = Options(device="cpu", precision="float32", memory="64M")
    need = in_memory_bytes(d, opts)
    assert need == 2 * 96 * 64 * 8 + 2 * 96 * 64 * 4  # both tensors read (float64), ΔW and the SVD's copy
    small = Options(device="cpu", precision="float32", memory=64 << 20, workers=2)
    assert small.budget() == 32 << 20
    monster = Options(device="cpu", precision="float32", memory=64 << 20, workers=100_000)
    with pytest.raises(LorascopeError, match=r"needs about [\d,]+ MiB to compute in memory.*per worker"):
        fetch(d, monster)


def test_an_adapter_module_is_factored(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 32, generator=g), torch.randn(48, 4, generator=g)
    ad = peft_folder(
        tmp_path / "ad", {f"{NAME}.lora_A.weight": a, f"{NAME}.lora_B.weight": b}, {"r": 4, "lora_alpha": 8}
    )
    (d,) = plan_deltas(None, open_checkpoint(ad)).deltas
    got = compute_delta(d, Options(device="cpu"))
    assert got.row["method"] == "factored" and got.row["lora_rank"] == 4 and got.row["scale"] == 2.0
    assert_sigma_close(got.sigma, ref_sigma(2.0 * b.double().numpy() @ a.double().numpy())[:4], rtol=1e-9)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"precision": "float16"}, "precision"),
        ({"top_k": 0}, "top_k"),
        ({"workers": 0}, "workers"),
        ({"memory": "lots"}, "memory"),
    ],
)
def test_options_name_the_bad_field(bad, field):
    with pytest.raises(ValueError, match=field):
        Options(**bad)
