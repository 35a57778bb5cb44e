"""lorascope/delta/scaled.py: IA3's ΔW = diag(l − 1)·W0 or W0·diag(l − 1) (Liu et al. 2022), against numpy."""

import numpy as np
import pytest
import torch

from lorascope.delta.scaled import ia3_update
from lorascope.errors import LorascopeError

rng = np.random.default_rng(2)


def test_output_and_input_axes_and_kernels():
    w0, l_out, l_in = rng.standard_normal((4, 6)), rng.uniform(0.5, 1.5, 4), rng.uniform(0.5, 1.5, 3)
    got = ia3_update(torch.tensor(w0), torch.tensor(l_out), "out", "multiplier").numpy()
    np.testing.assert_allclose(got, (l_out - 1)[:, None] * w0, rtol=1e-14)
    got = ia3_update(torch.tensor(w0), torch.tensor(l_in), "in", "multiplier").numpy()  # 2 kernel values each
    np.testing.assert_allclose(got, w0 * np.repeat(l_in - 1, 2)[None, :], rtol=1e-14)
    inc = ia3_update(w0, rng.standard_normal(4), "out", "increment")
    assert inc.shape == (4, 6)
    with pytest.raises(LorascopeError, match="5 entries, the weight 4 output features"):
        ia3_update(w0, np.ones(5), "out", "multiplier")
