"""The SVD routes: each computes the singular values (and vectors on request) of one kind of update form.

- ``factored_svd``: ΔW = s · L @ R with L (m, r) and R (r, n) never formed. QR of L and Rᵀ, then the
  SVD of the small core s · R_L @ R_Rᵀ gives the exact non-zero singular values (docs/METRICS.md).
- ``exact_svd``: ``torch.linalg.svdvals`` of a dense ΔW (``torch.linalg.svd`` when vectors are asked for).
- ``randomized_svd``: the top-k by a randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4)
  with ‖ΔW‖_F computed exactly from the entries, so energy fractions stay exact.

Which route serves which form is decided in one place, ``lorascope.linalg.svd``. This file owns no
file access and no printing. The factored route works on numpy arrays or torch tensors alike (numpy
keeps adapter-only runs free of the torch import); the dense routes use torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "float64")


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[precision]


@dataclass
class SVD:
    """Singular values of one update, descending, on the CPU, in the array type of the input.

    ``u`` (m, k) and ``v`` (n, k) hold left and right singular vectors when asked for.
    ``complete`` is True when every singular value not in ``s`` is exactly zero.
    """

    s: Any
    fro_norm: float
    method: str
    complete: bool
    u: Any = None
    v: Any = None


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def svd_flip(u: Any, vh: Any) -> tuple[Any, Any]:
    """Deterministic signs: the largest-magnitude entry of each left vector is positive (sklearn's svd_flip)."""
    cols = np.arange(u.shape[1])
    if _is_torch(u):
        import torch

        idx = u.abs().argmax(dim=0)
        signs = torch.sign(u[idx, torch.as_tensor(cols, device=u.device)])
    else:
        signs = np.sign(u[np.abs(u).argmax(axis=0), cols])
    signs[signs == 0] = 1
    return u * signs, vh * signs[:, None]


def _factored_core(left: Any, right: Any, scale: float, need_q: bool) -> tuple[Any, Any, Any, Any]:
    """Q_L, Q_R (None unless ``need_q``) and the small core s·R_L R_Rᵀ, in float64, for numpy or torch inputs."""
    if _is_torch(left):
        import torch

        linalg, left, right = torch.linalg, left.to(torch.float64), right.to(torch.float64)
    else:
        linalg, left, right = np.linalg, np.asarray(left, np.float64), np.asarray(right, np.float64)
    if need_q:
        q_l, r_l = linalg.qr(left)  # (m, k1), (k1, r)
        q_r, r_r = linalg.qr(right.T)  # (n, k2), (k2, r)
    else:  # R alone: LAPACK skips forming Q, about a third of the work
        q_l = q_r = None
        r_l = _r_only(linalg, left)
        r_r = _r_only(linalg, right.T)
    return q_l, q_r, scale * (r_l @ r_r.T), linalg  # core: (k1, r) @ (r, k2) -> (k1, k2)


def _r_only(linalg: Any, x: Any) -> Any:
    return linalg.qr(x, mode="r")[1] if linalg is not np.linalg else linalg.qr(x, mode="r")


def factored_svd(left: Any, right: Any, scale: float = 1.0, compute_uv: bool = False) -> SVD:
    """Exact SVD of s · left @ right without forming it (docs/METRICS.md: QR of both factors, SVD of the r×r core).

    Runs in float64 whatever the input dtype: its cost is O((m + n) r² + r³) and float64 keeps the small
    singular values accurate to ~1e-12 relative.

    Args:
        left: (m, r), e.g. LoRA's B — a numpy array or torch tensor.
        right: (r, n), e.g. LoRA's A.
        scale: s, e.g. lora_alpha / r.
        compute_uv: also return U = Q_L U_c and V = Q_R V_c.

    Returns:
        An ``SVD`` with the min(m, n, r) singular values of the product, ``complete=True``; arrays of the
        input's type (CPU tensors for torch inputs).
    """
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
        raise ValueError(f"factors do not chain: left {tuple(left.shape)}, right {tuple(right.shape)}")
    q_l, q_r, core, linalg = _factored_core(left, right, scale, compute_uv)
    fro = float(linalg.norm(core))
    to_cpu = (lambda x: x.cpu()) if _is_torch(core) else (lambda x: x)
    if not compute_uv:
        s = linalg.svdvals(core) if _is_torch(core) else linalg.svd(core, compute_uv=False)
        return SVD(to_cpu(s), fro, "factored", True)
    u_c, s, vh_c = linalg.svd(core, full_matrices=False)
    u = q_l @ u_c  # (m, k1) @ (k1, k) -> (m, k)
    vh = vh_c @ q_r.T  # (k, k2) @ (k2, n) -> (k, n)
    u, vh = svd_flip(u, vh)
    return SVD(to_cpu(s), fro, "factored", True, to_cpu(u), to_cpu(vh.T))


def exact_svd(delta: torch.Tensor | np.ndarray, compute_uv: bool = False) -> SVD:
    """All min(m, n) singular values of a dense (m, n) update, in the dtype it arrives in.

    A numpy array (a small Kronecker factor of a numpy run) is decomposed by numpy's LAPACK, so such runs
    need no torch; a torch tensor by torch, on its device.
    """
    if not _is_torch(delta):
        a = np.asarray(delta)
        fro = float(np.linalg.norm(a.astype(np.float64, copy=False)))
        if not compute_uv:
            return SVD(np.linalg.svd(a, compute_uv=False).astype(np.float64), fro, "exact", True)
        u, s, vh = np.linalg.svd(a, full_matrices=False)
        u, vh = svd_flip(u, vh)
        return SVD(s.astype(np.float64), fro, "exact", True, u, vh.T)
    import torch

    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        return SVD(torch.linalg.svdvals(delta).cpu().double(), fro, "exact", True)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    u, vh = svd_flip(u, vh)
    return SVD(s.cpu().double(), fro, "exact", True, u.cpu(), vh.T.cpu())


def randomized_params(k: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Oversampling and power iterations for a top-k randomized SVD.

    Oversampling p = 10 (Halko et al. §4.2 find 5–10 enough for Gaussian test matrices); power
    iterations q = 7 when k < 0.1 · min(m, n), else 4 — the schedule scikit-learn's
    ``randomized_svd`` uses, which makes the spectral decay of the sketched matrix σ^(2q+1).
    """
    oversample = 10
    n_iter = 7 if k < 0.1 * min(shape) else 4
    return oversample, n_iter


def randomized_svd(delta: torch.Tensor, k: int, seed: int = 0, compute_uv: bool = False) -> SVD:
    """Top-k singular values of a dense (m, n) update by a randomized range finder.

    Halko, Martinsson & Tropp 2011, Algorithm 4.4 (subspace iteration with re-orthonormalization).
    ‖ΔW‖_F is exact, from the entries; ``complete`` is False unless k covers min(m, n), in which
    case the exact SVD is used instead.
    """
    import torch

    m, n = delta.shape
    if k >= min(m, n):
        return exact_svd(delta, compute_uv)
    oversample, n_iter = randomized_params(k, (m, n))
    width = min(k + oversample, min(m, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, width, generator=gen, dtype=delta.dtype).to(delta.device)
    q, _ = torch.linalg.qr(delta @ omega)  # (m, n) @ (n, w) -> (m, w)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(delta.T @ q)  # (n, m) @ (m, w) -> (n, w)
        q, _ = torch.linalg.qr(delta @ q)  # (m, n) @ (n, w) -> (m, w)
    small = q.T @ delta  # (w, m) @ (m, n) -> (w, n)
    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(small)[:k]
        return SVD(s.cpu().double(), fro, "randomized", False)
    u_s, s, vh = torch.linalg.svd(small, full_matrices=False)
    u = q @ u_s  # (m, w) @ (w, w) -> (m, w)
    u, vh = svd_flip(u[:, :k], vh[:k])
    return SVD(s[:k].cpu().double(), fro, "randomized", False, u.cpu(), vh.T.cpu())



def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is an error the caller reports."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)


def kronecker_svd(a: SVD, b: SVD, scale: float = 1.0, compute_uv: bool = False, k: int | None = None) -> SVD:
    """The SVD of s · A ⊗ B from the SVDs of A and B: σ = |s| σᵢ(A) σⱼ(B), u = u_A,i ⊗ u_B,j, v = v_A,i ⊗ v_B,j.

    (Van Loan 2000, §2.) ‖ΔW‖_F = |s| ‖A‖_F ‖B‖_F; complete when both factors' spectra are. With
    ``compute_uv``, vectors are formed for the top ``k`` products only (all when ``k`` is None).
    """
    sa, sb = np.asarray(a.s, np.float64), np.asarray(b.s, np.float64)
    products = abs(scale) * np.outer(sa, sb).reshape(-1)  # (ka·kb,), index i·kb + j
    order = np.argsort(-products, kind="stable")
    s = products[order]
    fro = abs(scale) * a.fro_norm * b.fro_norm
    method = "kronecker"
    complete = a.complete and b.complete
    if not compute_uv:
        return SVD(s, fro, method, complete)
    keep = order[: (len(order) if k is None else k)]
    i, j = np.divmod(keep, sb.size)
    ua, ub, va, vb = (np.asarray(x, np.float64) for x in (a.u, b.u, a.v, b.v))
    u = (ua[:, i][:, None, :] * ub[:, j][None, :, :]).reshape(ua.shape[0] * ub.shape[0], len(keep))
    v = (va[:, i][:, None, :] * vb[:, j][None, :, :]).reshape(va.shape[0] * vb.shape[0], len(keep))
    if scale < 0:
        v = -v
    u, vh = svd_flip(u, v.T)
    return SVD(s, fro, method, complete, u, vh.T)
