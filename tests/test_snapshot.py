"""lorascope/snapshot.py: the exact spectrum of each adapter module of a PEFT model in memory, and the
headline numbers, checked against PEFT's own update in float64."""

import numpy as np
import pytest
import torch

from lorascope.errors import LorascopeError
from lorascope.snapshot import HEADLINE_PREFIX, adapter_modules, headline, snapshot

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def model(**lora):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    config = peft.LoraConfig(
        r=3, lora_alpha=6, target_modules=["q_proj", "down_proj"], init_lora_weights=False, **lora
    )
    return peft.get_peft_model(transformers.LlamaForCausalLM(cfg), config)


def test_modules_are_named_and_scaled_as_peft_holds_them():
    found = {m.name: m for m in adapter_modules(model())}
    assert set(found) == {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"}
    q = found["model.layers.0.self_attn.q_proj"]
    assert q.family == "lora" and q.rank == 3 and q.scale == pytest.approx(2.0) and q.shape == (16, 16)
    assert found["model.layers.0.mlp.down_proj"].shape == (16, 24)


@pytest.mark.parametrize("rslora", [False, True])
def test_spectra_equal_the_float64_svd_of_peft_delta(rslora):
    m = model(use_rslora=rslora)
    snap = snapshot(m, step=7)
    for name, layer in m.named_modules():
        if not isinstance(layer, peft.tuners.lora.LoraLayer):
            continue
        key = name.removeprefix("base_model.model.")
        b = layer.lora_B["default"].weight.detach().double().numpy()
        a = layer.lora_A["default"].weight.detach().double().numpy()
        want = np.linalg.svd(layer.scaling["default"] * b @ a, compute_uv=False)[:3]  # (out, r) @ (r, in)
        np.testing.assert_allclose(snap.spectra[key], want, rtol=1e-10)
    assert (
        snap.step == 7
        and snap.families == {"lora": 2}
        and snap.adapter_parameters == 3 * (16 + 16) + 3 * (24 + 16)
    )
    numbers = headline(snap)
    m_ = snap.modules
    assert numbers[HEADLINE_PREFIX + "update_norm"] == pytest.approx(
        float(np.sqrt((m_["fro_norm"] ** 2).sum()))
    )
    assert numbers[HEADLINE_PREFIX + "entropy_rank"] == pytest.approx(float(m_["entropy_rank"].median()))


def test_a_model_without_adapters_is_refused():
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    with pytest.raises(LorascopeError, match="no PEFT adapter layer"):
        snapshot(transformers.LlamaForCausalLM(cfg))
