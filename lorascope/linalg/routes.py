"""The SVD routes: each computes the singular values (and vectors on request) of one kind of update form,
together with an absolute error bound on every value it returns (the numerical floor, docs/METRICS.md).

| route | computes | floor: a bound on every \\|σ̂ᵢ − σᵢ\\| |
| --- | --- | --- |
| ``factored_svd`` | ΔW = s·L@R never formed: R factors of L and Rᵀ by CholeskyQR2 (Householder QR when a factor is too ill-conditioned for it), SVD of the k×k core; float64 | ε·max(m, n)·k·\\|s\\|·‖L‖_F‖R‖_F |
| ``gram_svd`` | eigenvalues of the float64 Gram matrix MᵀM of the tall orientation M of ΔW, accumulated over row blocks | √δ, δ = ε·(rows·‖ΔW‖_F² + p·σ̂₁²) |
| ``exact_svd`` | LAPACK's SVD of the dense ΔW in the dtype it arrives in | ε_dtype·max(m, n)·σ̂₁ |
| ``randomized_svd`` | the top k by a randomized range finder (lower bounds of σ₁…σ_k) | ε_dtype·max(m, n)·σ̂₁ (arithmetic only) |
| ``kronecker_svd`` | products of the factors' singular values | first-order product of the factors' floors |

ε is the float64 machine epsilon 2⁻⁵² unless a dtype is named. Which route serves which form is decided in one
place, ``lorascope.linalg.svd``. This file owns no file access and no printing.

On the CPU every route runs on numpy / scipy (one BLAS library), and the LAPACK calls whose rounding depends on
the number of threads (SVD, QR, symmetric eigensolvers) run on one thread, so a spectrum is bit-for-bit the
same however many modules are computed at once; BLAS-3 products (syrk, gemm, trsm) split their output among
threads and keep each entry's summation order. torch is used only for tensors on a GPU.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "float64")
EPS64 = float(np.finfo(np.float64).eps)


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[precision]


def eps_of(dtype: Any) -> float:
    """Machine epsilon of a numpy or torch floating dtype (float64 for anything wider or unknown)."""
    name = str(dtype).removeprefix("torch.")
    try:
        name = np.dtype(dtype).name  # numpy dtypes and scalar types (np.float32)
    except TypeError:
        pass
    return {"float32": float(np.finfo(np.float32).eps), "float16": float(np.finfo(np.float16).eps),
            "bfloat16": 2.0**-7}.get(name, EPS64)


@dataclass
class SVD:
    """Singular values of one update, descending, on the CPU, in the array type of the input.

    ``u`` (m, k) and ``v`` (n, k) hold left and right singular vectors when asked for.
    ``complete`` is True when every singular value not in ``s`` is exactly zero.
    ``floor`` is the route's absolute error bound on every value (docs/METRICS.md, 'The numerical floor'):
    a computed value at or below it cannot be told from zero.
    """

    s: Any
    fro_norm: float
    method: str
    complete: bool
    u: Any = None
    v: Any = None
    floor: float = 0.0


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _on_cpu(x: Any) -> bool:
    return not _is_torch(x) or x.device.type == "cpu"


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A CPU torch tensor or numpy array as numpy (no copy where the dtype already fits)."""
    if _is_torch(x):
        x = x.detach()
        try:
            x = x.numpy()
        except TypeError:  # bfloat16, float8: no numpy dtype; float32 holds them exactly
            x = x.float().numpy()
    return np.asarray(x, dtype=dtype)


def _like(x: np.ndarray, template: Any) -> Any:
    """``x`` back in the array type of ``template`` (torch for torch inputs)."""
    if _is_torch(template):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))
    return x


# ---- threads ----------------------------------------------------------------------------------------

# threadpoolctl controllers of the loaded BLAS libraries (numpy's; scipy's once scipy.linalg is loaded), by
# whether scipy.linalg was loaded when they were listed
_BLAS: dict[bool, list[Any]] = {}
_LOCK = threading.Lock()
_HELD = [0, []]  # threads inside one_thread(), and the thread counts to restore when the last one leaves


def _blas_libraries() -> list[Any]:
    import sys

    key = "scipy.linalg" in sys.modules  # adapter runs never load scipy: numpy's BLAS is all there is
    if key not in _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS[key] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _BLAS[key]


