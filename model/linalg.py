"""Matrix products that stay fast inside QGIS.

The QGIS executables (``qgis``, ``qgis_process``) link GSL, whose unoptimised
reference CBLAS then sits in the process's global symbol scope ahead of the system
BLAS: numpy's matrix products inside QGIS resolve to it and run far slower than in a
plain Python process (``tools/blas_speed.py`` times both). Where that is the case,
:func:`matmul` sends large products through torch's own BLAS; elsewhere it is plain
numpy (identical results).
"""
from __future__ import annotations

import ctypes
import functools

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


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays of one float type, fast whichever BLAS the process found."""
    if not reference_blas_first() or a.shape[0] * a.shape[1] * b.shape[1] < _LARGE_PRODUCT:
        return a @ b
    import torch
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()
