"""Matrix products that stay fast inside QGIS.

The QGIS executables (``qgis``, ``qgis_process``) link GSL, whose unoptimised
reference CBLAS then sits in the process's global symbol scope ahead of the system
BLAS: numpy's matrix products inside QGIS resolve to it and run far slower than in a
plain Python process (``tools/blas_speed.py`` times both). Where that is the case,
:func:`matmul` calls the system BLAS through SciPy's Fortran interface (``sgemm_`` /
``dgemm_``, symbols GSL does not define; no copy of either operand), or through torch's
BLAS when SciPy is missing, and :func:`gram` its symmetric ``dsyrk_`` / ``ssyrk_``;
elsewhere it is plain numpy. The results agree to rounding.
"""
from __future__ import annotations

import ctypes
import functools
import re
from typing import ContextManager, NamedTuple

import numpy as np

from .shared_setting import SharedSetting

_LARGE_PRODUCT = 1 << 16  # multiply-adds below which the slow BLAS costs nothing noticeable

CHUNK_VALUES = 1 << 20
"""Values per chunk of the pixel-wise products: float64 temporaries of 8 MB, which glibc's
malloc serves again from its heap (it maps anything above 32 MB afresh, and touching fresh
pages costs more system time than the arithmetic on them)."""


class _SymbolInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


@functools.lru_cache(maxsize=None)
def reference_blas_first() -> bool:
    """True when the process's first ``cblas_dgemm`` is GSL's reference implementation."""
    try:
        process = ctypes.CDLL(None)
        address = ctypes.cast(process.cblas_dgemm, ctypes.c_void_p).value
        info = _SymbolInfo()
        if not process.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
            return False
    except (OSError, AttributeError, ValueError):
        return False  # no such symbol in the global scope (plain Python), or not glibc
    return b"gslcblas" in (info.dli_fname or b"")