def _set_threads(lib: Any, n: int) -> None:
    # OpenBLAS's pool is process-wide; the reference count in one_thread() serializes changes, so the
    # direct setter is used rather than threadpoolctl's first-thread-controls rule
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run LAPACK on one BLAS thread: its blocked reductions then round the same whatever else runs.

    Reference-counted across Python threads: BLAS stays on one thread while any caller is inside, and
    the previous counts come back when the last one leaves (a few microseconds, so it wraps small calls).
    """
    libs = _blas_libraries()
    with _LOCK:
        if _HELD[0] == 0:
            _HELD[1] = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                _set_threads(lib, 1)
        _HELD[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _HELD[0] -= 1
            if _HELD[0] == 0:
                for lib, n in zip(libs, _HELD[1]):
                    if n:
                        _set_threads(lib, n)


def sum_squares(x: Any, chunk: int = 1 << 20) -> float:
    """Σ x² in float64, by numpy's pairwise summation over fixed chunks: the same bits on any number of threads
    (a BLAS dot product splits its sum by thread). Numpy arrays or CPU torch tensors of any float dtype."""
    flat = _numpy(x).reshape(-1)
    total = 0.0
    for i in range(0, flat.size, chunk):
        c = flat[i:i + chunk].astype(np.float64)
        total += float(np.add.reduce(c * c))
    return total


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


# ---- Gram matrices ------------------------------------------------------------------------------------


def gram_update(g: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """G + xᵀx for a float64 block x (b, p), upper triangle only (BLAS dsyrk, half the flops of a product).

    ``g`` is (p, p) in Fortran order (updated in place) or None to start.
    """
    from scipy.linalg import blas

    x = np.asarray(x, dtype=np.float64)
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        x = np.ascontiguousarray(x)
    if g is None:
        g = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64, order="F")
    if x.flags.c_contiguous:  # x.T is (p, b) in Fortran order: A·Aᵀ = xᵀx
        return blas.dsyrk(1.0, x.T, beta=1.0, c=g, trans=0, lower=0, overwrite_c=1)
    return blas.dsyrk(1.0, x, beta=1.0, c=g, trans=1, lower=0, overwrite_c=1)  # x (b, p) Fortran: Aᵀ·A


# ---- factored: s·L@R ------------------------------------------------------------------------------------


def _cholesky_upper(g: np.ndarray) -> np.ndarray | None:
    """Upper R with RᵀR = G, or None when G is not numerically positive definite."""
    try:
        return np.linalg.cholesky(g).T  # numpy returns the lower factor L = Rᵀ
    except np.linalg.LinAlgError:
        return None


def _cholqr2_r(x: np.ndarray) -> np.ndarray | None:
    """R (k, k) of x = QR (x: (m, k), m ≥ k, float64) by CholeskyQR2, or None where it is not backward stable.

    CholeskyQR2 (Fukaya et al. 2014; Yamamoto, Nakatsukasa, Yanagisawa & Fukaya 2015, ETNA 44, Thm 3.3):
    R₁ = chol(xᵀx), Q₁ = x R₁⁻¹, R₂ = chol(Q₁ᵀQ₁), R = R₂R₁. When 8·κ₂(x)·√(m·k·u + k(k+1)·u) ≤ 1
    (u = ε/2) its Q is orthonormal to 6(m·k·u + k(k+1)·u) and ‖QR − x‖_F ≤ 5k²u‖x‖₂: as accurate as
    Householder QR, in a few passes over x instead of k BLAS-2 ones. numpy only (no scipy import for
    adapter runs): xᵀx by matmul (BLAS syrk for a transposed pair), Q₁ᵀ by forward substitution.
    """
    m, k = x.shape
    xt = np.ascontiguousarray(x.T)  # (k, m); no copy for the right factor, whose transpose is stored
    r1 = _cholesky_upper(xt @ xt.T)  # (k, m) @ (m, k) -> (k, k)
    if r1 is None:
        return None
    sv = np.linalg.svd(r1, compute_uv=False)  # k × k: κ₂(x) = κ₂(R₁) to first order
    u = EPS64 / 2
    if not (sv[-1] > 0 and 8 * (sv[0] / sv[-1]) * math.sqrt(m * k * u + k * (k + 1) * u) <= 1):
        return None
    q1t = _forward_substitution(r1, xt)  # R₁ᵀ Q₁ᵀ = xᵀ -> Q₁ᵀ (k, m)
    r2 = _cholesky_upper(q1t @ q1t.T)  # (k, m) @ (m, k) -> (k, k)
    return None if r2 is None else r2 @ r1  # (k, k) @ (k, k)


def _forward_substitution(r: np.ndarray, bt: np.ndarray) -> np.ndarray:
    """Y (k, m) with rᵀ Y = bt, r upper triangular (k, k): row by row, each row one BLAS-2 product
    (backward stable, Higham 2002, Thm 8.5: (rᵀ + Δ) y = b with |Δ| ≤ γ_k |rᵀ|, as LAPACK's trsm)."""
    y = np.empty_like(bt)
    for i in range(r.shape[0]):
        y[i] = (bt[i] - r[:i, i] @ y[:i]) / r[i, i]  # (i,) @ (i, m) -> (m,)
    return y


def _householder_r(x: np.ndarray) -> np.ndarray:
    return np.linalg.qr(x, mode="r")  # (min(m, k), k); callers hold one_thread()


def _r_factor(x: np.ndarray) -> np.ndarray:
    """The R factor of a tall (m, k) float64 matrix: CholeskyQR2 where backward stable, else Householder."""
    if x.shape[0] >= x.shape[1]:
        r = _cholqr2_r(x)
        if r is not None:
            return r
    return _householder_r(x)


def factored_floor(shape: tuple[int, int], k: int, scale: float, left_fro: float, right_fro: float) -> float:
    """ε·max(m, n)·k·|s|·‖L‖_F‖R‖_F: the QR backward error (Higham 2002, Thm 19.4: ‖ΔL‖_F ≤ γ̃_{mk}‖L‖_F;
    the same order for CholeskyQR2 under its condition) carried through s·(L + ΔL)(R + ΔR) by Weyl's
    inequality; the k×k core's own SVD error, ε·k·σ₁, is smaller."""
    return EPS64 * max(shape) * k * abs(scale) * left_fro * right_fro


def factored_svd(left: Any, right: Any, scale: float = 1.0, compute_uv: bool = False) -> SVD:
    """Exact SVD of s · left @ right without forming it (docs/METRICS.md: R factors of both, SVD of the k×k core).

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
    if not (_on_cpu(left) and _on_cpu(right)):
        return _factored_torch(left, right, scale, compute_uv, shape)
    lf, rf = _numpy(left, np.float64), _numpy(right, np.float64)
    if compute_uv:
        return _factored_vectors(lf, rf, scale, left, shape)
    with one_thread():  # k-wide factors: threads cost more in synchronization than they save
        r_l, r_r = _r_factor(lf), _r_factor(rf.T)  # (k1, k), (k2, k)
        core = scale * (r_l @ r_r.T)  # (k1, k) @ (k, k2) -> (k1, k2)
        s = np.linalg.svd(core, compute_uv=False)
    floor = factored_floor(shape, k, scale, float(np.linalg.norm(r_l)), float(np.linalg.norm(r_r)))
    return SVD(_like(s, left), float(np.linalg.norm(core)), "factored", True, floor=floor)


def _factored_vectors(lf: np.ndarray, rf: np.ndarray, scale: float, template: Any, shape: tuple[int, int]) -> SVD:
    with one_thread():
        q_l, r_l = np.linalg.qr(lf)  # (m, k1), (k1, k)
        q_r, r_r = np.linalg.qr(rf.T)  # (n, k2), (k2, k)
        core = scale * (r_l @ r_r.T)  # (k1, k2)
        u_c, s, vh_c = np.linalg.svd(core, full_matrices=False)
    u = q_l @ u_c  # (m, k1) @ (k1, q) -> (m, q)
    vh = vh_c @ q_r.T  # (q, k2) @ (k2, n) -> (q, n)
    u, vh = svd_flip(u, vh)
    floor = factored_floor(shape, lf.shape[1], scale, float(np.linalg.norm(r_l)), float(np.linalg.norm(r_r)))
    return SVD(_like(s, template), float(np.linalg.norm(core)), "factored", True,
               _like(u, template), _like(vh.T, template), floor=floor)


def _factored_torch(left: Any, right: Any, scale: float, compute_uv: bool, shape: tuple[int, int]) -> SVD:
    """The factored route on a GPU: Householder QR of both factors and the core's SVD in torch float64."""
    import torch

    left, right = torch.as_tensor(left).to(torch.float64), torch.as_tensor(right).to(left.device, torch.float64)
    if compute_uv:
        q_l, r_l = torch.linalg.qr(left)
        q_r, r_r = torch.linalg.qr(right.T)
    else:
        q_l = q_r = None
        r_l = torch.linalg.qr(left, mode="r")[1]
        r_r = torch.linalg.qr(right.T, mode="r")[1]
    core = scale * (r_l @ r_r.T)  # (k1, k) @ (k, k2) -> (k1, k2)
    fro = float(torch.linalg.norm(core))
    floor = factored_floor(shape, int(left.shape[1]), scale, float(torch.linalg.norm(r_l)),
                           float(torch.linalg.norm(r_r)))
    if not compute_uv:
        return SVD(torch.linalg.svdvals(core, driver=cusolver_driver(core)).cpu(), fro, "factored", True, floor=floor)
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
    if not _on_cpu(delta):
        return _exact_torch(delta, compute_uv, shape)
    a = _numpy(delta)
    fro = math.sqrt(sum_squares(a))
    if not compute_uv:
        with one_thread():
            s = np.linalg.svd(a, compute_uv=False).astype(np.float64)
        return SVD(_like(s, delta), fro, "exact", True, floor=exact_floor(shape, a.dtype, s[0] if s.size else 0.0))
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    u, vh = svd_flip(u, vh)
    s = s.astype(np.float64)
    return SVD(_like(s, delta), fro, "exact", True, _like(u, delta), _like(vh.T, delta),
               floor=exact_floor(shape, a.dtype, s[0] if s.size else 0.0))


def cusolver_driver(t: Any) -> str | None:
    """'gesvd' for a CUDA tensor, None (torch's choice) otherwise.

    torch's default on CUDA can be cuSOLVER's Jacobi solver (gesvdj), which stops at a tolerance: in float32 its
    values were off by up to 1.1e-3 of σ1 on an H200 (benchmarks/full_diff.py, two Llama-7B-shaped matrices),
    above the LAPACK bound ε·max(m, n)·σ1 that ``exact_floor`` states. gesvd is the QR-based LAPACK algorithm,
    for which that bound holds.
    """
    return "gesvd" if getattr(getattr(t, "device", None), "type", "cpu") == "cuda" else None


def _exact_torch(delta: Any, compute_uv: bool, shape: tuple[int, int]) -> SVD:
    import torch

    fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64).cpu())
    if not compute_uv:
        s = torch.linalg.svdvals(delta, driver=cusolver_driver(delta)).cpu().double()
        return SVD(s, fro, "exact", True, floor=exact_floor(shape, delta.dtype, float(s[0]) if s.numel() else 0.0))
    u, s, vh = torch.linalg.svd(delta, full_matrices=False, driver=cusolver_driver(delta))
    u, vh = svd_flip(u, vh)
    s = s.cpu().double()
    return SVD(s, fro, "exact", True, u.cpu(), vh.T.cpu(),
               floor=exact_floor(shape, delta.dtype, float(s[0]) if s.numel() else 0.0))


