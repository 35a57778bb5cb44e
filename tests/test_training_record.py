"""lorascope/training_record.py: spectra appended step by step to a results folder, read back exactly."""

import numpy as np
import pandas as pd
import pytest
import torch

from lorascope.errors import LorascopeError
from lorascope.results import TRAINING_CSV, TRAINING_SIGMA_DIR, load_results
from lorascope.snapshot import snapshot
from lorascope.training_record import (
    clear_record,
    read_training,
    record_spectra,
    recorded_steps,
    training_spectrum,
)

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def model():
    torch.manual_seed(2)
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["v_proj"], init_lora_weights=False)
    return peft.get_peft_model(transformers.LlamaForCausalLM(cfg), config)


def test_record_read_back_and_resume(tmp_path):
    m, out = model(), tmp_path / "rec"
    for step in (0, 5, 10):
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(0.01)
        record_spectra(m, step, out)
    assert (
        recorded_steps(out) == [0, 5, 10]
        and (out / TRAINING_CSV).is_file()
        and (out / TRAINING_SIGMA_DIR).is_dir()
    )
    table = read_training(out)
    assert sorted(table["step"].unique()) == [0, 5, 10] and set(table["name"]) == {
        "model.layers.0.self_attn.v_proj"
    }
    latest = snapshot(m, 10).spectra["model.layers.0.self_attn.v_proj"]
    np.testing.assert_allclose(
        training_spectrum(out, 10)["model.layers.0.self_attn.v_proj"], latest, rtol=1e-6
    )
    assert load_results(out).summary["training"]["step"] == 10  # the folder is the latest snapshot's results
    record_spectra(m, 5, out)  # a run resumed from step 5 replaces 5 and every later step
    assert recorded_steps(out) == [0, 5]
    clear_record(out)
    assert recorded_steps(out) == [] and read_training(out) is None


def test_missing_steps_and_foreign_tables_are_refused(tmp_path):
    with pytest.raises(LorascopeError, match="no spectra recorded at step 3"):
        training_spectrum(tmp_path, 3)
    pd.DataFrame({"step": [1]}).to_csv(tmp_path / TRAINING_CSV, index=False)
    with pytest.raises(LorascopeError, match="lacks the column"):
        read_training(tmp_path)
