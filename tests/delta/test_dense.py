"""lorascope/delta/dense.py: a full fine-tune's ΔW = W_tuned − W_base, formed in the working precision."""

import numpy as np
import torch

from lorascope.delta import FAMILIES, form_from
from lorascope.linalg import Dense


def test_dense_update_is_the_difference_and_leaves_the_inputs_alone():
    rng = np.random.default_rng(0)
    w0, w1 = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    tuned, base = torch.tensor(w1), torch.tensor(w0)
    form = form_from("dense", {"tuned": tuned, "base": base})
    assert isinstance(form, Dense)
    np.testing.assert_array_equal(np.asarray(form.to_dense()), w1 - w0)
    np.testing.assert_array_equal(tuned.numpy(), w1)  # the stored tensor is copied before the subtraction
    family = FAMILIES["dense"]
    assert family.needs_base and family.form == "Dense" and not family.numpy and family.parts == ("tuned",)
