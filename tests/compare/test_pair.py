"""lorascope/compare/pair.py: one module measured between two updates, against float64 numpy on dense ΔW."""

import numpy as np
import pytest
import torch
from refs import planted

from lorascope.compare.intruders import IntruderOptions
from lorascope.compare.pair import PairOptions, compare_pair, update_svd
from lorascope.compare.subspace import GridOptions
from lorascope.linalg import Dense, LowRank

rng = np.random.default_rng(5)


def test_update_svd_is_cut_to_the_numerical_rank():
    b, a = rng.standard_normal((20, 3)), rng.standard_normal((3, 16))
    for form in (LowRank(b, a, 1.0), Dense(torch.tensor(b @ a))):
        got = update_svd(form)
        assert got.s.numel() == 3 and got.u.shape == (20, 3) and got.v.shape == (16, 3)
        np.testing.assert_allclose((got.u * got.s) @ got.v.T, b @ a, atol=1e-10)


def test_cosine_and_phi_against_numpy():
    b1, a1 = rng.standard_normal((24, 2)), rng.standard_normal((2, 18))
    b2, a2 = rng.standard_normal((24, 3)), rng.standard_normal((3, 18))
    d1, d2 = b1 @ a1, b2 @ a2
    res = compare_pair(
        LowRank(b1, a1, 1.0),
        Dense(torch.tensor(d2)),
        opts=PairOptions(grid=GridOptions(cap=8), intruders=None),
    )
    cos = float(np.sum(d1 * d2) / (np.linalg.norm(d1) * np.linalg.norm(d2)))
    assert res.row["cosine"] == pytest.approx(cos, rel=1e-10)
    u1, u2 = np.linalg.svd(d1)[0][:, :2], np.linalg.svd(d2)[0][:, :3]
    phi = np.linalg.norm(u1.T @ u2) ** 2 / 2  # φ(2, 3) = ‖U₁ᵀU₂‖_F² / min(i, j) (Hu et al. 2021, Eq. 4)
    assert res.row["phi_all"] == pytest.approx(phi, rel=1e-8)
    assert res.row["rank_x"] == 2 and res.row["rank_y"] == 3 and "amplification_x" not in res.row


def test_with_a_base_amplification_and_intruders_appear_for_both_updates():
    w = planted(16, 12, np.geomspace(3.0, 0.3, 12), seed=2)
    x, y = (
        LowRank(rng.standard_normal((16, 2)), rng.standard_normal((2, 12)), 0.1),
        Dense(torch.tensor(0.05 * rng.standard_normal((16, 12)))),
    )
    opts = PairOptions(grid=GridOptions(cap=4), intruders=IntruderOptions(intruder_k=3))
    res = compare_pair(x, y, torch.tensor(w), opts, labels=("lora", "full"))
    assert [a["update"] for a in res.amplification] == ["lora", "full"] and len(res.intruders) == 2
    assert all(len(t) == 3 for t in res.intruders) and res.row["base_fro_norm"] == pytest.approx(
        np.linalg.norm(w)
    )


@pytest.mark.parametrize(
    "bad, field",
    [({"precision": "float16"}, "precision"), ({"svd": "qr"}, "svd"), ({"amp_rank": 0}, "amp_rank")],
)
def test_options_name_the_bad_field(bad, field):
    with pytest.raises(ValueError, match=field):
        PairOptions(**bad)
