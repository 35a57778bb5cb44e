"""lorascope/checkpoint/tensor_store.py: the lazy store — shapes before data, bounded reads, shards,
pickling."""

import pickle

import numpy as np
import pytest
import torch
from builders import save_st

from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.checkpoint.tensor_store import MultiFileStore
from lorascope.errors import LorascopeError


def test_rows_info_and_pickling(tmp_path, monkeypatch):
    x = torch.arange(24, dtype=torch.float32).reshape(6, 2, 2)
    store = SafetensorsFile(save_st(tmp_path / "a.safetensors", {"w": x}))
    assert store.keys() == ["w"] and "w" in store and len(store) == 1 and store.info("w").shape == (6, 2, 2)
    np.testing.assert_array_equal(
        store.get_rows("w", 2, 4), x.reshape(6, 4)[2:4].numpy()
    )  # conv as (out, in·k)
    assert store.get_rows("w", 3, 3).shape == (0, 4)
    with pytest.raises(LorascopeError, match="do not lie within its 6 rows"):
        store.get_rows("w", 4, 9)
    with pytest.raises(LorascopeError, match="no tensor named 'v'"):
        store.info("v")
    back = pickle.loads(pickle.dumps(store))  # the index is rebuilt from the header
    np.testing.assert_array_equal(back.get_numpy("w"), x.numpy())
    monkeypatch.setenv("LORASCOPE_MAX_READ", "16")
    with pytest.raises(LorascopeError, match="reading it whole needs more than"):
        store.get("w")
    assert store.get_rows("w", 0, 1).shape == (1, 4)  # one row (16 bytes) fits


def test_shards_are_one_store_and_duplicates_are_refused(tmp_path):
    a = SafetensorsFile(save_st(tmp_path / "a.safetensors", {"x": torch.ones(2)}))
    b = SafetensorsFile(save_st(tmp_path / "b.safetensors", {"y": torch.zeros(3)}))
    both = MultiFileStore(tmp_path, [a, b])
    assert sorted(both.keys()) == ["x", "y"] and both.format == "safetensors-sharded"
    assert both.files() == [a.path, b.path] and both.get_numpy("y").tolist() == [0, 0, 0]
    with pytest.raises(LorascopeError, match="stored twice across shards"):
        MultiFileStore(
            tmp_path, [a, SafetensorsFile(save_st(tmp_path / "c.safetensors", {"x": torch.ones(2)}))]
        )
    with pytest.raises(LorascopeError, match="that no shard holds"):
        MultiFileStore(tmp_path, [a], weight_map={"x": "a.safetensors", "z": "missing.safetensors"})