# ---- dense: Gram --------------------------------------------------------------------------------------


def gram_floor(rows: int, p: int, fro_sq: float, sigma1_sq: float) -> tuple[float, float]:
    """(δ, √δ) for the Gram route: |σ̂ᵢ² − σᵢ²| ≤ δ = ε·(rows·‖ΔW‖_F² + p·σ̂₁²).

    Forming G: |fl(MᵀM) − MᵀM| ≤ γ_rows |M|ᵀ|M| (Higham 2002, §3.5) and ‖|M|ᵀ|M|‖₂ ≤ ‖M‖_F²; the symmetric
    eigensolver: |λ̂ᵢ − λᵢ| ≤ p(n)·ε·‖G‖₂ (LAPACK Users' Guide §4.7), p(n) = n. Hence
    |σ̂ᵢ − σᵢ| = |σ̂ᵢ² − σᵢ²| / (σ̂ᵢ + σᵢ) ≤ min(√δ, δ/σ̂ᵢ): values far above √δ keep nearly all digits.
    """
    delta = EPS64 * (rows * fro_sq + p * sigma1_sq)
    return delta, math.sqrt(delta)


def gram_svd(blocks: Iterable[Any], rows: int, p: int) -> SVD:
    """Singular values of a tall matrix M (rows, p), rows ≥ p, from its float64 Gram matrix MᵀM.

    Args:
        blocks: M's rows in consecutive blocks (b, p) (numpy or CPU torch; cast to float64 here), each read
            once; M is never whole in memory.
        rows, p: M's shape.

    Returns:
        An ``SVD`` (method 'gram', all p values, floor √δ from ``gram_floor``); ‖M‖_F from G's trace.
    """

    g = np.zeros((p, p), dtype=np.float64, order="F")
    seen = 0
    for x in blocks:
        x = _numpy(x, np.float64)
        seen += x.shape[0]
        g = gram_update(g, x)
    if seen != rows:
        raise ValueError(f"the blocks held {seen} rows, not {rows}")
    return _gram_spectrum(g, rows)


