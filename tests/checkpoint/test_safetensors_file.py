"""lorascope/checkpoint/safetensors_file.py: headers checked as the safetensors library checks them."""

import json
import struct

import numpy as np
import pytest
import torch
from builders import save_st
from safetensors.torch import load_file

from lorascope.checkpoint.safetensors_file import SafetensorsFile, read_safetensors_header
from lorascope.errors import LorascopeError


def raw_file(path, header: dict, data: bytes = b""):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_tensors_read_as_the_library_reads_them(tmp_path):
    tensors = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(5).to(torch.bfloat16)}
    path = save_st(tmp_path / "m.safetensors", tensors, metadata={"format": "pt"})
    infos, metadata, spans = read_safetensors_header(path)
    assert infos["a"].shape == (3, 4) and infos["b"].dtype == "bfloat16" and metadata == {"format": "pt"}
    assert set(spans) == {"a", "b"}
    store, want = SafetensorsFile(path), load_file(str(path))
    for key in tensors:
        assert torch.equal(store.get(key), want[key])
    np.testing.assert_array_equal(store.get_rows("a", 1, 3), want["a"][1:3].numpy())


@pytest.mark.parametrize(
    "header, data, message",
    [
        (
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "a",
        ),  # 4 floats need 16 bytes
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},
            },
            b"\0" * 6,
            "b",
        ),  # overlapping
        ({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "Q9"),
    ],
)
def test_headers_the_library_refuses_are_refused_by_name(tmp_path, header, data, message):
    path = raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(LorascopeError, match=message):
        read_safetensors_header(path)
