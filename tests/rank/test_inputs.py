"""lorascope/rank/inputs.py: a results folder as it is, or checkpoints analyzed first; the inputs a results
folder records, reopened only while unchanged."""

import pytest
import torch
from builders import peft_folder

from lorascope.errors import LorascopeError
from lorascope.rank.inputs import plan_for, reopen_inputs, results_for

Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture
def adapter(tmp_path):
    g = torch.Generator().manual_seed(0)
    return peft_folder(
        tmp_path / "ad",
        {
            f"{Q}.lora_A.weight": torch.randn(2, 6, generator=g),
            f"{Q}.lora_B.weight": torch.randn(5, 2, generator=g),
        },
        {"r": 2},
    )


def test_checkpoints_are_analyzed_and_a_results_folder_is_read(adapter, tmp_path):
    results = results_for([adapter])
    assert list(results.modules["name"]) == [Q]
    saved = results.save(tmp_path / "res")
    again = results_for([saved])
    assert list(again.modules["name"]) == [Q]
    with pytest.raises(LorascopeError, match="--top-k cannot change them"):
        results_for([saved], top_k=4)
    with pytest.raises(LorascopeError, match="got 3 inputs"):
        results_for([adapter, adapter, adapter])


def test_inputs_reopen_until_a_file_changes(adapter, tmp_path):
    results = results_for([adapter])
    base, tuned = reopen_inputs(results)
    assert base is None and [m.name for m in tuned.modules] == [Q]
    assert [d.name for d in plan_for(results, base, tuned).deltas] == [Q]
    (adapter / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(LorascopeError, match="has changed since"):
        reopen_inputs(results)
