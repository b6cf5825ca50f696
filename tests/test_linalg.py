"""Matrix products inside QGIS: GSL's reference CBLAS first in the symbol scope (as the
QGIS executables have it) is detected and bypassed without importing torch."""

import os
import subprocess
import sys

import numpy as np
import pytest

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


def test_whitening_kernel_stays_close_to_float64_in_each_arithmetic():
    from anomaly_detector.model.linalg import WhiteningKernel
    rng = np.random.default_rng(2)
    mean = rng.normal(1000, 50, 6)
    pixels = (mean[:, None] + rng.normal(0, 5, (6, 2000))).astype(np.float32)
    pixels[2, 7] = np.nan  # counts as the band's mean, as do infinities (even opposite
    pixels[[1, 4], 9] = np.inf, -np.inf  # ones in one pixel) and a lone one
    pixels[5, 11] = -np.inf
    cases = (([1, 2, 3, 4, 5, 6], np.float32, 0),  # gains within the float32 ratio
             ([1, 1, 1, 1, 1, 1e-4], np.float32, 1),  # one strong component removed first
             ([1, 1, 1, 1, 1e-4, 1e-4], np.float64, 0))  # too many strong ones
    for gains, dtype, strong in cases:
        matrix = np.diag(gains).astype(np.float64) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
        kernel = WhiteningKernel.fit(matrix, mean)
        assert kernel.dtype is dtype and kernel.matrix.flags.c_contiguous
        assert kernel.strong_rows.size == strong
        got = kernel.apply(pixels)
        centred = pixels.astype(np.float64) - mean[:, None]
        centred[~np.isfinite(centred)] = 0.0
        exact = matrix @ centred
        assert got.dtype == np.float32 and got.shape == exact.shape
        assert np.abs(got - exact).max() <= 1e-4 * np.abs(exact).max()


def test_whitening_kernel_removes_strong_components_of_many_bands_accurately():
    """Many bands at a high signal-to-noise ratio: a few components carry nearly all
    the variance; the weak ones still come out within 1e-4 of float64."""
    from anomaly_detector.model.linalg import WhiteningKernel
    rng = np.random.default_rng(5)
    bands, n = 120, 4000
    spectra = rng.normal(size=(bands, 5)) * 3000.0
    pixels = (20000 + spectra @ rng.normal(size=(5, n)) + rng.normal(0, 0.3, (bands, n)))
    pixels = np.round(pixels).astype(np.float32)  # integer counts, as sensors give
    mean = pixels.astype(np.float64).mean(axis=1)
    values, vectors = np.linalg.eigh(np.cov(pixels.astype(np.float64)))
    matrix = (vectors / np.sqrt(values)).T
    kernel = WhiteningKernel.fit(matrix, mean)
    assert kernel.dtype is np.float32 and 0 < kernel.strong_rows.size <= 5
    exact = matrix @ (pixels - mean[:, None])
    got = kernel.apply(pixels)
    assert np.abs(got - exact).max() <= 1e-4 * max(1.0, np.abs(exact).max())
    distance = np.sqrt((got.astype(np.float64) ** 2).sum(axis=0))
    np.testing.assert_allclose(distance, np.sqrt((exact ** 2).sum(axis=0)), rtol=1e-5)


def test_single_threaded_blas_restores_the_thread_counts_after_the_last_block():
    from anomaly_detector.model.linalg import _openblas_libraries, single_threaded_blas
    libraries = _openblas_libraries()
    if not libraries:
        pytest.skip("numpy does not use OpenBLAS here")
    before = [library.openblas_get_num_threads() for library in libraries]
    first, second = single_threaded_blas(), single_threaded_blas()
    with first:
        second.__enter__()
        assert all(library.openblas_get_num_threads() == 1 for library in libraries)
    assert all(library.openblas_get_num_threads() == 1 for library in libraries)  # 2nd runs
    second.__exit__(None, None, None)
    assert [library.openblas_get_num_threads() for library in libraries] == before
