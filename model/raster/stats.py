"""Band statistics in one streaming pass, and the moments accumulator behind them."""
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ..defaults import STATISTICS_BLOCK
from ..linalg import CHUNK_VALUES, gram, single_threaded_blas
from .errors import RasterInputError
from .io import (READERS, BufferPool, DatasetPerThread, aligned_windows, open_dataset,
                 read_ahead, read_window)
from .memory import memory_budget
from .progress import CancelFn, ProgressFn, check_cancelled, report

Window = Tuple[int, int, int, int]  # xoff, yoff, xsize, ysize


class Moments:
    """Streaming count, mean and centred second moments of ``dims``-vectors.

    Blocks of samples are merged with Chan et al.'s pairwise update in float64, so
    the result equals ``np.mean`` / ``np.cov`` of all samples up to rounding.
    """

    def __init__(self, dims: int) -> None:
        self.count = 0
        self.mean = np.zeros(dims)
        self.m2 = np.zeros((dims, dims))

    def add(self, samples: np.ndarray) -> None:
        """Merge the columns of float64 ``samples`` ``(dims, k)`` (centred in place)."""
        if not samples.shape[1]:
            return
        block = Moments(samples.shape[0])
        block.count = samples.shape[1]
        block.mean = samples.mean(axis=1)
        samples -= block.mean[:, None]
        block.m2 = gram(samples)
        self.merge(block)

    def merge(self, other: "Moments") -> None:
        """Merge the moments of other samples (Chan et al.'s pairwise update)."""
        if not other.count:
            return
        delta = other.mean - self.mean
        total = self.count + other.count
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + \
            np.outer(delta, delta) * (self.count * other.count / total)
        self.count = total

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """``(dims, dims)`` covariance of the samples (``ddof=0``: population)."""
        return self.m2 / max(self.count - ddof, 1)


