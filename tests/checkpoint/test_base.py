"""lorascope/checkpoint/base.py: TensorRef views (as stored, flattened, transposed, rows, one expert) and the
module and checkpoint records."""

import numpy as np
import pytest
import torch
from builders import save_st

from lorascope.checkpoint.base import VIEWS, AdapterModule, TensorRef, upcast
from lorascope.checkpoint.safetensors_file import SafetensorsFile
from lorascope.errors import LorascopeError


@pytest.fixture
def store(tmp_path):
    g = torch.Generator().manual_seed(0)
    return SafetensorsFile(
        save_st(
            tmp_path / "a.safetensors",
            {
                "conv": torch.randn(4, 3, 2, 2, generator=g),
                "lin": torch.randn(5, 3, generator=g),
                "experts": torch.randn(3, 4, 2, generator=g),
                "bad": torch.tensor([1.0, float("nan")]),
            },
        )
    )


def test_views_shape_and_values_agree(store):
    assert VIEWS == ("as_is", "flatten", "transpose")
    conv = store.get("conv")
    flat = TensorRef(store, "conv", "flatten")
    assert flat.shape == (4, 12) and flat.stored_shape == (4, 3, 2, 2)
    np.testing.assert_array_equal(flat.load_numpy(), conv.reshape(4, 12).double().numpy())
    t = TensorRef(store, "lin", "transpose", rows=2)
    assert t.shape == (2, 5)
    np.testing.assert_array_equal(t.load_numpy(), store.get("lin").T[:2].double().numpy())
    e = TensorRef(store, "experts", index=1)
    assert e.shape == (4, 2) and torch.equal(e.load(torch.float32, "cpu"), store.get("experts")[1])
    with pytest.raises(ValueError, match="view must be one of"):
        TensorRef(store, "lin", "sideways")


def test_non_finite_values_are_refused_naming_the_tensor(store):
    with pytest.raises(LorascopeError, match="bad"):
        TensorRef(store, "bad").load_numpy()


def test_upcast_never_hands_back_the_stored_tensor_when_a_copy_is_asked():
    x = torch.ones(2, dtype=torch.float64)
    assert upcast(x, torch.float64) is x or upcast(x, torch.float64).data_ptr() == x.data_ptr()
    assert upcast(x, torch.float64, copy=True).data_ptr() != x.data_ptr()
    assert upcast(torch.ones(2, dtype=torch.bfloat16), torch.float64).dtype == torch.float64
    with pytest.raises(LorascopeError, match="floating-point"):
        upcast(torch.ones(2, dtype=torch.int64), torch.float64)


def test_adapter_module_factors(store):
    m = AdapterModule(
        "x",
        "lora",
        {"up": TensorRef(store, "lin"), "down": TensorRef(store, "lin", "transpose")},
        (5, 5),
        3,
        6.0,
        2.0,
    )
    assert m.left.key == "lin" and m.right.view == "transpose" and m.magnitude is None and m.tensor_rank == 3
