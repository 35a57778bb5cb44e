"""lorascope/checkpoint/torch_file.py: pickles loaded only with weights_only=True, rows from the mmap."""

import collections

import numpy as np
import pytest
import torch

from lorascope.checkpoint.torch_file import TorchFile, load_torch_state
from lorascope.errors import LorascopeError


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_state_dicts_and_their_wrappers_load(tmp_path):
    x = torch.randn(8, 3)
    torch.save({"state_dict": {"w": x}, "epoch": 3}, tmp_path / "ckpt.pt")
    assert torch.equal(load_torch_state(tmp_path / "ckpt.pt")["w"], x)
    store = TorchFile(tmp_path / "ckpt.pt")
    assert store.keys() == ["w"] and store.info("w").dtype == "float32"
    np.testing.assert_array_equal(store.get_rows("w", 2, 5), x[2:5].numpy())


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    torch.save(collections.OrderedDict(w=torch.ones(2), evil=Evil()), tmp_path / "evil.bin")
    with pytest.raises(LorascopeError, match="weights_only=True"):
        load_torch_state(tmp_path / "evil.bin")
    assert "this must never run" not in capsys.readouterr().out


def test_something_that_is_no_state_dict_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(LorascopeError, match="holds no state dict"):
        load_torch_state(tmp_path / "list.pt")
