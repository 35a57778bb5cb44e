"""The SVD routes: each computes the singular values (and vectors on request) of one kind of update form,
together with an absolute error bound on every value it returns (the numerical floor, docs/METRICS.md).

Each route, what it computes, and its floor (a bound on every |σ̂ᵢ − σᵢ|):

- ``factored_svd``: ΔW = s·L@R never formed: R factors of L and Rᵀ (``qr.r_factor``: CholeskyQR2,
  Householder QR when a factor is too ill-conditioned for it), SVD of the k×k core; float64.
  Floor: ε·max(m, n)·k·|s|·‖L‖_F‖R‖_F
- ``gram_svd`` (``gram.py``): eigenvalues of the float64 Gram matrix MᵀM of the tall orientation M of ΔW,
  accumulated over row blocks. Floor: √δ, δ = ε·(rows·‖ΔW‖_F² + p·σ̂₁²)
- ``exact_svd``: LAPACK's SVD of the dense ΔW in the dtype it arrives in. Floor: ε_dtype·max(m, n)·σ̂₁
- ``randomized_svd``: the top k by a randomized range finder (lower bounds of σ₁…σ_k). Floor:
  ε_dtype·max(m, n)·σ̂₁ (arithmetic only)
- ``kronecker_svd``: products of the factors' singular values. Floor: first-order product of the factors'
  floors

ε is the float64 machine epsilon 2⁻⁵² unless a dtype is named. Which route serves which form is decided in one
place, ``lorascope.linalg.svd``. This file owns no file access and no printing.

On the CPU every route runs on numpy / scipy (one BLAS library), and the LAPACK calls whose rounding depends
on the number of threads (SVD, QR, symmetric eigensolvers) run on one thread (``common.one_thread``), so a
spectrum is bit-for-bit the same however many modules are computed at once; BLAS-3 products (syrk, gemm,
trsm) split their output among threads and keep each entry's summation order. torch is used only for tensors
on a GPU. The Gram route is ``gram.py``'s; what the routes share (the ``SVD`` result, dtypes, signs) is
``common.py``'s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .common import (
    EPS64,
    SVD,
    as_numpy,
    cusolver_driver,
    eps_of,
    like,
    on_cpu,
    one_thread,
    sum_squares,
    svd_flip,
)

from .qr import r_factor


# ---- factored: s·L@R ------------------------------------------------------------------------------------


def factored_floor(shape: tuple[int, int], k: int, scale: float, left_fro: float, right_fro: float) -> float:
    """ε·max(m, n)·k·|s|·‖L‖_F‖R‖_F: the QR backward error (Higham 2002, Thm 19.4: ‖ΔL‖_F ≤ γ̃_{mk}‖L‖_F;
    the same order for CholeskyQR2 under its condition) carried through s·(L + ΔL)(R + ΔR) by Weyl's
    inequality; the k×k core's own SVD error, ε·k·σ₁, is smaller. Where the plain product underflows or
    overflows on the way, it is multiplied as mantissas and exponents, so factors of extreme sizes whose
    product is representable (‖L‖_F ~ 1e-160, ‖R‖_F ~ 1e160) give their floor, not 0, ∞ or NaN."""
    terms = [EPS64 * max(shape) * k, abs(scale), left_fro, right_fro]
    plain = math.prod(terms)
    if any(t == 0 for t in terms) or 1e-300 < plain < math.inf:
        return plain
    parts = [math.frexp(t) for t in terms]  # t = mantissa · 2^exponent, mantissa in [0.5, 1)
    return math.ldexp(math.prod(m for m, _ in parts), sum(e for _, e in parts))


def _array_fro_norm(x: Any) -> float:
    """‖x‖_F of a numpy array or torch tensor (float64) without overflow or underflow of its squares: where
    max|xᵢ| is outside (1e-140, 1e140), max|xᵢ| times the norm of x / max|xᵢ| (LAPACK's dnrm2 scales so)."""
    n = x.size if isinstance(x, np.ndarray) else x.numel()
    big = float(abs(x).max()) if n else 0.0
    if big == 0 or not math.isfinite(big):
        return big
    unit = 1.0 if 1e-140 < big < 1e140 else big  # squares of these entries neither overflow nor underflow
    if isinstance(x, np.ndarray):
        return unit * float(np.linalg.norm(x / unit))
    import torch

    return unit * float(torch.linalg.norm(x / unit))


def factored_svd(left: Any, right: Any, scale: float = 1.0, compute_uv: bool = False) -> SVD:
    """Exact SVD of s · left @ right without forming it (docs/METRICS.md: R factors of both, SVD of the k×k
    core).

    Args:
        left: L (m, k), numpy or torch.
        right: R (k, n).
        scale: s.
        compute_uv: also U (m, ·), V (n, ·) (Householder QR then, for the Q factors).

    Returns:
        An ``SVD`` with the min(m, n, k) values in float64, in the array type of ``left``.

    Raises:
        ValueError: the factors do not chain.
    """
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
        raise ValueError(f"factors do not chain: left {tuple(left.shape)}, right {tuple(right.shape)}")
    shape = (int(left.shape[0]), int(right.shape[1]))
    k = int(left.shape[1])
    if not (on_cpu(left) and on_cpu(right)):
        return _factored_torch(left, right, scale, compute_uv, shape)
    lf, rf = as_numpy(left, np.float64), as_numpy(right, np.float64)
    if compute_uv:
        return _factored_vectors(lf, rf, scale, left, shape)
    with one_thread():  # k-wide factors: threads cost more in synchronization than they save
        r_l, r_r = r_factor(lf), r_factor(rf.T)  # (k1, k), (k2, k)
        core = scale * (r_l @ r_r.T)  # (k1, k) @ (k, k2) -> (k1, k2)
        s = np.linalg.svd(core, compute_uv=False)
    floor = factored_floor(shape, k, scale, _array_fro_norm(r_l), _array_fro_norm(r_r))
    return SVD(like(s, left), _array_fro_norm(core), "factored", True, floor=floor)


def _factored_vectors(
    lf: np.ndarray, rf: np.ndarray, scale: float, template: Any, shape: tuple[int, int]
) -> SVD:
    with one_thread():
        q_l, r_l = np.linalg.qr(lf)  # (m, k1), (k1, k)
        q_r, r_r = np.linalg.qr(rf.T)  # (n, k2), (k2, k)
        core = scale * (r_l @ r_r.T)  # (k1, k2)
        u_c, s, vh_c = np.linalg.svd(core, full_matrices=False)
    u = q_l @ u_c  # (m, k1) @ (k1, q) -> (m, q)
    vh = vh_c @ q_r.T  # (q, k2) @ (k2, n) -> (q, n)
    u, vh = svd_flip(u, vh)
    floor = factored_floor(shape, lf.shape[1], scale, _array_fro_norm(r_l), _array_fro_norm(r_r))
    return SVD(
        like(s, template),
        _array_fro_norm(core),
        "factored",
        True,
        like(u, template),
        like(vh.T, template),
        floor=floor,
    )


def _factored_torch(left: Any, right: Any, scale: float, compute_uv: bool, shape: tuple[int, int]) -> SVD:
    """The factored route on a GPU: Householder QR of both factors and the core's SVD in torch float64."""
    import torch

    left, right = (
        torch.as_tensor(left).to(torch.float64),
        torch.as_tensor(right).to(left.device, torch.float64),
    )
    if compute_uv:
        q_l, r_l = torch.linalg.qr(left)
        q_r, r_r = torch.linalg.qr(right.T)
    else:
        q_l = q_r = None
        r_l = torch.linalg.qr(left, mode="r")[1]
        r_r = torch.linalg.qr(right.T, mode="r")[1]
    core = scale * (r_l @ r_r.T)  # (k1, k) @ (k, k2) -> (k1, k2)
    fro = _array_fro_norm(core)
    floor = factored_floor(shape, int(left.shape[1]), scale, _array_fro_norm(r_l), _array_fro_norm(r_r))
    if not compute_uv:
        return SVD(
            torch.linalg.svdvals(core, driver=cusolver_driver(core)).cpu(), fro, "factored", True, floor=floor
        )
    u_c, s, vh_c = torch.linalg.svd(core, full_matrices=False, driver=cusolver_driver(core))
    u, vh = svd_flip(q_l @ u_c, vh_c @ q_r.T)  # (m, k1) @ (k1, q); (q, k2) @ (k2, n)
    return SVD(s.cpu(), fro, "factored", True, u.cpu(), vh.T.cpu(), floor=floor)


# ---- dense: exact ----------------------------------------------------------------------------------------


def exact_floor(shape: tuple[int, int], dtype: Any, sigma1: float) -> float:
    """ε_dtype·max(m, n)·σ̂₁ (LAPACK Users' Guide §4.9: |σ̂ᵢ − σᵢ| ≤ p(m, n)·ε·‖ΔW‖₂, with p(m, n) = max(m, n)
    as numpy's matrix_rank takes it). It also covers rounding ΔW = W_tuned − W_base in that dtype
    (‖E‖₂ ≤ u‖ΔW‖_F ≤ u√p·σ₁)."""
    return eps_of(dtype) * max(shape) * float(sigma1)


def exact_svd(delta: Any, compute_uv: bool = False) -> SVD:
    """All min(m, n) singular values of a dense (m, n) update, in the dtype it arrives in.

    On the CPU (numpy array or CPU torch tensor) by numpy's LAPACK, values on one thread; on a GPU by torch.
    The result is in the array type of the input.
    """
    shape = (int(delta.shape[0]), int(delta.shape[1]))
    if not on_cpu(delta):
        return _exact_torch(delta, compute_uv, shape)
    a = as_numpy(delta)
    fro = math.sqrt(sum_squares(a))
    if not compute_uv:
        with one_thread():
            s = np.linalg.svd(a, compute_uv=False).astype(np.float64)
        return SVD(
            like(s, delta), fro, "exact", True, floor=exact_floor(shape, a.dtype, s[0] if s.size else 0.0)
        )
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    u, vh = svd_flip(u, vh)
    s = s.astype(np.float64)
    return SVD(
        like(s, delta),
        fro,
        "exact",
        True,
        like(u, delta),
        like(vh.T, delta),
        floor=exact_floor(shape, a.dtype, s[0] if s.size else 0.0),
    )


def _exact_torch(delta: Any, compute_uv: bool, shape: tuple[int, int]) -> SVD:
    import torch

    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(delta, driver=cusolver_driver(delta)).cpu().double()
        return SVD(
            s, fro, "exact", True, floor=exact_floor(shape, delta.dtype, float(s[0]) if s.numel() else 0.0)
        )
    u, s, vh = torch.linalg.svd(delta, full_matrices=False, driver=cusolver_driver(delta))
    u, vh = svd_flip(u, vh)
    s = s.cpu().double()
    return SVD(
        s,
        fro,
        "exact",
        True,
        u.cpu(),
        vh.T.cpu(),
        floor=exact_floor(shape, delta.dtype, float(s[0]) if s.numel() else 0.0),
    )


# ---- dense: Gram --------------------------------------------------------------------------------------


def randomized_params(k: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Oversampling and power iterations for a top-k randomized SVD.

    Oversampling p = 10 (Halko et al. §4.2 find 5–10 enough for Gaussian test matrices); power
    iterations q = 7 when k < 0.1 · min(m, n), else 4 — the schedule scikit-learn's
    ``randomized_svd`` uses, which makes the spectral decay of the sketched matrix σ^(2q+1).
    """
    oversample = 10
    n_iter = 7 if k < 0.1 * min(shape) else 4
    return oversample, n_iter


def randomized_svd(delta: Any, k: int, seed: int = 0, compute_uv: bool = False) -> SVD:
    """Top-k singular values of a dense (m, n) update by a randomized range finder.

    Halko, Martinsson & Tropp 2011, Algorithm 4.4 (subspace iteration with re-orthonormalization).
    ‖ΔW‖_F is exact, from the entries; ``complete`` is False unless k covers min(m, n), in which
    case the exact SVD is used instead. The values are those of Qᵀ ΔW, lower bounds of σ₁…σ_k.
    The Gaussian test matrix comes from torch's generator seeded with ``seed``.
    """
    import torch

    m, n = delta.shape
    if k >= min(m, n):
        return exact_svd(delta, compute_uv)
    if not on_cpu(delta):
        return _randomized_torch(delta, k, seed, compute_uv)
    a = as_numpy(delta)
    oversample, n_iter = randomized_params(k, (m, n))
    width = min(k + oversample, min(m, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, width, generator=gen, dtype=torch.float64).numpy().astype(a.dtype)
    with one_thread():
        q, _ = np.linalg.qr(a @ omega)  # (m, n) @ (n, w) -> (m, w)
        for _ in range(n_iter):
            q, _ = np.linalg.qr(a.T @ q)  # (n, m) @ (m, w) -> (n, w)
            q, _ = np.linalg.qr(a @ q)  # (m, n) @ (n, w) -> (m, w)
        small = q.T @ a  # (w, m) @ (m, n) -> (w, n)
        fro = math.sqrt(sum_squares(a))
        if not compute_uv:
            s = np.linalg.svd(small, compute_uv=False)[:k].astype(np.float64)
            return SVD(like(s, delta), fro, "randomized", False, floor=exact_floor((m, n), a.dtype, s[0]))
        u_s, s, vh = np.linalg.svd(small, full_matrices=False)
    u = q @ u_s  # (m, w) @ (w, w) -> (m, w)
    u, vh = svd_flip(u[:, :k], vh[:k])
    s = s[:k].astype(np.float64)
    return SVD(
        like(s, delta),
        fro,
        "randomized",
        False,
        like(u, delta),
        like(vh.T, delta),
        floor=exact_floor((m, n), a.dtype, s[0]),
    )


def _randomized_torch(delta: Any, k: int, seed: int, compute_uv: bool) -> SVD:
    import torch

    m, n = delta.shape
    oversample, n_iter = randomized_params(k, (m, n))
    width = min(k + oversample, min(m, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, width, generator=gen, dtype=torch.float64).to(delta.device, delta.dtype)
    q, _ = torch.linalg.qr(delta @ omega)  # (m, n) @ (n, w) -> (m, w)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(delta.T @ q)  # (n, m) @ (m, w) -> (n, w)
        q, _ = torch.linalg.qr(delta @ q)  # (m, n) @ (n, w) -> (m, w)
    small = q.T @ delta  # (w, m) @ (m, n) -> (w, n)
    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(small, driver=cusolver_driver(small))[:k].cpu().double()
        return SVD(s, fro, "randomized", False, floor=exact_floor((m, n), delta.dtype, float(s[0])))
    u_s, s, vh = torch.linalg.svd(small, full_matrices=False, driver=cusolver_driver(small))
    u, vh = svd_flip((q @ u_s)[:, :k], vh[:k])  # (m, w) @ (w, w)
    s = s[:k].cpu().double()
    return SVD(
        s, fro, "randomized", False, u.cpu(), vh.T.cpu(), floor=exact_floor((m, n), delta.dtype, float(s[0]))
    )


# ---- Kronecker ----------------------------------------------------------------------------------------


def kronecker_svd(a: SVD, b: SVD, scale: float = 1.0, compute_uv: bool = False, k: int | None = None) -> SVD:
    """The SVD of s · A ⊗ B from the SVDs of A and B: σ = |s| σᵢ(A) σⱼ(B), u = u_A,i ⊗ u_B,j, v = v_A,i ⊗
    v_B,j.

    (Van Loan 2000, §2.) ‖ΔW‖_F = |s| ‖A‖_F ‖B‖_F; complete when both factors' spectra are. With
    ``compute_uv``, vectors are formed for the top ``k`` products only (all when ``k`` is None). The floor
    is the first-order error of a product, |s|·(σ₁(A)·f_B + σ₁(B)·f_A + f_A·f_B).
    """
    sa, sb = np.asarray(a.s, np.float64), np.asarray(b.s, np.float64)
    products = abs(scale) * np.outer(sa, sb).reshape(-1)  # (ka·kb,), index i·kb + j
    order = np.argsort(-products, kind="stable")
    s = products[order]
    fro = abs(scale) * a.fro_norm * b.fro_norm
    method = "kronecker"
    complete = a.complete and b.complete
    top_a, top_b = (float(sa[0]) if sa.size else 0.0), (float(sb[0]) if sb.size else 0.0)
    floor = abs(scale) * (top_a * b.floor + top_b * a.floor + a.floor * b.floor)
    if not compute_uv:
        return SVD(s, fro, method, complete, floor=floor)
    keep = order[: (len(order) if k is None else k)]
    i, j = np.divmod(keep, sb.size)
    ua, ub, va, vb = (np.asarray(x, np.float64) for x in (a.u, b.u, a.v, b.v))
    u = (ua[:, i][:, None, :] * ub[:, j][None, :, :]).reshape(ua.shape[0] * ub.shape[0], len(keep))
    v = (va[:, i][:, None, :] * vb[:, j][None, :, :]).reshape(va.shape[0] * vb.shape[0], len(keep))
    if scale < 0:
        v = -v
    u, vh = svd_flip(u, v.T)
    return SVD(s, fro, method, complete, u, vh.T, floor=floor)
