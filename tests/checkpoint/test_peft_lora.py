"""lorascope/checkpoint/peft_lora.py: PEFT LoRA folders — factors, DoRA, embeddings, convs, variants
refused."""

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.peft_config import lora_config
from lorascope.checkpoint.peft_lora import UNREAD_VARIANTS, lora_config_checks, open_lora
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.errors import LorascopeError

P = "base_model.model.model"


def store(tmp_path, tensors):
    return SafetensorsFile(save_st(tmp_path / "adapter_model.safetensors", tensors))


def test_linear_dora_embedding_and_conv_modules(tmp_path):
    g = torch.Generator().manual_seed(0)
    s = store(
        tmp_path,
        {
            f"{P}.q.lora_A.weight": torch.randn(4, 6, generator=g),
            f"{P}.q.lora_B.weight": torch.randn(8, 4, generator=g),
            f"{P}.q.lora_magnitude_vector": torch.randn(8, generator=g),
            f"{P}.emb.lora_embedding_A": torch.randn(4, 10, generator=g),
            f"{P}.emb.lora_embedding_B": torch.randn(6, 4, generator=g),
            f"{P}.conv.lora_A.weight": torch.randn(4, 3, 3, 3, generator=g),
            f"{P}.conv.lora_B.weight": torch.randn(5, 4, 1, 1, generator=g),
        },
    )
    cfg = lora_config(4, 8, ["q", "emb", "conv"], use_dora=True)
    modules = {m.name: m for m in open_lora(tmp_path, s, cfg).modules}
    q, emb, conv = modules["model.q"], modules["model.emb"], modules["model.conv"]
    assert q.family == "dora" and q.shape == (8, 6) and q.scale == 2.0 and "magnitude" in q.parts
    assert emb.kind == "embedding" and emb.shape == (10, 6)  # ΔW (num, dim) = s·Aᵀ Bᵀ
    assert conv.kind == "conv" and conv.kernel == (3, 3) and conv.shape == (5, 27)


def test_a_config_rank_other_than_the_tensors_is_marked_for_the_audit(tmp_path):
    """The reader keeps the module and marks it (the audit reports it); open_checkpoint refuses it
    (tests/checkpoint/test_peft.py)."""
    s = store(tmp_path, {f"{P}.q.lora_A.weight": torch.ones(2, 4), f"{P}.q.lora_B.weight": torch.ones(4, 2)})
    adapter = open_lora(tmp_path, s, lora_config(8, 16, ["q"]))
    assert "rank 2 but the config gives r=8" in str(adapter.warnings)
    assert (
        "factors have rank 2 but adapter_config.json's r gives r=8"
        in adapter.modules[0].params["config_rank"]
    )


@pytest.mark.parametrize("key", sorted(UNREAD_VARIANTS))
def test_variants_whose_update_is_not_b_at_a_are_refused(tmp_path, key):
    with pytest.raises(LorascopeError, match=f"sets {key}="):
        lora_config_checks({"r": 4, "lora_alpha": 8, key: {"x": 1}}, tmp_path)


def test_a_base_changing_initialization_is_warned(tmp_path):
    warnings = lora_config_checks({"r": 4, "lora_alpha": 8, "init_lora_weights": "pissa_niter_4"}, tmp_path)
    assert "relative to the base PEFT changed" in warnings[0]["reason"]
