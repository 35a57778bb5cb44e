"""lorascope/rank/export_tensors.py: factors placed as PEFT saves them, checked by rebuilding ΔW in numpy the
way PEFT's layers compute it."""

import numpy as np

from lorascope.names import PEFT_PREFIX
from lorascope.rank.export_tensors import ExpertSlot, PeftLayer, expert_tensors, peft_tensors

rng = np.random.default_rng(3)


def test_linear_embedding_and_conv_layouts():
    b, a = rng.standard_normal((6, 2)), rng.standard_normal((2, 12))
    lin = peft_tensors("m", PeftLayer("linear"), b, a)
    np.testing.assert_array_equal(
        lin[f"{PEFT_PREFIX}m.lora_B.weight"] @ lin[f"{PEFT_PREFIX}m.lora_A.weight"], b @ a
    )
    emb = peft_tensors("e", PeftLayer("embedding"), b, a)  # ΔW (num, dim) = (lora_B @ lora_A)ᵀ
    eb, ea = emb[f"{PEFT_PREFIX}e.lora_embedding_B"], emb[f"{PEFT_PREFIX}e.lora_embedding_A"]
    np.testing.assert_allclose((eb @ ea).T, b @ a, rtol=1e-14)
    conv = peft_tensors("c", PeftLayer("conv", kernel=(2, 3)), b, a)  # in = 12 / (2·3) = 2 channels
    ca, cb = conv[f"{PEFT_PREFIX}c.lora_A.weight"], conv[f"{PEFT_PREFIX}c.lora_B.weight"]
    assert ca.shape == (2, 2, 2, 3) and cb.shape == (6, 2, 1, 1)
    np.testing.assert_allclose(cb.reshape(6, 2) @ ca.reshape(2, 12), b @ a, rtol=1e-14)


def test_experts_pack_as_peft_get_delta_factors_unpacks_them():
    e_count, out, inp = 3, 5, 4
    factors = {
        e: (rng.standard_normal((out, k)), rng.standard_normal((k, inp))) for e, k in ((0, 2), (1, 1), (2, 2))
    }
    tensors, ranks = expert_tensors([ExpertSlot("mlp.experts", "down_proj", e_count, 0, factors)])
    r = ranks["mlp.experts.down_proj"]
    lora_a = tensors[f"{PEFT_PREFIX}mlp.experts.lora_A.weight"]  # (E·r, in)
    lora_b = tensors[f"{PEFT_PREFIX}mlp.experts.lora_B.weight"]  # (out, r·E)
    a3, b3 = lora_a.reshape(e_count, r, inp), lora_b.reshape(out, r, e_count)  # PEFT's get_delta_factors
    for e, (b, a) in factors.items():
        np.testing.assert_allclose(b3[:, :, e] @ a3[e], b @ a, rtol=1e-13)  # each expert its own truncation
    assert r == 2
