"""NF4: the codebook from its definition, the error bound, packing, and a QLoRA run that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from lorascope.train.nf4 import BLOCK, NF4_LEVELS, NF4Linear, dequantize, max_error_bound, quantize


def test_codebook_is_the_normal_quantile_construction():
    # Dettmers et al. 2023, Appendix E: 8 positive quantiles of N(0, 1) from offset 0.9677 down to 1/2, 7
    # negative ones, and an exact zero, all divided by the largest.
    offset = 0.9677083
    pos = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    levels = np.sort(np.concatenate([pos, [0.0], neg]))
    levels /= levels.max()
    assert np.allclose(NF4_LEVELS.numpy(), levels, atol=1e-6)


def test_roundtrip_error_within_the_codebook_bound():
    torch.manual_seed(0)
    w = torch.randn(96, 80) * torch.linspace(0.1, 3, 80)  # 7680 values = 120 blocks of 64
    packed, absmax = quantize(w)
    assert packed.dtype == torch.uint8 and packed.numel() == w.numel() // 2 and absmax.numel() == 120
    back = dequantize(packed, absmax, tuple(w.shape))
    err = (back - w).abs().reshape(-1, BLOCK)
    bound = max_error_bound(absmax)[:, None]
    assert torch.all(err <= bound * (1 + 1e-6))
    assert float(bound.max() / absmax.max()) == pytest.approx(
        (1 - 0.6961928009986877) / 2
    )  # widest gap: −1 → −0.696
    # every block keeps its absmax exactly (±1 are levels), so the largest value of each block is exact
    idx = w.reshape(-1, BLOCK).abs().argmax(1)
    assert torch.equal(
        back.reshape(-1, BLOCK).gather(1, idx[:, None]), w.reshape(-1, BLOCK).gather(1, idx[:, None])
    )


def test_levels_roundtrip_exactly_and_odd_sizes_pack():
    w = NF4_LEVELS.repeat(5)[:75] * 2.5  # 75 values: one full block and a padded one; absmax 2.5 in both
    w[0], w[64] = 2.5, -2.5
    packed, absmax = quantize(w, 64)
    assert packed.numel() == 38 and absmax.tolist() == [2.5, 2.5]
    assert torch.allclose(dequantize(packed, absmax, (75,)), w, atol=1e-6)


def test_nf4_linear_is_frozen_and_smaller():
    torch.manual_seed(1)
    lin = nn.Linear(128, 64, bias=True)
    q = NF4Linear(lin)
    x = torch.randn(4, 128)
    assert not any(p.requires_grad for p in q.parameters())
    assert torch.allclose(q(x), nn.functional.linear(x, q.dequantized(), lin.bias), atol=0)
    # |Δy_i| ≤ Σ_j |x_j| · bound(block of w_ij): the per-value bound carried through the product
    bound = max_error_bound(q.absmax).repeat_interleave(BLOCK).view(64, 128)
    assert torch.all((q(x) - lin(x)).abs() <= x.abs() @ bound.T + 1e-6)
    assert q.storage_bytes() == 128 * 64 // 2 + (128 * 64 // 64) * 4  # 4 bits per value + one float per block


def test_qlora_trains_and_lowers_the_loss(tiny_base, tmp_path):
    import json

    from lorascope.train.methods import MethodConfig
    from lorascope.train.runs import RunSpec, train_run
    from lorascope.train.trainer import LoopConfig, OptimConfig

    spec = RunSpec(
        method=MethodConfig(method="qlora", rank=4, targets="all-linear"),
        task="edit:4",
        device="cpu",
        optim=OptimConfig(lr=1e-2),
        loop=LoopConfig(steps=30, batch_size=8, eval_every=10, rank_every=10),
    )
    row = train_run(spec, tiny_base, tmp_path / "q")
    metrics = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert metrics["quantized_modules"] == 14  # every linear layer of the 2 blocks; the head stays dense
    assert metrics["final"]["edit_loss"] < 0.5 * metrics["base_eval"]["edit_loss"]
    assert row["edit_acc"] > metrics["base_eval"]["edit_acc"]
