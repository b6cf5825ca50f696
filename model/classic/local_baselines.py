"""Dual-window local RX and multi-scale local contrast of whole rasters, tile by tile.

The scores are those of :mod:`.baselines` (:func:`~.baselines.local_rx`,
:func:`~.baselines.local_contrast`), streamed through the engine in two passes that
never hold the raster: pass 1 gets the band mean and covariance of the valid pixels
(:func:`~..raster.stats.band_statistics`), from which the scene-wide steps come (the
whitening of local RX, the standardisation of local contrast); pass 2 scores tiles
(:func:`~..raster.pipeline.score_raster`) with a margin equal to the windows' radius, so that
every window of a tile's core lies inside the tile or ends at the raster's edge, as
it does on the whole raster: the map equals scoring the whole raster at once.

Nodata pixels are left out of the statistics and of every window, and stay nodata.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .baselines import (COMPONENTS, CONTRAST_EPS, CONTRAST_SCALES, GUARD_WINDOW, OUTER_WINDOW,
                        RIDGE, grey_contrast, ring_rx, whitening_basis)
from ..defaults import TILE_SIZE
from ..linalg import CHUNK_VALUES, matmul
from ..raster.errors import ParameterError
from ..raster.pipeline import Observer, score_raster
from ..raster.progress import CancelFn, ProgressFn, sub_progress
from ..raster.scorer import TileScorer, zero_scorer
from ..raster.stats import band_statistics, no_variation

LARGEST_WINDOW = 255                      # widest window (tile margins stay small)
_SOLVE_PIXELS = 16_384                    # pixels per batch of local K x K solves


@dataclass
class LocalScoreResult:
    """What one run measured: valid pixels, and the whitened components used (local RX)."""

    valid_pixels: int
    components: Optional[int] = None


def window_problem(guard, outer) -> Optional[str]:
    """A sentence saying what to change in the local RX window sides (numbers or text), or
    None."""
    sides = {}
    for name, value in (("GUARD_WINDOW", guard), ("OUTER_WINDOW", outer)):
        try:
            side = float(value)
        except (TypeError, ValueError):
            side = math.nan
        if not (math.isfinite(side) and side == int(side) and int(side) % 2 == 1
                and 1 <= side <= LARGEST_WINDOW):
            return (f"{name} is the side, in pixels, of a square window centred on the "
                    f"pixel: give an odd whole number from 1 to {LARGEST_WINDOW}, such as 7 "
                    f"or 21 (got {value}).")
        sides[name] = int(side)
    if sides["OUTER_WINDOW"] <= sides["GUARD_WINDOW"]:
        return (f"OUTER_WINDOW ({sides['OUTER_WINDOW']}) must be larger than GUARD_WINDOW "
                f"({sides['GUARD_WINDOW']}): the background is the ring between the two "
                "windows. For example GUARD_WINDOW=7 and OUTER_WINDOW=21.")
    return None


def parse_scales(value) -> tuple[int, ...]:
    """Centre box sides from text such as ``"1,3,5"`` (or a sequence), sorted, each once.

    Raises ValueError with a sentence saying what to type for anything else.
    """
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    try:
        numbers = [float(str(part).strip()) for part in parts if str(part).strip()]
    except ValueError:
        numbers = [math.nan]
    if not numbers or any(not math.isfinite(n) or n != int(n) for n in numbers):
        raise ValueError(
            f"SCALES must list centre box sides in pixels, separated by commas, such as "
            f"1,3,5,9,15 (got '{value}').")
    bad = next((int(n) for n in numbers if n < 1 or n % 2 == 0 or 2 * n + 1 > LARGEST_WINDOW),
               None)
    if bad is not None:
        raise ValueError(
            f"SCALES lists {bad}, but every centre box is centred on the pixel: give odd "
            f"sides from 1 to {(LARGEST_WINDOW - 1) // 2}, such as 1,3,5,9,15.")
    return tuple(sorted({int(n) for n in numbers}))


def contrast_margin(scales: Sequence[int]) -> int:
    """Radius of the widest ring of :func:`~.baselines.grey_contrast` (the tile margin)."""
    return 2 * max(scales) + 1


class LocalRxScorer(TileScorer):
    """Tile scorer of :func:`~..raster.pipeline.score_raster`: pixels whitened with the scene's
    statistics, then :func:`~.baselines.ring_rx` (windows of radius ``guard // 2`` and
    ``outer // 2``)."""

    def __init__(self, mean: np.ndarray, vectors: np.ndarray, scales: np.ndarray,
                 guard: int, outer: int, ridge: float) -> None:
        self.mean, self.vectors, self.scales = mean, vectors, scales
        self.radii, self.ridge = (guard // 2, outer // 2), ridge
        k = vectors.shape[1]
        # whitened pixels, the ring moments and the box-sum temporaries, per pixel
        self.bytes_per_pixel = 8 * (2 * k + k * (k + 1) // 2) + 96

    def __call__(self, tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
        bands, height, width = tile.shape
        flat = tile.reshape(bands, -1)
        whitened = np.empty((height * width, self.vectors.shape[1]))
        step = max(1024, CHUNK_VALUES // bands)
        for start in range(0, height * width, step):
            pixels = flat[:, start:start + step].T.astype(np.float64) - self.mean
            whitened[start:start + step] = matmul(pixels, self.vectors) / self.scales
        whitened[~valid.ravel()] = 0.0
        return ring_rx(whitened.reshape(height, width, -1), *self.radii, self.ridge,
                       _SOLVE_PIXELS, valid)


class LocalContrastScorer(TileScorer):
    """Tile scorer of :func:`~..raster.pipeline.score_raster`: the band mean standardised with
    the scene's statistics, then :func:`~.baselines.grey_contrast`."""

    bytes_per_pixel = 160  # the grey image, its mask and the box-sum temporaries

    def __init__(self, offset: float, deviation: float, scales: Sequence[int], eps: float
                 ) -> None:
        self.offset, self.deviation = offset, deviation
        self.scales, self.eps = tuple(scales), eps

    def __call__(self, tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
        grey = (tile.mean(axis=0, dtype=np.float64) - self.offset) / self.deviation
        grey[~valid] = 0.0
        return grey_contrast(grey, self.scales, self.eps, valid)


def _two_passes(src_path: str, dst_path: str, bands: Optional[Sequence[int]],
                make_scorer: Callable, margin: int, tile_size: int, progress: ProgressFn,
                is_cancelled: CancelFn, memory_mb: Optional[float],
                observe: Optional[Observer]) -> LocalScoreResult:
    """Band statistics, then ``make_scorer(mean, cov, n) -> (score_tile, components)``
    scores the raster into ``dst_path`` (each written block passed to ``observe``)."""
    mean, cov, n = band_statistics(src_path, bands, progress=sub_progress(progress, 0.0, 0.2),
                                   is_cancelled=is_cancelled, memory_mb=memory_mb)
    scorer, components = (zero_scorer, 0) if no_variation(mean, cov) else \
        make_scorer(mean, cov, n)
    score_raster(src_path, dst_path, scorer, bands=bands, tile_size=tile_size, overlap=margin,
                 progress=sub_progress(progress, 0.2, 1.0), is_cancelled=is_cancelled,
                 memory_mb=memory_mb, observe=observe)
    return LocalScoreResult(n, components)


def local_rx_score_raster(src_path: str, dst_path: str, bands: Optional[Sequence[int]] = None,
                          *, guard: int = GUARD_WINDOW, outer: int = OUTER_WINDOW,
                          components: int = COMPONENTS, ridge: float = RIDGE,
                          tile_size: int = TILE_SIZE, progress: ProgressFn = None,
                          is_cancelled: CancelFn = None, memory_mb: Optional[float] = None,
                          observe: Optional[Observer] = None) -> LocalScoreResult:
    """Write the dual-window local RX score of ``src_path`` (float32 GeoTIFF, the squared
    distance of :func:`~.baselines.local_rx`) to ``dst_path`` (see ``score_raster`` for
    ``observe``)."""
    problem = window_problem(guard, outer)
    if problem:
        raise ParameterError(problem)

    def make_scorer(mean, cov, n):
        basis = whitening_basis(cov, components)
        if basis is None:
            return zero_scorer, 0
        return LocalRxScorer(mean, *basis, guard, outer, ridge), basis[0].shape[1]
    return _two_passes(src_path, dst_path, bands, make_scorer, outer // 2, tile_size,
                       progress, is_cancelled, memory_mb, observe)


def local_contrast_score_raster(src_path: str, dst_path: str,
                                bands: Optional[Sequence[int]] = None, *,
                                scales: Sequence[int] = CONTRAST_SCALES,
                                eps: float = CONTRAST_EPS, tile_size: int = TILE_SIZE,
                                progress: ProgressFn = None, is_cancelled: CancelFn = None,
                                memory_mb: Optional[float] = None,
                                observe: Optional[Observer] = None) -> LocalScoreResult:
    """Write the multi-scale local contrast of ``src_path`` (float32 GeoTIFF, as
    :func:`~.baselines.local_contrast`) to ``dst_path`` (see ``score_raster`` for
    ``observe``)."""
    scales = parse_scales(scales)

    def make_scorer(mean, cov, n):
        # the band mean's mean and standard deviation (ddof=0) over the valid pixels
        variance = float(cov.sum()) / cov.shape[0] ** 2 * (n - 1) / n
        deviation = math.sqrt(variance) if variance > 0 else 1.0
        return LocalContrastScorer(float(mean.mean()), deviation, scales, eps), None
    return _two_passes(src_path, dst_path, bands, make_scorer, contrast_margin(scales),
                       tile_size, progress, is_cancelled, memory_mb, observe)
