"""A GPT-2 LoRA on the token embedding and Conv1D layers (PEFT needs fan_in_fan_out=True for the Conv1D ones)
is refused against its base with a self-contradictory message: "ΔW is [128, 64] but the base weight
transformer.wte.weight is [128, 64]". PEFT never transposes an embedding for fan_in_fan_out, so the
embedding must be paired as stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def test_gpt2_embedding_lora_with_fan_in_fan_out_pairs_with_base(tmp_path):
    import lorascope

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=1, n_head=4, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(tmp_path / "base")
    w0 = model.transformer.wte.weight.detach().double().clone()
    conf = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["wte", "c_attn"], fan_in_fan_out=True, init_lora_weights=False
    )
    pm = peft.get_peft_model(model, conf)
    pm.save_pretrained(tmp_path / "adapter")
    merged = pm.merge_and_unload()
    ref = np.linalg.svd((merged.transformer.wte.weight.detach().double() - w0).numpy(), compute_uv=False)

    res = lorascope.analyze(str(tmp_path / "base"), str(tmp_path / "adapter"))
    got = np.asarray(res.spectrum("transformer.wte"), dtype=np.float64)
    assert np.allclose(got[:4], ref[:4], rtol=1e-5)
