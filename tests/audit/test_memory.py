"""Training memory: 16 bytes per parameter for bf16 mixed-precision AdamW, the frozen base at 2 bytes for LoRA."""

import pytest

from lorascope.audit.memory import MemoryAssumptions, training_memory


def test_full_fine_tuning_is_16_bytes_per_parameter_in_bf16():
    mem = training_memory(1_000, 10).set_index("part")
    assert mem.loc["total", "full"] == 16 * 1_000  # 2 weights + 2 grads + 4 master + 8 AdamW (ZeRO §3.1)
    assert list(mem.loc[["weights", "gradients", "master weights", "optimizer states"], "full"]) == [2000, 2000, 4000, 8000]


def test_lora_keeps_the_base_frozen_and_adapters_in_fp32():
    mem = training_memory(1_000, 10).set_index("part")
    # base 2·1000 + adapter 4·10; grads 4·10; no master copy of fp32 weights; AdamW 8·10
    assert mem.loc["total", "lora"] == 2000 + 40 + 40 + 0 + 80


def test_assumptions_change_the_numbers_and_are_printed():
    fp32 = training_memory(100, 1, MemoryAssumptions(weights_dtype="fp32")).set_index("part")
    assert fp32.loc["total", "full"] == 16 * 100  # 4 + 4 + 0 master + 8
    plain = training_memory(100, 1, MemoryAssumptions(master_weights=False)).set_index("part")
    assert plain.loc["total", "full"] == 12 * 100
    lines = MemoryAssumptions().lines()
    assert any("activations" in line and "not included" in line for line in lines)
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        MemoryAssumptions(weights_dtype="int3")
