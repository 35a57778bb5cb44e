"""A base whose output head is tied to its input embeddings against a tuned checkpoint that unties them.

transformers saves a tied model without ``lm_head.weight``; a fine-tune that unties the head saves its own.
The tuned head is paired with the base's embedding, which is the weight the base's head uses, as the base's
config declares — never by a coincidence of shapes — and a warning says so."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lorascope
from lorascope.checkpoint import open_checkpoint
from lorascope.delta import plan_deltas

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

CONFIG = dict(
    vocab_size=50,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(base folder, tuned folder, the head's update): only the head changed, and it was untied to change."""
    tmp = tmp_path_factory.mktemp("tied")
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG, tie_word_embeddings=True))
    save(base, tmp / "base")
    tuned = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG, tie_word_embeddings=False))
    tuned.load_state_dict(base.state_dict(), strict=False)
    update = 0.1 * torch.randn(50, 16)
    with torch.no_grad():
        tuned.lm_head.weight.copy_(base.model.embed_tokens.weight + update)
    save(tuned, tmp / "tuned")
    return tmp / "base", tmp / "tuned", update.double().numpy()


def test_the_base_file_really_has_no_head(pair):
    base = open_checkpoint(pair[0])
    tuned = open_checkpoint(pair[1])
    assert "lm_head.weight" not in base.store.keys() and "lm_head.weight" in tuned.store.keys()


def test_tuned_head_is_paired_with_the_base_embedding(pair):
    base, tuned, update = pair
    plan = plan_deltas(open_checkpoint(base), open_checkpoint(tuned))
    head = next(d for d in plan.deltas if d.name == "lm_head")
    assert head.base.key == "model.embed_tokens.weight" and head.tuned.key == "lm_head.weight"
    notes = [w["reason"] for w in plan.warnings if w["name"] == "lm_head"]
    assert len(notes) == 1
    assert "tie_word_embeddings" in notes[0] and "model.embed_tokens.weight (base)" in notes[0]
    res = lorascope.analyze(base, tuned)
    row = res.modules.set_index("name").loc["lm_head"]
    assert row["fro_norm"] == pytest.approx(np.linalg.norm(update), rel=1e-5)
    np.testing.assert_allclose(
        res.spectrum("lm_head"), np.linalg.svd(update, compute_uv=False), rtol=1e-4, atol=1e-6
    )
    reasons = " ".join(w["reason"] for w in res.summary["warnings"])
    assert "hold the same weights" not in reasons and "only in the tuned checkpoint" not in reasons


def test_no_pairing_where_the_base_does_not_declare_a_tie(pair, tmp_path):
    """The same files, with the base's config saying its head is not tied: nothing is paired by shape."""
    import json
    import shutil

    base = shutil.copytree(pair[0], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    plan = plan_deltas(open_checkpoint(base), open_checkpoint(pair[1]))
    assert "lm_head" not in {d.name for d in plan.deltas}
    assert any(
        w["name"] == "lm_head.weight" and "only in the tuned checkpoint" in w["reason"] for w in plan.warnings
    )


def test_model_type_default_counts_as_declared(pair, tmp_path):
    """gemma2's config class ties by default: a config.json that leaves the key out still declares the tie."""
    import json
    import shutil

    from lorascope.delta.plan import declares_tied

    base = shutil.copytree(pair[0], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config.pop("tie_word_embeddings", None)
    for model_type, tied in (("gemma2", True), ("llama", False)):
        (base / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        assert declares_tied(open_checkpoint(base)) is tied
