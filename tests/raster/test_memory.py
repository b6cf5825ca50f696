"""Process memory: the peak the batch entry reports per worker, GDAL's cache during a run."""

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.raster.memory import gdal_cache_capped, peak_rss_mb


def test_peak_rss_grows_with_memory_touched():
    before = peak_rss_mb()
    block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, every page written
    after = peak_rss_mb()
    assert block.sum() == block.size
    current_kb = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
    assert after >= current_kb / 1024 - 1  # the peak is at least the current resident size
    assert after - before > 32 or before > current_kb / 1024  # the block shows in the peak


def test_gdal_cache_is_capped_while_a_run_lasts_and_restored_after():
    previous = gdal.GetCacheMax()
    try:
        gdal.SetCacheMax(3 * 2 ** 30)
        with gdal_cache_capped(400) as cap:
            assert cap == 100 * 2 ** 20 and gdal.GetCacheMax() == cap  # a quarter of 400 MiB
        assert gdal.GetCacheMax() == 3 * 2 ** 30
        gdal.SetCacheMax(50 * 2 ** 20)  # a smaller cache is left as it is
        with gdal_cache_capped(400):
            assert gdal.GetCacheMax() == 50 * 2 ** 20
        with pytest.raises(RuntimeError):
            with gdal_cache_capped(400):
                raise RuntimeError("a failed run")
        assert gdal.GetCacheMax() == 50 * 2 ** 20
        gdal.SetCacheMax(3 * 2 ** 30)  # overlapping runs (two algorithms at once)
        first, second = gdal_cache_capped(400), gdal_cache_capped(800)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert gdal.GetCacheMax() == 100 * 2 ** 20  # still capped for the second run
        second.__exit__(None, None, None)
        assert gdal.GetCacheMax() == 3 * 2 ** 30  # the cap from before the first
    finally:
        gdal.SetCacheMax(previous)

