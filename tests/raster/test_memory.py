"""The process's peak memory as the batch entry reports it per worker."""

import numpy as np

from anomaly_detector.model.raster.memory import peak_rss_mb


def test_peak_rss_grows_with_memory_touched():
    before = peak_rss_mb()
    block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, every page written
    after = peak_rss_mb()
    assert block.sum() == block.size
    current_kb = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
    assert after >= current_kb / 1024 - 1  # the peak is at least the current resident size
    assert after - before > 32 or before > current_kb / 1024  # the block shows in the peak
