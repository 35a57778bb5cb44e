"""lorascope/delta/orthogonal.py: OFT and BOFT updates against their dense definitions in float64 numpy — the
block-diagonal rotation formed with scipy, the butterfly factors as explicit permutation matrices."""

import numpy as np
import pytest
import torch
from scipy.linalg import block_diag

from lorascope.delta.orthogonal import (
    boft_update,
    butterfly_permutation,
    cayley_exact,
    cayley_neumann,
    coft_project,
    oft_update,
    skew_from_upper,
)

rng = np.random.default_rng(0)


def skew(k, b, scale=0.2):
    vec = torch.tensor(rng.standard_normal((k, b * (b - 1) // 2)) * scale)
    return vec, skew_from_upper(vec, b)


def test_skew_blocks_and_the_exact_cayley_transform_is_orthogonal():
    vec, q = skew(3, 4)
    assert torch.allclose(q, -q.transpose(1, 2))
    rows, cols = np.triu_indices(4, 1)
    np.testing.assert_array_equal(q[1].numpy()[rows, cols], vec[1].numpy())  # row-major upper triangle
    r = cayley_exact(q).numpy()
    eye = np.eye(4)
    for i in range(3):
        np.testing.assert_allclose(r[i] @ r[i].T, eye, atol=1e-12)
        np.testing.assert_allclose(r[i], (eye - q[i].numpy()) @ np.linalg.inv(eye + q[i].numpy()), atol=1e-12)


def test_neumann_series_approaches_the_inverse_cayley_transform():
    """PEFT's series I + 2Q + 2Q² + … expands (I + Q)(I − Q)⁻¹, the transpose of the exact transform R;
    more terms come closer."""
    _, q = skew(2, 5, scale=0.05)
    exact_t = cayley_exact(q).transpose(1, 2)
    errors = [float((cayley_neumann(q, t) - exact_t).abs().max()) for t in (2, 5, 9)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    q2 = q @ q
    np.testing.assert_allclose(
        cayley_neumann(q, 5), torch.eye(5) + 2 * q + 2 * q2 + 2 * q2 @ q + q2 @ q2, atol=1e-14
    )


def test_coft_projects_each_block_into_the_ball():
    _, q = skew(4, 4, scale=1.0)
    small = q.clone()
    small[0] *= 1e-6
    out = coft_project(small, eps=0.3)
    radius = 0.3 / 2  # eps / sqrt(4 blocks)
    norms = torch.linalg.matrix_norm(out)
    assert torch.equal(out[0], small[0])  # inside the ball: kept
    np.testing.assert_allclose(norms[1:].numpy(), radius)


@pytest.mark.parametrize("rotate, share", [("input", False), ("embedding", False), ("input", True)])
def test_oft_update_is_w0_times_the_block_rotation(rotate, share):
    m, b, k = 5, 3, 4
    vec, _ = skew(1 if share else k, b)
    w0 = torch.tensor(rng.standard_normal((m, b * k)))
    p = {"block_size": b, "block_share": share, "cayley_neumann": False, "rotate": rotate}
    blocks = cayley_exact(skew_from_upper(vec, b)).numpy()
    full = block_diag(*([blocks[0]] * k if share else blocks))
    rotated = w0.numpy() @ (
        full if rotate == "embedding" else full.T
    )  # PEFT: W0 R (embedding), (R W0ᵀ)ᵀ else
    np.testing.assert_allclose(oft_update(w0, vec, p).numpy(), rotated - w0.numpy(), atol=1e-12)


def permutation_matrix(perm):
    p = np.zeros((len(perm), len(perm)))
    p[np.arange(len(perm)), perm] = 1  # P[i, perm[i]] = 1 (PEFT perm2mat)
    return p


def test_butterfly_permutation_is_a_permutation_and_identity_for_one_factor():
    np.testing.assert_array_equal(butterfly_permutation(16, 4, 2, 0), np.arange(16))
    perm = butterfly_permutation(16, 2, 2, 1)  # 2 chunks of 8; runs of 2: even runs (0, 2) then odd (1, 3)
    np.testing.assert_array_equal(perm[:8], [0, 1, 4, 5, 2, 3, 6, 7])
    np.testing.assert_array_equal(np.sort(perm), np.arange(16))


def test_boft_update_with_two_butterfly_factors():
    m, n, d, b = 3, 16, 4, 4
    rot = torch.tensor(rng.standard_normal((2, d, b, b)) * 0.2)
    scale = torch.tensor(1 + 0.1 * rng.standard_normal((m, 1)))
    w0 = torch.tensor(rng.standard_normal((m, n)))
    eye = np.eye(b)
    total = np.eye(n)
    for i in range(2):
        x = rot[i].numpy()
        s = (x - x.transpose(0, 2, 1)) / 2
        blocks = [(eye - s[j]) @ np.linalg.inv(eye + s[j]) for j in range(d)]
        p = permutation_matrix(butterfly_permutation(n, d // 2**i, b // 2, 1))
        total = p @ block_diag(*blocks) @ p.T @ total  # M = M_1 M_0
    want = scale.numpy() * (w0.numpy() @ total.T) - w0.numpy()
    np.testing.assert_allclose(boft_update(w0, rot, scale).numpy(), want, atol=1e-12)
