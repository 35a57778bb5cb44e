"""lorascope/delta/lora.py and scaled.py: the LoRA relatives' forms against their dense definitions in float64
numpy (grouped-conv LoRA, one expert of a fused-parameter LoRA, AdaLoRA, VeRA, IA3 on a grouped conv)."""

import numpy as np
import pytest
import torch
from refs import ref_sigma

from lorascope import linalg
from lorascope.delta import form_from
from lorascope.delta.lora import expert_factors, grouped_up

rng = np.random.default_rng(0)


def check(form, dense):
    got = linalg.svd(form)
    want = ref_sigma(dense)
    np.testing.assert_allclose(got.s, want[: got.s.size], rtol=1e-9, atol=1e-11 * want[0])
    assert np.all(want[got.s.size :] <= 1e-9 * want[0])
    assert got.fro_norm == pytest.approx(np.linalg.norm(dense), rel=1e-10)
    np.testing.assert_allclose(np.asarray(form.to_dense()), dense, atol=1e-12 * np.abs(dense).max())


def test_grouped_lora_b_is_block_diagonal():
    """Output channel o of group g = o // (out/G) reads ranks g·r/G … (g+1)·r/G (a Conv with groups=G)."""
    out, r, groups, inp = 6, 4, 2, 7
    b = rng.standard_normal((out, r // groups))
    a = rng.standard_normal((r, inp))
    dense = np.zeros((out, inp))
    for o in range(out):
        g = o // (out // groups)
        dense[o] = b[o] @ a[g * (r // groups) : (g + 1) * (r // groups)]
    np.testing.assert_allclose(grouped_up(b, groups) @ a, dense)
    form = form_from("lora", {"up": b, "down": a}, scale=1.5, params={"groups": groups})
    check(form, 1.5 * dense)


def test_expert_factors_read_peft_layout():
    """PEFT: A.reshape(E, r, in)[e] and B.reshape(out, r, E)[:, :, e] (numpy's reshape: the same order)."""
    experts, r, out, inp = 3, 2, 5, 4
    a = rng.standard_normal((experts * r, inp))
    b = rng.standard_normal((out, r * experts))
    for e in range(experts):
        up, down = expert_factors(a, b, e, experts)
        np.testing.assert_array_equal(down, a.reshape(experts, r, inp)[e])
        np.testing.assert_array_equal(up, b.reshape(out, r, experts)[:, :, e])
        form = form_from(
            "lora_expert",
            {"lora_A": a, "lora_B": b},
            scale=0.5,
            shape=(out, inp),
            params={"expert": e, "experts": experts},
        )
        assert isinstance(form, linalg.LowRank)
        check(form, 0.5 * b.reshape(out, r, experts)[:, :, e] @ a.reshape(experts, r, inp)[e])


def test_adalora_diagonal_folded_into_the_left_factor():
    b, a, e = rng.standard_normal((9, 3)), rng.standard_normal((3, 7)), rng.standard_normal((3, 1))
    form = form_from("adalora", {"up": b, "down": a, "diag": e}, scale=8 / (12 + 1e-5), shape=(9, 7))
    check(form, 8 / (12 + 1e-5) * b @ (a * e))  # PEFT: B @ (A * E) · α / (ranknum + 1e-5)


def test_vera_slices_the_shared_projections():
    r, m, n, m_max, n_max = 4, 6, 5, 9, 8
    big_a, big_b = rng.standard_normal((r, n_max)), rng.standard_normal((m_max, r))
    lb, ld = rng.standard_normal(m), rng.standard_normal(r)
    tensors = {"vera_B": big_b[:m], "vera_A": big_a.T[:n], "lambda_b": lb, "lambda_d": ld}
    form = form_from("vera", tensors, shape=(m, n))
    check(form, (lb[:, None] * big_b[:m]) @ (ld[:, None] * big_a[:, :n]))  # PEFT vera.Linear.get_delta_weight


def test_ia3_on_a_grouped_conv_scales_each_group_by_its_slice():
    """PEFT _get_ia3_scaling_for_weight: l (1, in) on a weight (out, in/G, k, k): group g gets l[g·in/G …]."""
    out, inp, groups, k = 6, 4, 2, 3
    w0 = rng.standard_normal((out, inp // groups, k, k))
    l_vec = 1 + 0.3 * rng.standard_normal(inp)
    want = np.empty_like(w0)
    per = inp // groups
    for o in range(out):
        g = o // (out // groups)
        want[o] = w0[o] * l_vec[g * per : (g + 1) * per, None, None]
    base = torch.tensor(w0.reshape(out, -1))
    got = form_from(
        "ia3", {"scale": torch.tensor(l_vec), "base": base}, params={"axis": "in", "groups": groups}
    )
    np.testing.assert_allclose(got.matrix.numpy(), (want - w0).reshape(out, -1), atol=1e-12)


def test_torch_inputs_give_the_same_forms():
    """On a GPU the factored families get torch tensors: the same forms as from numpy arrays."""
    b, a = rng.standard_normal((6, 2)), rng.standard_normal((4, 7))
    for tensors in ({"up": b, "down": a}, {"up": torch.tensor(b), "down": torch.tensor(a)}):
        form = form_from("lora", tensors, params={"groups": 2}, shape=(6, 7))
        np.testing.assert_allclose(np.asarray(form.to_dense()), grouped_up(b, 2) @ a, atol=1e-12)
    lora_a, lora_b = rng.standard_normal((6, 4)), rng.standard_normal((5, 6))
    forms = [
        form_from("lora_expert", {"lora_A": x, "lora_B": y}, shape=(5, 4), params={"expert": 1, "experts": 3})
        for x, y in ((lora_a, lora_b), (torch.tensor(lora_a), torch.tensor(lora_b)))
    ]
    np.testing.assert_allclose(np.asarray(forms[0].to_dense()), np.asarray(forms[1].to_dense()), atol=1e-12)