def statistics_pixels(band_count: int, memory_mb: Optional[float] = None) -> int:
    """Pixels per window of a statistics pass: half the memory setting at 16 bytes per
    pixel and band (the windows of the :data:`.io.READERS` threads, as float32, and the
    copies of their valid pixels); nothing else of the run is in memory yet."""
    return int(memory_budget(memory_mb) // 2 // (16 * max(1, band_count) + 1))


def _sum_groups(array: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Sums of consecutive groups of ``factor`` entries along ``axis`` (last group partial)."""
    length = array.shape[axis]
    shape = list(array.shape)
    shape[axis] = -(-length // factor)
    out = np.zeros(shape, array.dtype)
    for offset in range(factor):
        index = [slice(None)] * array.ndim
        index[axis] = slice(offset, None, factor)
        part = array[tuple(index)]
        index[axis] = slice(0, part.shape[axis])
        out[tuple(index)] += part
    return out


def pool_mean(data: np.ndarray, valid: np.ndarray, factor: int) -> Tuple[np.ndarray, np.ndarray]:
    """Average ``factor`` x ``factor`` blocks of ``data`` (B, h, w) over their valid pixels.

    Returns ``(float32 (B, ceil(h/f), ceil(w/f)), valid)``; a block is valid when any of
    its pixels is. Blocks start at the window's origin (a partial last block averages
    the pixels it has), so windows that start on multiples of ``factor`` pool like the
    whole raster. Rows are summed first, then columns: about one pass over ``data``.
    """
    if factor == 1:
        return data, valid
    if not valid.all():  # invalid pixels may hold nodata values or NaN
        data = np.where(valid, data, np.float32(0))
    sums = _sum_groups(_sum_groups(data.astype(np.float32, copy=False), factor, 1), factor, 2)
    counts = _sum_groups(_sum_groups(valid.astype(np.float32), factor, 0), factor, 1)
    sums /= np.maximum(counts, 1)
    return sums, counts > 0


STATISTICS_SAMPLE = 1 << 18
"""Pixels from which :func:`statistics_stride` lets a raster's statistics be estimated."""


def statistics_stride(width: int, height: int, minimum: int = STATISTICS_SAMPLE) -> int:
    """The largest stride ``s`` whose grid of every s-th pixel in each direction still
    holds at least ``minimum`` pixels of a ``width`` x ``height`` raster (1 if none)."""
    return max(1, math.isqrt(max(0, width * height) // max(1, minimum)))


@single_threaded_blas()
def band_statistics(path: str, bands: Optional[Sequence[int]] = None, *,
                    block_size: int = STATISTICS_BLOCK, progress: ProgressFn = None,
                    is_cancelled: CancelFn = None,
                    memory_mb: Optional[float] = None, pool: int = 1, stride: int = 1
                    ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact streaming mean ``(B,)`` and covariance ``(B, B)`` over valid pixels
    (of the raster averaged over ``pool`` x ``pool`` blocks, see :func:`pool_mean`;
    with ``stride`` > 1, of every ``stride``-th of those pixels in each direction).

    The raster is read in windows of at most ``block_size`` squared pixels (fewer for
    many bands, see :func:`statistics_pixels`) made of whole blocks of the file where
    they fit (see :func:`.io.aligned_windows`); :data:`.io.READERS` threads decode
    windows and take their moments, which are merged in the windows' order with Chan
    et al.'s pairwise update in float64, so the result equals ``np.mean`` / ``np.cov``
    (ddof=1) of all valid pixels up to rounding.
    Returns ``(mean, cov, n_valid)``.
    """
    ds, info = open_dataset(path, bands)
    nb = len(info.bands)
    pixels = min(block_size ** 2, statistics_pixels(nb, memory_mb),
                 -(-ds.RasterXSize * ds.RasterYSize // READERS))  # work for every reader
    windows = aligned_windows(ds, pixels, pool)
    ds = None
    moments = Moments(nb)
    datasets = DatasetPerThread(path)

    buffers = BufferPool()
    chunk = max(1024, CHUNK_VALUES // nb)

    def window_moments(window: Window) -> Moments:
        check_cancelled(is_cancelled)
        raw, valid = read_window(datasets(), info, *window, buffers=buffers)
        data, valid = pool_mean(raw, valid, pool)
        if stride > 1:  # the raster's grid of every stride-th pooled pixel
            rows, columns = -(window[1] // pool) % stride, -(window[0] // pool) % stride
            data = data[:, rows::stride, columns::stride]
            valid = valid[rows::stride, columns::stride]
        samples = data.reshape(nb, -1) if valid.all() else data[:, valid]  # (B, k)
        del data
        result = Moments(nb)
        for start in range(0, samples.shape[1], chunk):
            result.add(samples[:, start:start + chunk].astype(np.float64))
        del samples
        buffers.give(raw)
        return result

    try:
        for i, window_result in enumerate(read_ahead(windows, window_moments, READERS)):
            moments.merge(window_result)
            report(progress, (i + 1) / len(windows))
    finally:
        datasets.close()
    if moments.count == 0:
        raise RasterInputError(
            f"The raster '{path}' contains no valid pixels (all nodata or non-finite) "
            "in the selected bands. Check its nodata value or choose other bands.")
    return moments.mean, moments.covariance(), moments.count


def no_variation(mean: np.ndarray, cov: np.ndarray, tolerance: float = 1e-10) -> bool:
    """Whether the statistics describe a raster without variation: every band's standard
    deviation is at most ``tolerance`` times its mean's magnitude (all valid pixels equal
    up to rounding). Such a raster has no anomaly."""
    variance = np.diag(np.atleast_2d(np.asarray(cov, np.float64)))
    scale = np.maximum(np.abs(np.asarray(mean, np.float64)), np.finfo(np.float64).tiny)
    return bool(np.all(np.sqrt(np.maximum(variance, 0.0)) <= tolerance * scale))
