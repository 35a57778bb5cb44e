"""Fixtures of the trainer tests: a tiny pre-trained MiniGPT base, built once per session in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorascope.train.pretrain import PretrainConfig, pretrain

# A base small enough to pre-train in seconds: 2 layers of width 32, 8 countries.
TINY = PretrainConfig(size="tiny", n_entities=8, steps=300, lr=5e-3, batch_size=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and stay fast on a machine busy with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_config() -> PretrainConfig:
    return TINY


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lorascope-cache")


@pytest.fixture(scope="session")
def tiny_base(cache) -> Path:
    """The folder of a tiny MiniGPT pre-trained on an 8-country world (a Hugging Face Llama folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LORASCOPE_CACHE", str(cache))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path, _ = pretrain(TINY)
    finally:
        torch.set_num_threads(before)
        mp.undo()
    return path
