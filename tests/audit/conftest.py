"""Fixtures of the audit tests: the real config.json files and small configs written out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# distilbert-base-uncased and bert-base-uncased as published (their config.json values); no fixture file
# exists.
DISTILBERT = {
    "model_type": "distilbert",
    "architectures": ["DistilBertForMaskedLM"],
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
}
BERT = {
    "model_type": "bert",
    "architectures": ["BertForMaskedLM"],
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


@pytest.fixture(scope="session")
def configs(real_fixtures) -> dict[str, dict]:
    """Every real config.json fixture by file stem, plus bert and distilbert."""
    out = {p.stem: json.loads(p.read_text()) for p in sorted((real_fixtures / "configs").glob("*.json"))}
    assert len(out) >= 10, f"expected the ten real configs in {real_fixtures / 'configs'}"
    return {**out, "bert-base-uncased": BERT, "distilbert-base-uncased": DISTILBERT}


@pytest.fixture(scope="session")
def config_dir(real_fixtures) -> Path:
    return real_fixtures / "configs"


@pytest.fixture(scope="session")
def hf():
    """``hf_shapes``: a config's modules as transformers builds them on the meta device — the authority, and
    the only source for architectures outside the built-in rule (GPT-2, BERT, DistilBERT). Skips without
    the hf extra."""
    pytest.importorskip("transformers")
    from lorascope.audit.shape_source import hf_shapes

    return hf_shapes


@pytest.fixture(scope="session")
def shapes(configs):
    """A config's shapes by fixture name: the built-in rule where it covers the architecture, transformers for
    the others (skips without the hf extra)."""
    from lorascope.audit.shape_source import DECODERS, rule_shapes

    def get(name: str, head: str | None = None):
        if configs[name]["model_type"] in DECODERS:
            return rule_shapes(configs[name], head)
        pytest.importorskip("transformers")
        from lorascope.audit.shape_source import hf_shapes

        return hf_shapes(configs[name], head)

    return get