def gram_svd_dense(delta: Any) -> SVD:
    """``gram_svd`` of a float64 matrix in memory: one syrk on its tall orientation (no copy)."""
    a = _numpy(delta, np.float64)
    m, n = a.shape
    tall = a if m >= n else a.T  # (rows, p)
    g = gram_update(None, tall)
    out = _gram_spectrum(g, tall.shape[0])
    out.s = _like(out.s, delta)
    return out


def _gram_spectrum(g: np.ndarray, rows: int) -> SVD:
    p = g.shape[0]
    fro_sq = float(np.trace(g))
    lam = np.clip(eigvalsh_upper(g)[::-1], 0.0, None)
    _, floor = gram_floor(rows, p, fro_sq, float(lam[0]) if p else 0.0)
    return SVD(np.sqrt(lam), math.sqrt(max(fro_sq, 0.0)), "gram", True, floor=floor)


_TWO_STAGE: list[Any] = []  # [LAPACKE dsyevd_2stage, its integer type] once looked up; [None] if not there


def _two_stage() -> tuple[Any, Any] | None:
    """LAPACK's dsyevd_2stage from the loaded OpenBLAS (through its LAPACKE interface), or None."""
    if not _TWO_STAGE:
        import ctypes

        found = None
        for lib in _blas_libraries():
            dll = getattr(lib, "dynlib", None)
            for prefix in ("scipy_", ""):
                for suffix, int_t in (("64_", ctypes.c_int64), ("_64", ctypes.c_int64), ("", ctypes.c_int32)):
                    fn = getattr(dll, f"{prefix}LAPACKE_dsyevd_2stage{suffix}", None) if dll is not None else None
                    if fn is not None and found is None:
                        fn.restype = int_t
                        fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, int_t, ctypes.c_void_p, int_t,
                                       ctypes.c_void_p]
                        found = (fn, int_t)
        _TWO_STAGE.append(found)
    return _TWO_STAGE[0]


