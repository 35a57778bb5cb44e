"""lorascope/checkpoint/gguf_names.py: llama.cpp's row order undone, and rows of a store reordered lazily."""

import numpy as np
import pytest
import torch
from builders import save_st

from lorascope.checkpoint.gguf_names import RowOrder, rope_row_order
from lorascope.checkpoint.safetensors_file import SafetensorsFile


@pytest.mark.parametrize("rows, heads", [(32, 4), (16, 2), (64, 8)])
def test_rope_row_order_is_the_converters_permute(rows, heads):
    w = np.arange(rows * 3).reshape(rows, 3)
    d = rows // heads  # LlamaModel.permute, written out: (heads, 2, d/2, cols) -> swap axes 1, 2
    permuted = w.reshape(heads, 2, d // 2, 3).swapaxes(1, 2).reshape(rows, 3)
    order = rope_row_order(rows, heads)
    np.testing.assert_array_equal(w[order], permuted)
    assert sorted(order) == list(range(rows))  # a permutation


def test_row_order_store_reorders_only_its_tensors(tmp_path):
    x = torch.arange(12.0).reshape(6, 2)
    inner = SafetensorsFile(save_st(tmp_path / "a.safetensors", {"q": x, "v": x.clone()}))
    order = np.array([5, 4, 3, 2, 1, 0])
    store = RowOrder(inner, {"q": order})
    assert store.keys() == ["q"] and store.files() == inner.files() and store.format == inner.format
    assert torch.equal(store.get("q"), x.flip(0))
    np.testing.assert_array_equal(store.get_numpy("q"), x.flip(0).numpy())