def _fortran_gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by SciPy's BLAS: computes (a @ b)^T = b^T a^T in Fortran order, reading
    each operand in place through a transpose flag, and returns its C-ordered transpose."""
    from scipy.linalg import blas
    gemm = blas.dgemm if a.dtype == np.float64 else blas.sgemm

    def operand(x: np.ndarray) -> tuple[np.ndarray, int]:  # x^T as (Fortran array, trans)
        if x.flags.f_contiguous:
            return x, 1
        return np.ascontiguousarray(x).T, 0

    (first, trans_first), (second, trans_second) = operand(b), operand(a)
    return gemm(1.0, first, second, trans_a=trans_first, trans_b=trans_second).T


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays of one float type, fast whichever BLAS the process found."""
    if not reference_blas_first() or a.shape[0] * a.shape[1] * b.shape[1] < _LARGE_PRODUCT:
        return a @ b
    try:
        return _fortran_gemm(a, b)
    except ImportError:
        import torch
        return (torch.from_numpy(np.ascontiguousarray(a))
                @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def gram(samples: np.ndarray) -> np.ndarray:
    """``samples @ samples.T`` of a 2-D float array: a symmetric rank-k update (half the
    multiply-adds of a general product; numpy takes that path itself, SciPy's ``dsyrk_``
    / ``ssyrk_`` where GSL's reference CBLAS would otherwise run)."""
    rows, columns = samples.shape
    if not reference_blas_first() or rows * rows * columns < _LARGE_PRODUCT:
        return samples @ samples.T
    try:
        from scipy.linalg import blas
    except ImportError:
        return matmul(samples, samples.T)
    syrk = blas.dsyrk if samples.dtype == np.float64 else blas.ssyrk
    upper = syrk(1.0, np.ascontiguousarray(samples).T, trans=1)  # Fortran (rows, rows)
    return np.triu(upper) + np.triu(upper, 1).T


def _openblas_libraries() -> list:
    """The OpenBLAS libraries loaded in this process (Linux; none found elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(set(re.findall(r"\s(/\S*openblas\S*\.so\S*)$", maps.read(), re.M)))
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(library, "openblas_set_num_threads") and \
                hasattr(library, "openblas_get_num_threads"):
            libraries.append(library)
    return libraries


def _restore_blas_threads(saved: list) -> None:
    for library, threads in saved:
        library.openblas_set_num_threads(threads)


def _one_blas_thread(saved: list) -> None:
    for library, _ in saved:
        library.openblas_set_num_threads(1)


_BLAS_THREADS = SharedSetting(
    lambda: [(library, library.openblas_get_num_threads()) for library in _openblas_libraries()],
    _restore_blas_threads)


def single_threaded_blas() -> ContextManager[None]:
    """OpenBLAS on one thread while the block runs (a context manager or decorator), its
    thread counts from before the first of overlapping blocks restored after the last.

    The engine overlaps decoding and arithmetic in threads of its own, one per core;
    OpenBLAS's threads would compete with them and, while they wait for work, spin in
    system calls that cost more than the products they speed up."""
    return _BLAS_THREADS.overridden(_one_blas_thread)


FLOAT32_EIGEN_RATIO = 1e-5
"""Smallest (weakest / strongest row gain)² of a whitening whose rows run in float32:
float32 rounding, amplified by the weakest component's gain (at most ~300x), then stays
well within 1e-4 of float64."""


class WhiteningKernel(NamedTuple):
    """``x -> matrix @ (x - mean)`` for a whitening whose rows are orthogonal (principal
    components scaled by their gains): the one kernel of RX and the detector's spectral
    reduction, in the cheapest exact-enough arithmetic.

    Rows whose gains spread within :data:`FLOAT32_EIGEN_RATIO` run in float32. When
    the spread is wider (many bands at a high signal-to-noise ratio: a few strong
    components, many weak ones), the ``k`` strongest components run in float64 and are
    removed from the pixel (``x - mean`` minus its projection on them, in float64) before
    the remaining rows, orthogonal to them, run in float32 on that residual: float32's
    rounding then scales with the residual, not with the strong components. Where the
    float64 part would not be cheaper than the whole product in float64 (``3 k >= r``),
    everything runs in float64.
    """

    dtype: type          # float32, or float64 when nothing runs in float32
    mean: np.ndarray     # (B,) in dtype (float64 when components are removed first)
    matrix: np.ndarray   # (r', B) rows in dtype, C-ordered: the rows ``rows`` of the whitening
    offset: np.ndarray   # (r', 1) in dtype: the rounding of the mean to dtype, corrected
    rows: np.ndarray     # (r',) indices of those rows among the r
    basis: np.ndarray    # (k, B) float64 unit vectors of the strongest components (k may be 0)
    gains: np.ndarray    # (k,) their gains
    strong_rows: np.ndarray  # (k,) their indices among the r

    @property
    def rank(self) -> int:
        """Rows of the whitening (r)."""
        return self.rows.size + self.strong_rows.size

    @classmethod
    def fit(cls, matrix: np.ndarray, mean: np.ndarray) -> "WhiteningKernel":
        """The kernel of a float64 whitening ``matrix`` (r, B), rows orthogonal, around
        ``mean`` (B,)."""
        matrix, mean = np.asarray(matrix, np.float64), np.asarray(mean, np.float64)
        gains = np.sqrt((matrix * matrix).sum(axis=1))
        order = np.argsort(gains, kind="stable")  # strongest component (lowest gain) first
        nonzero = order[gains[order] > 0]
        strongest = gains[nonzero].max() if nonzero.size else 1.0
        k = int(np.searchsorted((gains[nonzero] / strongest) ** 2, FLOAT32_EIGEN_RATIO))
        dtype = np.float32
        if k and 3 * k >= matrix.shape[0]:
            k, dtype = 0, np.float64
        strong_rows = nonzero[:k]
        rows = np.setdiff1d(np.arange(matrix.shape[0]), strong_rows)
        rounded = mean if k else mean.astype(dtype).astype(np.float64)
        weak = matrix[rows]
        offset = (weak @ (mean - rounded)).astype(dtype)[:, None]
        return cls(dtype, rounded.astype(np.float64 if k else dtype),
                   np.ascontiguousarray(weak.astype(dtype)), offset, rows,
                   np.ascontiguousarray(matrix[strong_rows] / gains[strong_rows, None]),
                   gains[strong_rows], strong_rows)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``matrix @ (pixels - mean)`` of float ``pixels`` (B, n) as float32 (r, n)
        (a non-finite value counts as its band's mean)."""
        centred = pixels.astype(self.mean.dtype)
        centred -= self.mean[:, None]
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, as wanted
            # one pass: any non-finite value makes its pixel's sum non-finite
            finite = np.isfinite(centred.sum(axis=0)).all()
        if not finite:
            centred[~np.isfinite(centred)] = 0.0
        if not self.strong_rows.size:
            weak = matmul(self.matrix, centred)
            weak -= self.offset
            return weak.astype(np.float32, copy=False)
        coordinates = matmul(self.basis, centred)  # (k, n) along the strong components
        centred -= matmul(self.basis.T, coordinates)
        weak = matmul(self.matrix, centred.astype(self.dtype))
        out = np.empty((self.rank, pixels.shape[1]), np.float32)
        out[self.rows] = weak
        out[self.strong_rows] = coordinates * self.gains[:, None]
        return out
