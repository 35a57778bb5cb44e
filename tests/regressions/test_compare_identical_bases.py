"""Two trainer runs (`lorascope train --out runs/a`, `lorascope train --out runs/b`) each keep their own
copy of the same cached base model. `lorascope compare runs/a runs/b` refuses them: "were trained from
different bases (…/a/base and …/b/base); give the one both updates apply to with --base" although the two
base folders are byte-identical. The runs' base should be compared by content (or the message should not
assert a difference that is not there)."""

from __future__ import annotations

import json
import shutil

import torch
from regressions._util import cli
from safetensors.torch import save_file

HIDDEN = 16
MODULES = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]


def _run(root, name, base, seed):
    g = torch.Generator().manual_seed(seed)
    ad = root / name / "adapter"
    ad.mkdir(parents=True)
    save_file(
        {
            f"base_model.model.{n}.lora_{p}.weight": torch.randn(
                *((2, HIDDEN) if p == "A" else (HIDDEN, 2)), generator=g
            )
            for n in MODULES
            for p in "AB"
        },
        ad / "adapter_model.safetensors",
    )
    (ad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})
    )
    (root / name / "tuned").mkdir()
    (root / name / "metrics.json").write_text(
        json.dumps({"run": name, "method": "lora", "rank": 2, "targets": "q_proj", "base": str(base)})
    )
    return root / name


def test_compare_runs_whose_bases_are_identical_copies(tmp_path):
    g = torch.Generator().manual_seed(0)
    base_a = tmp_path / "a-base"
    base_a.mkdir()
    save_file(
        {f"{n}.weight": torch.randn(HIDDEN, HIDDEN, generator=g) for n in MODULES},
        base_a / "model.safetensors",
    )
    (base_a / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": HIDDEN,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "intermediate_size": 2 * HIDDEN,
                "vocab_size": 32,
            }
        )
    )
    base_b = tmp_path / "b-base"
    shutil.copytree(base_a, base_b)
    a = _run(tmp_path, "a", base_a, 1)
    b = _run(tmp_path, "b", base_b, 2)
    p = cli("compare", a, b, "--no-report", "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stderr
