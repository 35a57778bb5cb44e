"""lorascope/checkpoint/store.py: header-only reads, sharded folders, torch pickles and their refusals."""

import json
import pickle

import numpy as np
import pytest
import torch
from builders import save_st

from lorascope.checkpoint import open_checkpoint, open_store, sniff
from lorascope.errors import LorascopeError


def test_safetensors_header_only_infos(tmp_path):
    p = save_st(
        tmp_path / "w.bin",
        {"a.weight": torch.zeros(3, 4, dtype=torch.bfloat16), "b": torch.zeros(5, dtype=torch.float16)},
        {"k": "v"},
    )
    assert sniff(p) == "safetensors"  # recognized from content, not the .bin extension
    store = open_store(p)
    assert store.info("a.weight").shape == (3, 4) and store.info("a.weight").dtype == "bfloat16"
    assert store.metadata == {"k": "v"}
    assert store.get("b").dtype == torch.float16


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16])
def test_low_precision_dtypes_are_upcast(tmp_path, dtype):
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    p = save_st(tmp_path / "x.safetensors", {"x.weight": x.to(dtype)})
    ref = open_checkpoint(p).store
    assert ref.info("x.weight").is_float
    from lorascope.checkpoint import TensorRef

    got = TensorRef(ref, "x.weight").load(torch.float32)
    assert got.dtype == torch.float32 and torch.equal(got, x.to(dtype).float())
    # the numpy reader widens bfloat16 / float8 bit patterns itself: it must agree with torch exactly
    assert np.array_equal(TensorRef(ref, "x.weight").load_numpy(np.float32), x.to(dtype).float().numpy())


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16])
def test_numpy_widening_matches_torch_for_every_bit_pattern(tmp_path, dtype):
    bits = (
        torch.arange(256, dtype=torch.uint8)
        if dtype.itemsize == 1
        else torch.randint(
            0, 2**16, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.int32
        ).to(torch.uint16)
    )
    x = bits.view(dtype)
    p = save_st(tmp_path / "all.safetensors", {"x": x})
    got = open_store(p).get_numpy("x")
    want = x.float().numpy()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_sharded_safetensors_folder_via_index(tmp_path):
    save_st(tmp_path / "model-00001-of-00002.safetensors", {"a.weight": torch.ones(2, 2)})
    save_st(tmp_path / "model-00002-of-00002.safetensors", {"b.weight": torch.ones(3, 2)})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a.weight": "model-00001-of-00002.safetensors",
                    "b.weight": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "hf" and sorted(ckpt.store.keys()) == ["a.weight", "b.weight"]
    assert ckpt.store.get("b.weight").shape == (3, 2)
    assert len(ckpt.store.files()) == 2


def test_index_naming_a_missing_shard_fails_clearly(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(LorascopeError, match="gone.safetensors"):
        open_store(tmp_path)


def test_sharded_torch_bin_and_state_dict_wrapper(tmp_path):
    torch.save({"state_dict": {"a.weight": torch.ones(2, 2)}, "epoch": 3}, tmp_path / "pytorch_model-1.bin")
    torch.save({"b.weight": torch.ones(2, 2)}, tmp_path / "pytorch_model-2.bin")
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": "pytorch_model-1.bin", "b.weight": "pytorch_model-2.bin"}})
    )
    store = open_store(tmp_path)
    assert sorted(store.keys()) == ["a.weight", "b.weight"] and store.format == "torch-sharded"


def test_legacy_non_zip_torch_file_loads_without_mmap(tmp_path):
    p = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.eye(3)}}, p, _use_new_zipfile_serialization=False)
    assert torch.equal(open_store(p).get("w"), torch.eye(3))


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_needs_code_is_refused(tmp_path, capsys):
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.eye(2), "obj": Evil()}, p)
    with pytest.raises(LorascopeError, match="weights_only=True"):
        open_store(p)
    assert "this must never run" not in capsys.readouterr().out


def test_plain_pickle_is_refused(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=2))
    with pytest.raises(LorascopeError):
        open_store(p)


def test_truncated_safetensors_is_reported(tmp_path):
    p = save_st(tmp_path / "t.safetensors", {"w": torch.ones(100, 100)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LorascopeError, match="past the end of the file"):
        open_store(p)


def test_unknown_file_and_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LorascopeError, match="neither a safetensors"):
        open_store(tmp_path / "notes.txt")
    with pytest.raises(LorascopeError, match="does not exist"):
        open_store(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LorascopeError, match="folder without weights"):
        open_store(tmp_path / "empty")


def test_stores_pickle_for_workers(tmp_path):
    p = save_st(tmp_path / "w.safetensors", {"w": torch.arange(6.0).reshape(2, 3)})
    store = open_store(p)
    store.get("w")  # opens a handle, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    assert torch.equal(clone.get("w"), store.get("w"))
