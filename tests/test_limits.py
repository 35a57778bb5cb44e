"""lorascope/limits.py: sizes a file claims are bounded before anything is allocated for them."""

import json

import pytest

from lorascope import limits
from lorascope.errors import LorascopeError


def test_strict_json_refuses_duplicates_nan_deep_nesting_and_bad_utf8():
    assert limits.loads_json('{"a": 1, "b": [1, 2]}', "x") == {"a": 1, "b": [1, 2]}
    with pytest.raises(LorascopeError, match="gives the key 'a' twice"):
        limits.loads_json('{"a": 1, "a": 2}', "cfg.json")
    with pytest.raises(LorascopeError, match="not valid JSON"):
        limits.loads_json('{"a": NaN}', "cfg.json")
    with pytest.raises(LorascopeError, match="too deep"):
        limits.loads_json("[" * 100_000 + "]" * 100_000, "deep.json")
    with pytest.raises(LorascopeError, match="not UTF-8"):
        limits.loads_json(b"{\xff}", "bytes.json")


def test_read_json_bounds_the_file_size(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8, "pad": "x" * 200}))
    assert limits.read_json(path, "a model config")["hidden_size"] == 8
    with pytest.raises(LorascopeError, match=r"more than the 100 B a JSON config"):
        limits.read_json(path, "a model config", max_bytes=100)
    with pytest.raises(LorascopeError, match="does not exist"):
        limits.read_json(tmp_path / "missing.json")
    with pytest.raises(LorascopeError, match="not a regular file"):
        limits.read_json(tmp_path, "a model config")


def test_config_counts_and_lists_are_bounded():
    limits.check_config_sizes({"num_hidden_layers": 32, "text_config": {"hidden_size": 4096}}, "c")
    with pytest.raises(
        LorascopeError, match=r"'num_hidden_layers' is 1000000000000.0; expected a whole number"
    ):
        limits.check_config_sizes({"num_hidden_layers": 1e12}, "c")  # a float count is refused
    with pytest.raises(LorascopeError, match=r"c \(vision_config\): 'hidden_size'"):
        limits.check_config_sizes({"vision_config": {"hidden_size": limits.MAX_DIM + 1}}, "c")
    with pytest.raises(LorascopeError, match="entries"):
        limits.check_config_sizes({"target_modules": [0] * (limits.MAX_LIST + 1)}, "c")


def test_the_read_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("LORASCOPE_MAX_READ", "1M")
    assert limits.read_limit() == 1 << 20
    limits.check_read(1 << 20, "tensor w")
    with pytest.raises(LorascopeError, match=r"tensor w is 2.0 MiB \(2097152 bytes\)"):
        limits.check_read(2 << 20, "tensor w")
    monkeypatch.setenv("LORASCOPE_MAX_READ", "lots")
    with pytest.raises(LorascopeError, match="LORASCOPE_MAX_READ"):
        limits.read_limit()


def test_yaml_aliases_are_counted_expanded():
    assert limits.load_yaml("a: [1, 2]\nb: x\n", "claims.yaml") == {"a": [1, 2], "b": "x"}
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcde", "bcdef")
    )
    with pytest.raises(LorascopeError, match="claims.yaml"):
        limits.load_yaml(bomb, "claims.yaml")
