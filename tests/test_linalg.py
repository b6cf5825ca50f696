"""Matrix products inside QGIS: GSL's reference CBLAS first in the symbol scope (as the
QGIS executables have it) is detected and bypassed without importing torch."""

import os
import subprocess
import sys

import numpy as np

from anomaly_detector.model.linalg import _fortran_gemm, gram, matmul

GSL_CBLAS = "/usr/lib/x86_64-linux-gnu/libgslcblas.so.0"  # installed with QGIS on Debian

CHECK = """
import sys, numpy as np
from anomaly_detector.model.linalg import gram, matmul, reference_blas_first
rng = np.random.default_rng(0)
x = rng.random((64, 5000))
print(reference_blas_first(), float(np.abs(matmul(x, x.T) - np.dot(x, x.T)).max()),
      float(np.abs(gram(x) - np.dot(x, x.T)).max()),
      float(np.abs(gram(x[:, ::2].astype(np.float32)) - np.dot(x[:, ::2], x[:, ::2].T)).max()),
      'torch' in sys.modules)
"""


def test_products_agree_with_numpy_in_every_layout():
    rng = np.random.default_rng(1)
    for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
        a, b = rng.random((30, 40)).astype(dtype), rng.random((40, 50)).astype(dtype)
        for left, right in ((a, b), (np.asfortranarray(a), b), (a, np.asfortranarray(b)),
                            (a[:, ::2], b[::2]), (a, a.T)):
            got = _fortran_gemm(left, right)
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_allclose(got, left @ right, rtol=tolerance)
            np.testing.assert_allclose(matmul(left, right), left @ right, rtol=tolerance)


def test_gram_is_the_symmetric_product():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3000))
    for samples in (x, x[:, ::3], x.astype(np.float32)):
        got = gram(samples)
        assert got.dtype == samples.dtype and np.array_equal(got, got.T)
        np.testing.assert_allclose(got, np.asarray(samples, np.float64) @
                                   np.asarray(samples, np.float64).T, rtol=1e-4, atol=1e-2)


def test_reference_cblas_first_is_bypassed_without_torch():
    env = {**os.environ, "LD_PRELOAD": GSL_CBLAS}
    run = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    first, product, gram64, gram32, torch_imported = run.stdout.split()
    assert first == "True" and torch_imported == "False"
    assert float(product) < 1e-9 and float(gram64) < 1e-9 and float(gram32) < 1e-2


def test_whitening_kernel_picks_float32_only_when_it_stays_close_to_float64():
    from anomaly_detector.model.linalg import WhiteningKernel
    rng = np.random.default_rng(2)
    mean = rng.normal(1000, 50, 6)
    pixels = mean[:, None] + rng.normal(0, 5, (6, 2000))
    for gains, dtype in (([1, 2, 3, 4, 5, 6], np.float32), ([1, 1, 1, 1, 1, 1e-4], np.float64)):
        matrix = np.diag(gains).astype(np.float64) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
        kernel = WhiteningKernel.fit(matrix, mean)
        assert kernel.dtype is dtype and kernel.matrix.flags.c_contiguous
        got = kernel.matrix @ (pixels.astype(dtype) - kernel.mean[:, None]) - kernel.offset
        exact = matrix @ (pixels - mean[:, None])
        assert np.abs(got - exact).max() <= 1e-4 * np.abs(exact).max()
