"""lorascope/train/pretrain.py: the cached default base — its key, its cache folder, its checks."""

import pytest

from lorascope.train.pretrain import PretrainConfig, cache_dir, cached_base


def test_the_cache_key_follows_every_field(monkeypatch, tmp_path):
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path))
    a, b = PretrainConfig(), PretrainConfig(steps=10)
    assert a.key() == PretrainConfig().key() and a.key() != b.key() and len(a.key()) == 12
    assert cache_dir() == tmp_path and cached_base(a) == tmp_path / f"minigpt-{a.key()}"
    monkeypatch.delenv("LORASCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lorascope"


@pytest.mark.parametrize(
    "bad, field", [({"size": "huge"}, "size"), ({"steps": 0}, "steps"), ({"n_entities": 1}, "n_entities")]
)
def test_bad_configs_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        PretrainConfig(**bad)
