"""lorascope/delta/full_diff.py: a full fine-tune paired tensor by tensor, orientation from declarations."""

import json

import pytest
import torch
from builders import save_st

from lorascope.checkpoint import open_checkpoint
from lorascope.delta.full_diff import declares_conv1d, plan_full_diff
from lorascope.errors import LorascopeError


def folder(path, tensors, config=None):
    save_st(path / "model.safetensors", tensors)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return open_checkpoint(path)


def test_pairs_by_name_with_vectors_added_rows_and_experts(tmp_path):
    base = folder(
        tmp_path / "b",
        {
            "model.embed_tokens.weight": torch.ones(10, 4),
            "model.norm.weight": torch.ones(4),
            "model.layers.0.mlp.experts.w1": torch.ones(3, 5, 4),
            "only_base.weight": torch.ones(2, 2),
        },
    )
    tuned = folder(
        tmp_path / "t",
        {
            "model.embed_tokens.weight": torch.ones(12, 4),
            "model.norm.weight": torch.ones(4),
            "model.layers.0.mlp.experts.w1": torch.ones(3, 5, 4),
        },
    )
    plan = plan_full_diff(base, tuned)
    names = [d.name for d in plan.deltas]
    assert names == [
        "model.embed_tokens",
        "model.layers.0.mlp.experts.w1.0",
        "model.layers.0.mlp.experts.w1.1",
        "model.layers.0.mlp.experts.w1.2",
    ]
    emb = plan.deltas[0]
    assert emb.added_rows == 2 and emb.shape == (10, 4)  # the common rows analyzed
    assert [v.name for v in plan.vectors] == ["model.norm"]
    reasons = " ".join(w["reason"] for w in plan.warnings)
    assert "2 rows added (new tokens)" in reasons and "only in the base checkpoint" in reasons


def test_conv1d_orientation_comes_from_the_config_only(tmp_path):
    w = {"transformer.h.0.attn.c_attn.weight": torch.ones(4, 12)}  # stored (in, out)
    declared = folder(tmp_path / "b", w, {"model_type": "gpt2"})
    tuned = folder(tmp_path / "t", w, {"model_type": "gpt2"})
    (d,) = plan_full_diff(declared, tuned).deltas
    assert d.shape == (12, 4) and d.tuned.view == "transpose"
    assert declares_conv1d(declared, "transformer.h.0.attn.c_attn.weight")
    bare = folder(tmp_path / "b2", w)
    (d,) = plan_full_diff(bare, folder(tmp_path / "t2", w)).deltas
    assert d.shape == (4, 12)  # nothing declares the (in, out) storage: as stored


def test_two_different_models_are_refused(tmp_path):
    a = folder(tmp_path / "a", {"x.weight": torch.ones(4, 4)})
    b = folder(tmp_path / "b", {"x.weight": torch.ones(3, 4)})
    with pytest.raises(LorascopeError, match="do not have the same shapes"):
        plan_full_diff(a, b)
    c = folder(tmp_path / "c", {"y.weight": torch.ones(4, 4)})
    with pytest.raises(LorascopeError, match="share no tensor names"):
        plan_full_diff(a, c)
