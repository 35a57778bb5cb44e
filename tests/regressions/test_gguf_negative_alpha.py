"""A GGUF LoRA adapter whose adapter.lora.alpha is negative (-4) is analyzed with exit code 0 and scale -1.0
in modules.csv, while NaN is refused and a negative kohya `.alpha` ends with exit code 2. README: "Scales,
ranks and alphas must be finite and positive … end with exit code 2 naming the key"."""

from __future__ import annotations

import numpy as np
import pytest
from regressions._util import cli

gguf = pytest.importorskip("gguf")


def test_negative_gguf_alpha_is_bad_input(tmp_path):
    path = tmp_path / "neg.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", -4.0)
    rng = np.random.default_rng(0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", rng.standard_normal((4, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", rng.standard_normal((64, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = cli("spectrum", path, "--no-report", "--out", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert "adapter.lora.alpha" in p.stderr
