"""lorascope/checkpoint/gguf_file.py: a GGUF file as a lazy store, dequantized by the gguf package itself."""

import numpy as np
import pytest

from lorascope.checkpoint.gguf_file import GGUFFile, is_gguf

gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'lorascope[gguf]')")


def write(path, tensors):
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type("model")
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_shapes_are_row_major_and_values_are_the_packages(tmp_path):
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal((8, 64)).astype(np.float32)
    q8 = gguf.quants.quantize(x32, gguf.GGMLQuantizationType.Q8_0)
    path = write(
        tmp_path / "m.gguf",
        {
            "blk.0.attn_q.weight": (x32, gguf.GGMLQuantizationType.F32),
            "blk.0.attn_k.weight": (q8, gguf.GGMLQuantizationType.Q8_0),
        },
    )
    assert is_gguf(path) and not is_gguf(tmp_path / "missing.gguf")
    store = GGUFFile(path)
    assert store.info("blk.0.attn_q.weight").shape == (8, 64) and store.info("blk.0.attn_k.weight").shape == (
        8,
        64,
    )
    assert store.metadata["general.type"] == "model" and store.ggml_type("blk.0.attn_k.weight") == "Q8_0"
    np.testing.assert_array_equal(store.get_numpy("blk.0.attn_q.weight"), x32)
    want = gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0).reshape(8, 64)
    np.testing.assert_array_equal(
        store.get_numpy("blk.0.attn_k.weight"), want
    )  # the package's dequantization
    assert np.abs(want - x32).max() < 0.05 * np.abs(x32).max()  # and it is a quantization of x


def test_a_file_that_is_not_gguf_is_told_apart(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    assert not is_gguf(tmp_path / "x.gguf")
