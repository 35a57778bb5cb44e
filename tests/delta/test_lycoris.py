"""lorascope/delta/lycoris.py: LoHa and LoKr forms against their dense products in float64 numpy (as
LyCORIS's make_weight / make_weight_cp / make_kron define them), linear and conv, with Tucker cores."""

import numpy as np
import pytest
import torch
from refs import ref_sigma

from lorascope import linalg
from lorascope.delta import form_from

rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape)


def cp(t, wa, wb):
    """LyCORIS make_weight_cp: einsum('i j k l, i p, j r -> p r k l')."""
    return np.einsum("ijkl,ip,jr->prkl", t, wa, wb)


def check(form, dense):
    got = linalg.svd(form)
    want = ref_sigma(dense)
    assert got.complete
    np.testing.assert_allclose(got.s, want[: got.s.size], rtol=1e-9, atol=1e-11 * want[0])
    assert np.all(want[got.s.size :] <= 1e-10 * want[0])
    assert got.fro_norm == pytest.approx(np.linalg.norm(dense), rel=1e-11)


@pytest.mark.parametrize("m,n,r", [(40, 30, 3), (8, 6, 4)])  # r² < min(m, n) factored; r² ≥ min(m, n) dense
def test_loha_linear(m, n, r):
    t = {"hada_w1_a": rand(m, r), "hada_w1_b": rand(r, n), "hada_w2_a": rand(m, r), "hada_w2_b": rand(r, n)}
    form = form_from("loha", t, scale=0.75, shape=(m, n))
    dense = 0.75 * (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
    assert isinstance(form, linalg.LowRank if r * r < min(m, n) else linalg.Dense)
    check(form, dense)


def test_loha_tucker_conv():
    out, inp, k, r = 12, 5, 3, 2
    t = {
        "hada_t1": rand(r, r, k, k),
        "hada_w1_a": rand(r, out),
        "hada_w1_b": rand(r, inp),
        "hada_t2": rand(r, r, k, k),
        "hada_w2_a": rand(r, out),
        "hada_w2_b": rand(r, inp),
    }
    w = cp(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"]) * cp(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    check(form_from("loha", t, scale=2.0, shape=(out, inp * k * k)), 2.0 * w.reshape(out, -1))


@pytest.mark.parametrize(
    "w1,w2", [("full", "full"), ("full", "lowrank"), ("lowrank", "lowrank"), ("lowrank", "full")]
)
def test_lokr_linear(w1, w2):
    (o1, i1), (o2, i2), r = (4, 6), (10, 8), 3
    t = {}
    t.update(
        {"lokr_w1": rand(o1, i1)} if w1 == "full" else {"lokr_w1_a": rand(o1, r), "lokr_w1_b": rand(r, i1)}
    )
    t.update(
        {"lokr_w2": rand(o2, i2)} if w2 == "full" else {"lokr_w2_a": rand(o2, r), "lokr_w2_b": rand(r, i2)}
    )
    a = t["lokr_w1"] if w1 == "full" else t["lokr_w1_a"] @ t["lokr_w1_b"]
    b = t["lokr_w2"] if w2 == "full" else t["lokr_w2_a"] @ t["lokr_w2_b"]
    form = form_from("lokr", t, scale=-0.5, shape=(o1 * o2, i1 * i2))
    assert isinstance(form, linalg.Kronecker)
    check(form, -0.5 * np.kron(a, b))


def test_lokr_conv_full_and_tucker():
    (o1, i1), (o2, i2), k, r = (2, 3), (6, 4), 3, 2
    w1 = rand(o1, i1)
    w2 = rand(o2, i2, k, k)
    # LyCORIS make_kron: w1 unsqueezed to (o1, i1, 1, 1), torch.kron with the 4-D w2, flattened to
    # (out, in·k·k)
    want = np.kron(w1[:, :, None, None], w2).reshape(o1 * o2, -1)
    check(form_from("lokr", {"lokr_w1": w1, "lokr_w2": w2.reshape(o2, -1)}, shape=want.shape), want)
    t2, wa, wb = rand(r, r, k, k), rand(r, o2), rand(r, i2)
    want = np.kron(w1[:, :, None, None], cp(t2, wa, wb)).reshape(o1 * o2, -1)
    check(
        form_from("lokr", {"lokr_w1": w1, "lokr_t2": t2, "lokr_w2_a": wa, "lokr_w2_b": wb}, shape=want.shape),
        want,
    )


def test_ia3_both_axes_and_conv_columns():
    import torch

    w0 = torch.tensor(rand(6, 8 * 9))  # a conv with 8 input channels and a 3×3 kernel, flattened
    l_in = torch.tensor(rand(8))
    got = form_from("ia3", {"scale": l_in, "base": w0}, params={"axis": "in"}).matrix
    want = w0.numpy() * (np.repeat(l_in.numpy(), 9) - 1)[None, :]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    l_out = torch.tensor(rand(6, 1))
    got = form_from("ia3", {"scale": l_out, "base": w0}, params={"axis": "out", "stored": "increment"}).matrix
    np.testing.assert_allclose(got.numpy(), l_out.numpy() * w0.numpy(), rtol=1e-12)


@pytest.mark.parametrize("kernel", [(3,), (3, 3), (2, 3, 3)])  # Conv1d, Conv2d, Conv3d cores
def test_locon_tucker_core_stays_factored(kernel):
    """LyCORIS LoCon with lora_mid (rebuild_tucker):
    ΔW[p, q, k…] = s·Σ_ij mid[i, j, k…] up[p, i] down[j, q]."""
    out, inp, r = 9, 5, 3
    up, down, mid = rand(out, r), rand(r, inp), rand(r, r, *kernel)
    want = 0.5 * np.einsum("ij...,pi,jq->pq...", mid, up, down).reshape(out, -1)
    form = form_from("lora", {"up": up, "down": down, "mid": mid}, scale=0.5)
    assert isinstance(form, linalg.LowRank) and form.inner_rank == r
    check(form, want)


def test_full_is_the_stored_difference():
    diff = rand(7, 12)
    form = form_from("full", {"diff": diff}, shape=(7, 12))
    assert isinstance(form, linalg.Dense)
    check(form, diff)


def test_dora_per_input_channel_norm_of_a_conv_and_over_loha():
    """LyCORIS weight_decompose with wd_on_output=False: the norm of each input channel runs over the output
    rows and that channel's kernel positions; DoRA over LoHa decomposes LoHa's own ΔW′."""
    out, inp, k, r = 6, 4, 9, 2
    w0 = rand(out, inp * k)
    t = {
        "hada_w1_a": rand(out, r),
        "hada_w1_b": rand(r, inp * k),
        "hada_w2_a": rand(out, r),
        "hada_w2_b": rand(r, inp * k),
    }
    inner = 0.5 * (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
    m = np.abs(rand(inp)) + 0.5
    merged = (w0 + inner).reshape(out, inp, k)
    norms = np.sqrt((merged**2).sum(axis=(0, 2)))  # (in,)
    want = (m / norms)[None, :, None] * merged
    tensors = {key: torch.tensor(v) for key, v in {**t, "base": w0, "magnitude": m}.items()}
    got = form_from(
        "dora", tensors, scale=0.5, params={"inner": "loha", "dora_axis": "in"}, shape=(out, inp * k)
    )
    np.testing.assert_allclose(got.matrix.numpy(), want.reshape(out, -1) - w0, rtol=1e-12, atol=1e-12)
