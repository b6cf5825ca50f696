"""Global RX anomaly detector (Reed-Xiaoli), streamed through the engine.

Score definition (documented for users): the *plain* Mahalanobis distance

    score(x) = sqrt((x - mu)^T  pinv(C)  (x - mu))

where ``mu`` and ``C`` are the mean and covariance (ddof=1, as ``np.cov``) of
all valid pixels of the selected bands, and ``pinv`` is the Moore-Penrose
pseudo-inverse (so constant or perfectly correlated bands do not fail). With a
single band this is ``|x - mu| / std``. Its scale grows with the band count: the root
mean square of the scores over the valid pixels is ``sqrt(rank(C) (n - 1) / n)``, about
the square root of the number of bands.

A raster without variation (every valid pixel equal) scores 0 everywhere.

Two streaming passes, neither of which holds the raster in memory: pass 1
computes ``mu`` and ``C`` with :func:`band_statistics`, pass 2 scores tiles
with :func:`score_raster` (RX is per-pixel, so no overlap is needed).
"""

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ..defaults import RX_TILE_SIZE, STATISTICS_BLOCK
from ..linalg import CHUNK_VALUES, WhiteningKernel, single_threaded_blas
from ..raster.area import Window, area_source
from ..raster.errors import RasterInputError
from ..raster.pipeline import Observer, score_raster
from ..raster.progress import CancelFn, ProgressFn, sub_progress
from ..raster.scorer import TileScorer, zero_scorer
from ..raster.stats import band_statistics, no_variation


def rx_precision(cov: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a covariance matrix (symmetric, tolerant to singularity)."""
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    return np.linalg.pinv(cov, hermitian=True)


def rx_whitening(precision: np.ndarray) -> np.ndarray:
    """``W`` with ``W.T @ W == precision`` (PSD square root), so ``d2 = |W (x - mu)|^2``."""
    values, vectors = np.linalg.eigh((precision + precision.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))).T


_CHUNK_PIXELS = 65536  # at most: a few bands' chunk stays in the core's cache

RX_TILE_BYTES = 64 * 2 ** 20
"""Float32 bands of one RX tile at most: tiles of many bands then come in their dozens,
read into the same memory again (:class:`..raster.io.BufferPool`) rather than into new
memory for each of a few very large tiles."""


def rx_tile_side(tile_size: int, band_count: int) -> int:
    """The side of RX tiles: ``tile_size``, or less (a multiple of 64) for so many bands
    that a tile would exceed :data:`RX_TILE_BYTES`. RX is per pixel: no result depends
    on it."""
    side = math.isqrt(RX_TILE_BYTES // (4 * max(1, band_count))) // 64 * 64
    return max(1, min(int(tile_size), max(64, side)))


class _RxScorer(TileScorer):
    """Tile scorer of :func:`score_raster`: scores in the pipeline's scoring thread while
    its reader thread decodes the next tiles."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray) -> None:
        self.kernel = WhiteningKernel.fit(rx_whitening(rx_precision(cov)), mean)
        self.bytes_per_pixel = 8 * 8 + 4  # chunked temporaries, amortised over a tile

    def __call__(self, tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
        b, h, w = tile.shape
        flat = tile.reshape(b, -1)
        out = np.empty(h * w, dtype=np.float32)
        step = min(_CHUNK_PIXELS, max(1024, CHUNK_VALUES // max(b, 1)))
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, h * w, step):
                y = self.kernel.apply(flat[:, start:start + step])
                y *= y
                out[start:start + step] = np.sqrt(y.sum(axis=0))
        return out.reshape(h, w)


def make_rx_scorer(mean: np.ndarray, cov: np.ndarray):
    """Return a ``score_tile`` function for :func:`score_raster`.

    The Mahalanobis distance to ``mean`` under ``cov``, computed as the norm of the
    whitened pixel, chunk by chunk, by :class:`~..linalg.WhiteningKernel` (float32 where
    that stays within about 1e-4 of float64).
    """
    return _RxScorer(mean, cov)


def rx_score_raster(src_path: str, dst_path: str, bands: Optional[Sequence[int]] = None, *,
                    tile_size: int = RX_TILE_SIZE, block_size: int = STATISTICS_BLOCK,
                    progress: ProgressFn = None, is_cancelled: CancelFn = None,
                    memory_mb: Optional[float] = None, window: Optional[Window] = None,
                    mask_path: Optional[str] = None, observe: Optional[Observer] = None
                    ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Write the global RX score of ``src_path`` to ``dst_path`` (float32 GeoTIFF).

    ``memory_mb`` is the engine's memory setting (see ``raster.memory.memory_budget``).
    With an area of interest (``window``, ``mask_path``: see ``raster.area.area_source``) the
    output covers the window and the statistics come from the pixels inside the area.
    ``observe`` sees each block of scores as written (see ``raster.pipeline.score_raster``).
    Returns ``(mean, cov, n_valid)`` of the statistics pass.
    """
    with area_source(src_path, bands=bands, window=window, mask_path=mask_path) as path:
        mean, cov, n = band_statistics(path, bands, block_size=block_size,
                                       progress=sub_progress(progress, 0.0, 0.5),
                                       is_cancelled=is_cancelled, memory_mb=memory_mb)
        try:
            scorer = zero_scorer if no_variation(mean, cov) else make_rx_scorer(mean, cov)
        except np.linalg.LinAlgError as error:
            raise RasterInputError(
                f"The band statistics of '{src_path}' cannot be inverted ({error}). Check the "
                "raster for extreme or corrupt values, or choose other bands.") from error
        with single_threaded_blas():  # the reader thread decodes on the other core
            score_raster(path, dst_path, scorer, bands=bands,
                         tile_size=rx_tile_side(tile_size, len(mean)), overlap=0,
                         progress=sub_progress(progress, 0.5, 1.0),
                         is_cancelled=is_cancelled, memory_mb=memory_mb, observe=observe)
    return mean, cov, n
