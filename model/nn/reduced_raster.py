"""The spectral reduction of a whole raster, computed once before tiling.

Tiles are read with their margins: with many bands, every margin's raw bands are decoded
(and at a coarser analysis scale averaged) and reduced again, about 1.56 times the
raster with the default tiles, 2-4 times wider context at the coarser scales; on striped
or pixel-interleaved files the tiles' windows also decode whole strips several times.
When the reduced channels fit in memory, the raster is instead read once, in windows of
whole blocks, averaged over ``scale`` x ``scale`` blocks and reduced into an in-memory raster
of ``INPUT_CHANNELS`` float32 bands on the input grid (each block's channels repeated
over its pixels, NaN where a pixel is invalid), which the tiles then read. The
reduction is per pixel (per block), and averaging a block of equal values gives that
value back, so the scores are the same.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
from osgeo import gdal

from ..linalg import single_threaded_blas
from ..raster.io import (READERS, BufferPool, DatasetPerThread, RasterInfo, aligned_windows,
                         open_dataset, read_ahead, read_window)
from ..raster.memory import memory_budget
from ..raster.progress import check_cancelled, report
from ..raster.stats import pool_mean
from .features import INPUT_CHANNELS, SpectralReduction

MEMORY_SHARE = 0.25
"""Share of the memory setting that the reduced raster may take."""

WINDOW_SHARE = 0.25
"""Share of the memory setting that the windows of raw and reduced pixels may take."""


def reduces_first(info: RasterInfo, memory_mb: float | None = None) -> bool:
    """Whether a raster is reduced before tiling: more bands than reduced channels, and a
    reduced copy within :data:`MEMORY_SHARE` of the memory setting."""
    reduced_bytes = 4 * INPUT_CHANNELS * info.width * info.height
    return len(info.bands) > INPUT_CHANNELS and \
        reduced_bytes <= MEMORY_SHARE * memory_budget(memory_mb)


class ReducedChannels:
    """The reduction of tiles read from a reduced raster: the channels as they are, 0
    where a pixel is invalid (as :meth:`SpectralReduction.apply` gives there)."""

    band_count = INPUT_CHANNELS

    @staticmethod
    def apply(channels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        if valid is None:
            return channels.astype(np.float32, copy=False)
        return np.where(valid, channels, np.float32(0)).astype(np.float32, copy=False)


def _window_pixels(info: RasterInfo, memory_mb: float | None) -> int:
    """Pixels per window: raw float32 bands (the window being reduced and the
    :data:`READERS` read ahead), their mask and the reduced channels with their
    temporaries in :data:`WINDOW_SHARE` of the setting."""
    per_pixel = 4 * (READERS + 1) * len(info.bands) + 1 + 12 * INPUT_CHANNELS
    return int(WINDOW_SHARE * memory_budget(memory_mb) // per_pixel)


def _repeat(blocks: np.ndarray, scale: int, height: int, width: int) -> np.ndarray:
    """(C, h, w) block values -> contiguous (C, height, width): each repeated over its
    block."""
    if scale == 1:
        return blocks
    repeated = np.repeat(np.repeat(blocks, scale, axis=1), scale, axis=2)
    return np.ascontiguousarray(repeated[:, :height, :width])


@contextmanager
def reduced_raster(src_path: str, bands: Sequence[int] | None, reduction: SpectralReduction,
                   scale: int = 1, *, memory_mb: float | None = None,
                   progress: Callable[[float], None] | None = None,
                   is_cancelled: Callable[[], bool] | None = None) -> Iterator[str]:
    """An in-memory GeoTIFF (``/vsimem/``) of the reduced channels of ``src_path``
    averaged over ``scale`` x ``scale`` blocks, on its grid, read once in windows of
    whole blocks of the file (see :func:`.raster.io.aligned_windows`); removed when the
    context ends."""
    path = f"/vsimem/anomaly_detector/reduced-{uuid.uuid4().hex}.tif"
    source, info = open_dataset(src_path, bands)
    windows = aligned_windows(source, _window_pixels(info, memory_mb), scale)
    source = None
    target = gdal.GetDriverByName("GTiff").Create(
        path, info.width, info.height, INPUT_CHANNELS, gdal.GDT_Float32,
        ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "INTERLEAVE=PIXEL"])
    datasets = DatasetPerThread(src_path)
    buffers = BufferPool()
    try:
        def read(window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
            check_cancelled(is_cancelled)
            return read_window(datasets(), info, *window, buffers=buffers)

        with single_threaded_blas():
            for i, (window, (data, valid)) in enumerate(
                    zip(windows, read_ahead(windows, read, READERS))):
                x, y, width, height = window
                channels = reduction.apply(*pool_mean(data, valid, scale))
                buffers.give(data)
                del data
                channels = _repeat(channels, scale, height, width)
                channels[:, ~valid] = np.nan  # the pixel's own validity, as tiles read it
                target.WriteRaster(x, y, width, height, channels.tobytes(),
                                   band_list=list(range(1, INPUT_CHANNELS + 1)))
                report(progress, (i + 1) / len(windows))
        datasets.close()
        target.FlushCache()
        target = None
        yield path
    finally:
        datasets.close()
        target = None
        gdal.Unlink(path)
