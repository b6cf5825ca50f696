"""The memory setting of a scoring run and GDAL's block cache."""
import os
from typing import ContextManager, Optional

from osgeo import gdal

from ..defaults import MEMORY_MB
from ..shared_setting import SharedSetting

MEMORY_ENV = "ANOMALY_DETECTOR_MEMORY_MB"
"""Environment variable of the memory setting in MiB (default :data:`.defaults.MEMORY_MB`).
The working memory of one scoring run bounds the statistics blocks, the tiles in flight
(prefetched, batched, being written) and, through :func:`limit_gdal_cache`, GDAL's block
cache (in the batch workers and bench, and during each algorithm run in QGIS, see
:func:`gdal_cache_capped`). It never depends on the raster's size."""
_MIN_MEMORY_MB = 32.0


def memory_budget(memory_mb: Optional[float] = None) -> int:
    """The memory setting in bytes: ``memory_mb``, else ``$ANOMALY_DETECTOR_MEMORY_MB``,
    else :data:`MEMORY_MB`."""
    if memory_mb is None:
        text = os.environ.get(MEMORY_ENV, "").strip()
        try:
            memory_mb = float(text) if text else MEMORY_MB
        except ValueError:
            memory_mb = MEMORY_MB
    return int(max(_MIN_MEMORY_MB, float(memory_mb)) * 2 ** 20)


def limit_gdal_cache(memory_mb: Optional[float] = None, share: float = 0.25) -> int:
    """Cap GDAL's process-wide block cache to ``share`` of the memory setting.

    GDAL's default cache (5 % of RAM) fills with every block read from a large
    raster and counts towards the process's memory; entry points that own their
    process call this (inside QGIS: :func:`gdal_cache_capped`). Returns the new cap in
    bytes.
    """
    cap = max(16 * 2 ** 20, int(memory_budget(memory_mb) * share))
    if gdal.GetCacheMax() > cap:
        gdal.SetCacheMax(cap)
    return min(cap, gdal.GetCacheMax())


_GDAL_CACHE = SharedSetting(gdal.GetCacheMax, gdal.SetCacheMax)


def gdal_cache_capped(memory_mb: Optional[float] = None) -> ContextManager[int]:
    """GDAL's block cache capped as by :func:`limit_gdal_cache` while the block runs (a
    context manager yielding the cap in bytes), the cap from before the first of
    overlapping runs restored after the last (for runs inside a process the plugin does
    not own: QGIS sizes the cache to a share of the machine's RAM, which the blocks of one
    large raster would fill)."""
    return _GDAL_CACHE.overridden(lambda _: limit_gdal_cache(memory_mb))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``resource.getrusage``; Linux and macOS)."""
    import resource
    import sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10
