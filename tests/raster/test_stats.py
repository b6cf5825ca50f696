"""Streaming band statistics, pooling and the moments accumulator."""

import numpy as np
import pytest

from anomaly_detector.model.raster.errors import RasterInputError
from anomaly_detector.model.raster.stats import (Moments, band_statistics, pool_mean,
                                                 statistics_stride)
from conftest import write_raster


def _random_with_nodata(shape, seed=0, nodata=-9999.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    a[0] += 3 * a[-1]  # correlated bands
    a[:, 3:6, 4:9] = nodata
    a[1, 10, 10] = np.nan
    a[0, 11, 12] = np.inf
    return a


def test_band_statistics_matches_numpy(tmp_path):
    nd = -9999.0
    a = _random_with_nodata((4, 70, 53), nodata=nd)
    p = write_raster(tmp_path / "a.tif", a, nodata=nd)
    for bands in (None, [2, 4]):
        sel = [b - 1 for b in (bands or [1, 2, 3, 4])]
        valid = np.all(np.isfinite(a[sel]) & (a[sel] != nd), axis=0)
        x = a[sel][:, valid].astype(np.float64)
        mean, cov, n = band_statistics(p, bands, block_size=16)
        assert n == valid.sum()
        np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x), rtol=1e-9, atol=1e-10)


def test_pool_mean_averages_valid_pixels_of_each_block():
    data = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    valid = np.ones((5, 7), bool)
    valid[0, 0] = False  # one invalid pixel, and below one all-invalid block
    valid[2:4, 4:6] = False
    data[:, ~valid] = np.nan  # invalid values must not leak into the averages
    pooled, pooled_valid = pool_mean(data, valid, 2)
    assert pooled.shape == (2, 3, 4) and pooled.dtype == np.float32
    for r in range(3):
        for c in range(4):
            block = (slice(2 * r, 2 * r + 2), slice(2 * c, 2 * c + 2))
            inside = valid[block]
            assert pooled_valid[r, c] == inside.any()
            if inside.any():
                np.testing.assert_allclose(pooled[:, r, c], data[:, block[0], block[1]][:, inside]
                                           .mean(axis=1), rtol=1e-6)
    assert pool_mean(data, valid, 1)[0] is data


def test_band_statistics_of_the_pooled_raster(tmp_path):
    a = np.random.default_rng(3).normal(size=(3, 37, 50)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    pooled, _ = pool_mean(a, np.ones(a.shape[1:], bool), 2)
    mean, cov, n = band_statistics(p, block_size=15, pool=2)  # block rounded to 14
    assert n == 19 * 25
    np.testing.assert_allclose(mean, pooled.reshape(3, -1).mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(pooled.reshape(3, -1)), rtol=1e-5, atol=1e-7)


def test_band_statistics_on_a_regular_grid_of_pixels(tmp_path):
    assert statistics_stride(1000, 1000) == 1  # < 4 x 2^18 pixels: all of them
    assert statistics_stride(1024, 1024) == 2
    assert statistics_stride(4096, 4096) == 8  # still 2^18 pixels
    a = np.random.default_rng(4).normal(size=(3, 45, 38)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    mean, cov, n = band_statistics(p, block_size=10, stride=3)  # block rounded to 9
    grid = a[:, ::3, ::3].reshape(3, -1)
    assert n == grid.shape[1] == 15 * 13
    np.testing.assert_allclose(mean, grid.mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(grid), rtol=1e-5, atol=1e-7)


def test_band_statistics_all_nodata(tmp_path):
    p = write_raster(tmp_path / "a.tif", np.zeros((2, 5, 5), np.float32), nodata=0)
    with pytest.raises(RasterInputError, match="no valid pixels"):
        band_statistics(p)


def test_moments_merged_block_by_block_equal_numpy():
    rng = np.random.default_rng(5)
    samples = rng.normal(size=(3, 1000)) * [[1.0], [10.0], [1e-3]] + [[5.0], [-2.0], [1e6]]
    moments = Moments(3)
    for start, stop in ((0, 1), (1, 400), (400, 400), (400, 1000)):
        moments.add(samples[:, start:stop].copy())
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean, samples.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance(), np.cov(samples), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(moments.covariance(ddof=0), np.cov(samples, ddof=0), rtol=1e-9,
                               atol=1e-10)


def test_moments_of_parts_merge_into_those_of_the_whole():
    rng = np.random.default_rng(7)
    samples = rng.normal(size=(4, 900)) * [[1.0], [5.0], [1e-2], [3.0]] + [[2.0], [1e5], [0], [-7]]
    parts = []
    for start, stop in ((0, 300), (300, 301), (301, 301), (301, 900)):
        part = Moments(4)
        part.add(samples[:, start:stop].copy())
        parts.append(part)
    whole = Moments(4)
    for part in parts:
        whole.merge(part)
    assert whole.count == 900
    np.testing.assert_allclose(whole.mean, samples.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(whole.covariance(), np.cov(samples), rtol=1e-9, atol=1e-10)
