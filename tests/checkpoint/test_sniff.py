"""Format detection from content: a safetensors header length that starts with the byte of a pickle opcode."""

import json
import struct

import numpy as np
import torch

from lorascope.checkpoint import open_store, sniff


def test_a_header_length_whose_low_byte_is_0x80_is_safetensors_not_a_pickle(tmp_path):
    data = np.arange(6, dtype=np.float32)
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, data.nbytes]}}
    text = json.dumps(header).encode()
    text += b" " * (
        0x180 - len(text)
    )  # 384 header bytes: the length's first byte is 0x80, pickle's PROTO opcode
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data.tobytes())
    assert path.read_bytes()[0] == 0x80
    assert sniff(path) == "safetensors"
    np.testing.assert_array_equal(open_store(path).get_numpy("w"), data.reshape(2, 3))


def test_a_torch_pickle_is_still_a_torch_file(tmp_path):
    path = tmp_path / "w.safetensors"  # named like safetensors, a pickle by content
    torch.save({"w": torch.ones(2, 2)}, path)
    assert sniff(path) == "torch"
    assert torch.equal(open_store(path).get("w"), torch.ones(2, 2))
