"""lorascope/delta/lora.py: LoRA and DoRA updates against their definitions in float64 (Hu et al. 2021, Eq. 3;
Liu et al. 2024, Eq. 5), with PEFT's own DoRA merge where installed."""

import numpy as np
import pytest
import torch

from lorascope.delta import FAMILIES, dora_update, form_from
from lorascope.delta.lora import weight_decompose
from lorascope.errors import LorascopeError
from lorascope.linalg import LowRank

rng = np.random.default_rng(1)


def test_lora_is_factored_and_equals_s_b_a():
    b, a = rng.standard_normal((6, 3)), rng.standard_normal((3, 5))
    form = form_from("lora", {"up": b, "down": a}, scale=2.5)
    assert isinstance(form, LowRank)
    np.testing.assert_allclose(np.asarray(form.to_dense()), 2.5 * b @ a, rtol=1e-14)
    assert FAMILIES["lora"].form == "LowRank" and not FAMILIES["lora"].needs_base


def test_dora_matches_the_papers_formula_row_by_row():
    w0, b, a, mag = (
        rng.standard_normal((6, 5)),
        rng.standard_normal((6, 2)),
        rng.standard_normal((2, 5)),
        rng.uniform(0.5, 2.0, 6),
    )
    got = dora_update(*(torch.tensor(x) for x in (w0, b, a, mag)), scale=1.5).numpy()
    merged = w0 + 1.5 * b @ a
    want = mag[:, None] * merged / np.linalg.norm(merged, axis=1, keepdims=True) - w0
    np.testing.assert_allclose(got, want, rtol=1e-12)
    per_in = weight_decompose(
        torch.tensor(w0), torch.tensor(1.5 * b @ a), torch.tensor(rng.uniform(1, 2, 5)), axis="in"
    ).numpy()
    assert per_in.shape == (6, 5)
    with pytest.raises(LorascopeError, match="magnitude has 4 entries but the weight has 6"):
        dora_update(*(torch.tensor(x) for x in (w0, b, a, mag[:4])), scale=1.0)


def test_dora_equals_pefts_merge():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 6, dtype=torch.float64)
    model = peft.get_peft_model(
        torch.nn.Sequential(lin),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"], use_dora=True, init_lora_weights=False),
    )
    layer = model.base_model.model[0]
    w0 = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        layer.lora_magnitude_vector["default"].weight.mul_(1.3)
    got = dora_update(
        w0,
        layer.lora_B["default"].weight.detach(),
        layer.lora_A["default"].weight.detach(),
        layer.lora_magnitude_vector["default"].weight.detach(),
        layer.scaling["default"],
    )
    merged = model.merge_and_unload()[0].weight.detach()
    torch.testing.assert_close(got, merged - w0, rtol=1e-10, atol=1e-12)
