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
from typing import NamedTuple

import numpy as np

_LARGE_PRODUCT = 1 << 16  # multiply-adds below which the slow BLAS costs nothing noticeable


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


FLOAT32_EIGEN_RATIO = 1e-5
"""Smallest (weakest / strongest row gain)² of a whitening at which it runs in float32:
float32 rounding, amplified by the weakest component's gain (at most ~300x), then stays
well within 1e-4 of float64."""


class WhiteningKernel(NamedTuple):
    """``x -> matrix @ (x - mean) - offset`` in the cheapest exact-enough float type: the
    one kernel of RX and the detector's spectral reduction."""

    dtype: type
    mean: np.ndarray    # (B,) in dtype
    matrix: np.ndarray  # (r, B) in dtype, C-ordered
    offset: np.ndarray  # (r, 1) in dtype: the rounding of the mean to dtype, corrected

    @classmethod
    def fit(cls, matrix: np.ndarray, mean: np.ndarray) -> "WhiteningKernel":
        """The kernel of a float64 whitening ``matrix`` (r, B) around ``mean`` (B,):
        float32 unless its rows' gains spread beyond :data:`FLOAT32_EIGEN_RATIO`."""
        matrix, mean = np.asarray(matrix, np.float64), np.asarray(mean, np.float64)
        gains = np.sqrt((matrix * matrix).sum(axis=1))
        gains = gains[gains > 0]
        well = gains.size and (gains.min() / gains.max()) ** 2 >= FLOAT32_EIGEN_RATIO
        dtype = np.float32 if well else np.float64
        rounded = mean.astype(dtype)
        offset = (matrix @ (mean - rounded.astype(np.float64))).astype(dtype)[:, None]
        return cls(dtype, rounded, np.ascontiguousarray(matrix.astype(dtype)), offset)
