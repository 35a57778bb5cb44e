"""TensorStore.get_rows: row blocks of a matrix, equal to the same rows of the whole tensor, read without the
rest."""

import numpy as np
import pytest
import torch
from builders import save_st

from lorascope.checkpoint import open_store
from lorascope.errors import LorascopeError

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2]


def _matrix(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 3).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_rows_equal_the_rows_of_the_whole_tensor(tmp_path, dtype, kind):
    x = _matrix((37, 11), dtype)
    conv = _matrix((6, 3, 3, 2), dtype, seed=1)
    tensors = {"w": x, "conv": conv}
    if kind == "safetensors":
        path = save_st(tmp_path / "m.safetensors", tensors)
    else:
        path = tmp_path / "m.pt"
        torch.save(tensors, path)
    store = open_store(path)
    # the reference: torch's own widening of the full tensor, sliced in torch
    want = x.float().numpy() if dtype not in (torch.float16, torch.float64) else x.numpy()
    for start, stop in [(0, 37), (0, 1), (5, 17), (36, 37), (10, 10)]:
        got = store.get_rows("w", start, stop)
        assert got.shape == (stop - start, 11)
        assert got.dtype == store.get_numpy("w").dtype
        np.testing.assert_array_equal(got, want[start:stop])
    flat = (conv.float() if dtype not in (torch.float16, torch.float64) else conv).reshape(6, -1).numpy()
    np.testing.assert_array_equal(store.get_rows("conv", 2, 5), flat[2:5])


def test_rows_of_a_sharded_store(tmp_path):
    import json

    a, b = _matrix((8, 4), torch.float32), _matrix((5, 3), torch.bfloat16, 2)
    save_st(tmp_path / "s1.safetensors", {"a": a})
    save_st(tmp_path / "s2.safetensors", {"b": b})
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    store = open_store(tmp_path)
    np.testing.assert_array_equal(store.get_rows("b", 1, 4), b.float().numpy()[1:4])
    np.testing.assert_array_equal(store.get_rows("a", 3, 8), a.numpy()[3:])


@pytest.mark.parametrize("start, stop", [(-1, 2), (3, 2), (0, 9), (True, 2)])
def test_rows_outside_the_matrix_are_refused(tmp_path, start, stop):
    store = open_store(save_st(tmp_path / "m.safetensors", {"w": torch.zeros(8, 2)}))
    with pytest.raises(LorascopeError, match="do not lie within its 8 rows"):
        store.get_rows("w", start, stop)


def test_rows_of_a_vector_are_refused(tmp_path):
    store = open_store(save_st(tmp_path / "m.safetensors", {"v": torch.zeros(8)}))
    with pytest.raises(LorascopeError, match="matrices"):
        store.get_rows("v", 0, 2)


def test_a_tensor_beyond_the_read_limit_is_refused_whole_but_streams_in_rows(tmp_path, monkeypatch):
    x = _matrix((64, 32), torch.float32)
    store = open_store(save_st(tmp_path / "m.safetensors", {"w": x}))
    monkeypatch.setenv("LORASCOPE_MAX_READ", "4096")  # bytes: 8 KiB tensor, 4 KiB allowed at once
    with pytest.raises(LorascopeError, match=r"8192 bytes.*LORASCOPE_MAX_READ"):
        store.get_numpy("w")
    with pytest.raises(LorascopeError, match="LORASCOPE_MAX_READ"):
        store.get("w")
    blocks = [store.get_rows("w", i, i + 16) for i in range(0, 64, 16)]  # 2 KiB each
    np.testing.assert_array_equal(np.vstack(blocks), x.numpy())