def eigvalsh_upper(g: np.ndarray) -> np.ndarray:
    """Eigenvalues, ascending, of the symmetric float64 matrix whose upper triangle ``g`` holds (overwritten).

    LAPACK's two-stage tridiagonal reduction (dsyevd_2stage: BLAS-3 band reduction, then bulge chasing;
    Haidar, Ltaief & Dongarra 2011) where the loaded OpenBLAS exports it: about 1.5× faster than the
    one-stage dsytrd; otherwise scipy's eigvalsh. On one thread either way, since the reductions of both
    round differently on more. Both are backward stable: |λ̂ᵢ − λᵢ| ≤ p(n)·ε·‖G‖₂ (LAPACK Users' Guide §4.7).
    """
    p = g.shape[0]
    two = _two_stage() if p > 1 else None
    if two is not None:
        fn, int_t = two
        a = g if g.flags.f_contiguous and g.dtype == np.float64 else np.asfortranarray(g, dtype=np.float64)
        w = np.empty(p, dtype=np.float64)
        with one_thread():
            info = fn(102, b"N", b"U", int_t(p), a.ctypes.data, int_t(p), w.ctypes.data)  # 102: column major
        if info == 0:
            return w
    from scipy.linalg import eigvalsh

    with one_thread():
        return eigvalsh(g, lower=False, overwrite_a=True, check_finite=False)


# ---- dense: randomized -------------------------------------------------------------------------------


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
    if not _on_cpu(delta):
        return _randomized_torch(delta, k, seed, compute_uv)
    a = _numpy(delta)
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
            return SVD(_like(s, delta), fro, "randomized", False, floor=exact_floor((m, n), a.dtype, s[0]))
        u_s, s, vh = np.linalg.svd(small, full_matrices=False)
    u = q @ u_s  # (m, w) @ (w, w) -> (m, w)
    u, vh = svd_flip(u[:, :k], vh[:k])
    s = s[:k].astype(np.float64)
    return SVD(_like(s, delta), fro, "randomized", False, _like(u, delta), _like(vh.T, delta),
               floor=exact_floor((m, n), a.dtype, s[0]))


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
    return SVD(s, fro, "randomized", False, u.cpu(), vh.T.cpu(), floor=exact_floor((m, n), delta.dtype, float(s[0])))


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


# ---- Kronecker ----------------------------------------------------------------------------------------


def kronecker_svd(a: SVD, b: SVD, scale: float = 1.0, compute_uv: bool = False, k: int | None = None) -> SVD:
    """The SVD of s · A ⊗ B from the SVDs of A and B: σ = |s| σᵢ(A) σⱼ(B), u = u_A,i ⊗ u_B,j, v = v_A,i ⊗ v_B,j.

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
