"""lorascope/delta/read.py: parts several modules share are read once, never confused between files."""

import numpy as np
import torch
from builders import peft_folder

from lorascope.checkpoint import open_checkpoint
from lorascope.delta import load_form, plan_deltas
from lorascope.delta.read import SharedArrays


def expert_adapter(path, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "model.experts.lora_A.weight": torch.randn(8, 5, generator=gen),
        "model.experts.lora_B.weight": torch.randn(6, 8, generator=gen),
    }
    cfg = {"r": 2, "lora_alpha": 2, "target_modules": [], "target_parameters": ["experts.w"]}
    return open_checkpoint(peft_folder(path, tensors, cfg)), tensors


def test_experts_read_their_fused_factors_once(tmp_path, monkeypatch):
    adapter, tensors = expert_adapter(tmp_path / "a", 0)
    reads = []
    store = adapter.store
    original = store.get_numpy
    monkeypatch.setattr(store, "get_numpy", lambda key: reads.append(key) or original(key))
    a = tensors["model.experts.lora_A.weight"].double().numpy().reshape(4, 2, 5)
    b = tensors["model.experts.lora_B.weight"].double().numpy().reshape(6, 2, 4)
    for d in plan_deltas(None, adapter).deltas:
        e = d.module.params["expert"]
        np.testing.assert_allclose(load_form(d).to_dense(), b[:, :, e] @ a[e], atol=1e-12)
    assert len(reads) == 2  # lora_A and lora_B, once for the four experts


def test_the_same_key_in_another_file_is_not_taken_from_the_cache(tmp_path):
    cache = SharedArrays(size=4)
    first, _ = expert_adapter(tmp_path / "a", 0)
    second, tensors = expert_adapter(tmp_path / "b", 1)
    ref_a = first.modules[0].parts["lora_A"]
    ref_b = second.modules[0].parts["lora_A"]
    assert ref_a.key == ref_b.key
    cache.load(ref_a)
    np.testing.assert_array_equal(cache.load(ref_b), tensors["model.experts.lora_A.weight"].double().numpy())
    assert not cache.load(ref_b).flags.writeable
