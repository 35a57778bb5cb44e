"""lorascope/checkpoint/families.py: one module from the parts a single file holds — shape, kind, rank and the
scale the writing tool applies."""

import pytest
import torch
from builders import save_st

from lorascope.checkpoint.alphas import DeclaredScales
from lorascope.checkpoint.base import TensorRef
from lorascope.checkpoint.families import Unfit, build_module
from lorascope.checkpoint.safetensors_file import SafetensorsFile


def built(tmp_path, tensors, parts, family, params=None, source="kohya"):
    store = SafetensorsFile(save_st(tmp_path / "a.safetensors", tensors))
    refs = {p: TensorRef(store, k, "as_is" if p in ("mid", "alpha") else "flatten") for p, k in parts.items()}
    return build_module("x", source, refs, family, params or {}, DeclaredScales(store))


def test_lora_with_alpha_and_a_conv_kernel(tmp_path):
    b = built(
        tmp_path,
        {"u": torch.ones(6, 4, 1, 1), "d": torch.ones(4, 3, 3, 3), "a": torch.tensor(2.0)},
        {"up": "u", "down": "d", "alpha": "a"},
        "lora",
    )
    m = b.module
    assert (m.shape, m.rank, m.alpha, m.scale, m.kind, m.kernel) == ((6, 27), 4, 2.0, 0.5, "conv", (3, 3))
    assert b.default_reason is None


def test_lora_without_alpha_takes_scale_one_and_says_why(tmp_path):
    b = built(tmp_path, {"u": torch.ones(6, 4), "d": torch.ones(4, 5)}, {"up": "u", "down": "d"}, "lora")
    assert b.module.scale == 1.0 and b.module.alpha is None and b.default_reason


def test_loha_and_lokr_geometry(tmp_path):
    loha = built(
        tmp_path,
        {"a1": torch.ones(6, 2), "b1": torch.ones(2, 5), "a2": torch.ones(6, 2), "b2": torch.ones(2, 5)},
        {"hada_w1_a": "a1", "hada_w1_b": "b1", "hada_w2_a": "a2", "hada_w2_b": "b2"},
        "loha",
    ).module
    assert loha.shape == (6, 5) and loha.rank == 2
    lokr = built(
        tmp_path, {"w1": torch.ones(2, 3), "w2": torch.ones(4, 5)}, {"lokr_w1": "w1", "lokr_w2": "w2"}, "lokr"
    ).module
    assert lokr.shape == (8, 15) and lokr.rank is None and lokr.scale == 1.0  # both factors full: s = 1


def test_parts_that_do_not_chain_are_unfit(tmp_path):
    with pytest.raises(Unfit):
        built(tmp_path, {"u": torch.ones(6, 4), "d": torch.ones(3, 5)}, {"up": "u", "down": "d"}, "lora")
    with pytest.raises(Unfit, match="should be a matrix"):
        built(tmp_path, {"u": torch.ones(6), "d": torch.ones(3, 5)}, {"up": "u", "down": "d"}, "lora")
