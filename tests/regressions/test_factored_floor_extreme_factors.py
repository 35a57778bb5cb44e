"""The factored route's floor ε·max(m, n)·k·|s|·‖L‖_F‖R‖_F took ‖L‖_F and ‖R‖_F by summing squares: for a
float64 adapter whose B is ~1e-165 and A ~1e165 (ΔW ~ 1, its σ exact) the squares underflow to 0 and overflow
to ∞, and modules.csv's sigma_floor was empty (NaN = 0·∞); with only A huge it was ∞, which calls every value
noise. The floor must be finite and bound |σ̂ − σ| against float64 LAPACK on the dense s·B@A."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lorascope.linalg.routes import factored_svd

from regressions._util import cli


@pytest.mark.parametrize("b_size, a_size", [(1e-165, 1e165), (1e-200, 1e200), (1.0, 1e160), (1e-300, 1e300)])
def test_floor_bounds_the_error_for_factors_of_extreme_size(b_size, a_size):
    rng = np.random.default_rng(0)
    b, a = rng.standard_normal((40, 4)) * b_size, rng.standard_normal((4, 30)) * a_size
    for left, right in ((b, a), (torch.from_numpy(b).T.contiguous().T, torch.from_numpy(a))):
        out = factored_svd(left, right, 0.5)
        exact = np.linalg.svd(0.5 * (b @ a), compute_uv=False)[:4]
        assert np.isfinite(out.floor) and out.floor > 0
        assert np.max(np.abs(np.asarray(out.s) - exact)) <= out.floor
        assert out.floor < 1e-9 * exact[0]  # a floor, not a bound that calls every value noise
        np.testing.assert_allclose(out.fro_norm, exact[0] * np.linalg.norm(exact / exact[0]), rtol=1e-12)


def test_sigma_floor_column_of_a_float64_adapter_with_extreme_factors(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 16, generator=g, dtype=torch.float64) * 1e165
    b = torch.randn(32, 4, generator=g, dtype=torch.float64) * 1e-165
    stem = "base_model.model.layers.0.q_proj"
    save_file({f"{stem}.lora_A.weight": a, f"{stem}.lora_B.weight": b}, adapter / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    p = cli("spectrum", adapter, "--no-report", "-q", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    row = pd.read_csv(tmp_path / "out" / "modules.csv").iloc[0]
    exact = np.linalg.svd(2.0 * (b.numpy() @ a.numpy()), compute_uv=False)
    assert np.isfinite(row["sigma_floor"]) and 0 < row["sigma_floor"] < 1e-9 * exact[0]
    assert abs(row["spectral_norm"] - exact[0]) <= row["sigma_floor"]
    assert row["numerical_rank"] == 4
