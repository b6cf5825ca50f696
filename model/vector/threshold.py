"""The score threshold of a score raster, from streaming passes in bounded memory.

Methods (pixels with ``score >= threshold`` are anomalous):

* ``top_fraction`` (default): ``value`` is the fraction of *valid* pixels to
  flag, e.g. 0.005 = the 0.5 % highest scores. The threshold is the exact
  k-th highest score, ``k = ceil(value * n_valid)`` (ties at the threshold are all
  kept): when at most :data:`_EXACT_LIMIT` pixels are flagged, from the highest scores
  kept while the summary pass streams (one pass); else by refining histograms (never a
  sort of all pixels).
* ``fixed``: ``value`` is the score threshold itself.
* ``automatic``: ``mean + 3 * std`` of the valid scores (the three-sigma
  rule), computed in one streaming pass; ``value`` is ignored.
"""

import math
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from ..defaults import THRESHOLD, THRESHOLD_METHOD
from ..raster.errors import ParameterError, RasterInputError
from ..raster.io import EXACT_IN_FLOAT32, iter_windows, open_dataset, own_masks
from ..raster.output import NODATA
from ..raster.progress import CancelFn, ProgressFn, check_cancelled, report
from ..raster.stats import Moments

METHODS = ("top_fraction", "fixed", "automatic")
AUTO_K = 3.0
BLOCK = 1024
_HIST_BINS = 4096
_EXACT_LIMIT = 2_000_000


class ScoreBand(NamedTuple):
    """An open score raster, the band that is thresholded, its nodata value, the type its
    values are read as (float32 when that holds each of them exactly, else float64) and
    the GDAL bands whose 0 marks a pixel invalid (its mask band, its alpha band)."""
    ds: object
    band: object
    nodata: Optional[float]
    dtype: type
    masks: tuple = ()


def open_scores(path: str, band: int):
    """``(ScoreBand, RasterInfo)`` of band ``band`` of the score raster ``path``."""
    ds, info = open_dataset(path, [band])
    dtype = np.float32 if info.dtypes[0] in EXACT_IN_FLOAT32 else np.float64
    return ScoreBand(ds, ds.GetRasterBand(band), info.nodata[0], dtype,
                     tuple(own_masks(ds, info))), info


def at_least(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values >= threshold`` as in float64, also for float32 ``values`` (NumPy would
    round the threshold to float32 first, which can flag a value just below it)."""
    if values.dtype == np.float32:
        bound = np.float32(threshold)
        if float(bound) < threshold:
            bound = np.nextafter(bound, np.float32(np.inf))
        return values >= bound
    return values >= threshold


def valid_scores(values: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """Where ``values`` read from a score raster are valid: finite and not ``nodata``."""
    valid = np.isfinite(values)
    if nodata is not None and not math.isnan(nodata):
        valid &= values != nodata
    return valid


def score_windows(scores: ScoreBand, progress: ProgressFn = None, is_cancelled: CancelFn = None,
                  block: int = BLOCK, rows: Optional[int] = None):
    """``(window, scores, valid)`` of square blocks, or of strips of ``rows`` whole rows."""
    width, height = scores.ds.RasterXSize, scores.ds.RasterYSize
    windows = ([(0, y, width, min(rows, height - y)) for y in range(0, height, rows)] if rows
               else list(iter_windows(width, height, block)))
    for i, (x, y, w, h) in enumerate(windows):
        check_cancelled(is_cancelled)
        values = scores.band.ReadAsArray(x, y, w, h).astype(scores.dtype, copy=False)
        valid = valid_scores(values, scores.nodata)
        for mask in scores.masks:
            valid &= mask.ReadAsArray(x, y, w, h) > 0
        yield (x, y, w, h), values, valid
        report(progress, (i + 1) / len(windows))


class _HighestValues:
    """The ``count`` highest values of a stream, in O(count) memory: the values at or above
    the current floor are held in parts, cut back to the ``count`` highest (raising the
    floor) once there are twice as many; each value is copied a bounded number of times."""

    def __init__(self, count: int) -> None:
        self.count, self.parts, self.size, self.floor = count, [], 0, -math.inf

    def add(self, x: np.ndarray) -> None:
        x = x[x >= self.floor]  # a copy
        if x.size:
            self.parts.append(x)
            self.size += x.size
            if self.size >= 2 * self.count:
                self.trim()

    def trim(self) -> np.ndarray:
        values = np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]
        if values.size > self.count:
            values = np.partition(values, values.size - self.count)[-self.count:]
            self.floor = float(values[0])
        self.parts, self.size = [values], values.size
        return values

    def kth(self, k: int) -> float:
        """The k-th highest value (k <= count and <= the values added)."""
        values = self.trim()
        return float(np.partition(values, values.size - k)[values.size - k])


class ScoreSummary(NamedTuple):
    """Streaming summary of the valid scores of a score raster."""
    n_valid: int
    low: float
    high: float


class ScoreStream:
    """The valid scores of a score raster seen block by block: their count and range, and
    what the threshold ``method`` needs of them (the highest for a top fraction, the
    moments for ``automatic``).

    Fed by a pass over the raster (:func:`threshold_and_summary`), or by the scoring
    pipeline with each block it writes (:func:`observer`): then :meth:`threshold` gives
    the threshold without reading the raster again.
    """

    def __init__(self, method: str = THRESHOLD_METHOD, value: float = THRESHOLD,
                 pixels: int = 0) -> None:
        """A stream for the ``method`` / ``value`` threshold of a raster of ``pixels``."""
        _check_method(method, value)
        self.method, self.value = method, value
        self.count, self.low, self.high = 0, math.inf, -math.inf
        self.moments = Moments(1) if method == "automatic" else None
        self.highest = None
        if method == "top_fraction":
            most = max(1, int(math.ceil(float(value) * pixels)))  # k, were every pixel valid
            self.highest = _HighestValues(most) if most <= _EXACT_LIMIT else None

    def add(self, scores: np.ndarray) -> None:
        """Take valid scores (any shape)."""
        if scores.size == 0:
            return
        self.count += scores.size
        self.low = min(self.low, float(scores.min()))
        self.high = max(self.high, float(scores.max()))
        if self.highest is not None:
            self.highest.add(scores.reshape(-1))
        if self.moments is not None:
            self.moments.add(scores.reshape(1, -1).astype(np.float64))

    def summary(self, path: str) -> ScoreSummary:
        """The :class:`ScoreSummary` of the scores taken (of the raster ``path``)."""
        if self.count == 0:
            raise RasterInputError(
                f"The score raster '{path}' contains no valid pixels (all nodata or "
                "non-finite). Check the input of the scoring step.")
        return ScoreSummary(self.count, self.low, self.high)

    def threshold(self, path: str, scores: ScoreBand, is_cancelled: CancelFn = None) -> float:
        """The threshold of :func:`compute_threshold` on the scores taken (those of the
        raster ``path``, open as ``scores``: a top fraction of more than
        :data:`_EXACT_LIMIT` pixels is refined by passes over it)."""
        if self.method == "fixed":
            return float(self.value)
        summary = self.summary(path)
        if summary.high <= summary.low:  # no variation, no anomaly: above every score
            return math.nextafter(summary.high, math.inf)
        if self.method == "automatic":
            std = math.sqrt(float(self.moments.covariance(ddof=0)[0, 0]))
            return float(self.moments.mean[0]) + AUTO_K * std
        k = max(1, int(math.ceil(float(self.value) * summary.n_valid)))
        if self.highest is not None:
            return self.highest.kth(k)
        return _kth_highest(scores, k, summary.low, summary.high, is_cancelled)


def _kth_highest(scores: ScoreBand, k: int, lo: float, hi: float, is_cancelled) -> float:
    """Exact k-th highest valid value by histogram refinement (bounded memory)."""
    above = 0  # number of values > hi already accounted for
    for _ in range(8):
        if hi <= lo:
            return lo
        hist = np.zeros(_HIST_BINS, dtype=np.int64)
        edges = np.linspace(lo, hi, _HIST_BINS + 1)  # as np.histogram's equal bins
        for _, a, v in score_windows(scores, None, is_cancelled):
            x = a[v].astype(np.float64)
            x = x[(x >= lo) & (x <= hi)]
            if x.size:  # equal bins: binned arithmetically, not by sorting
                hist += np.histogram(x, bins=_HIST_BINS, range=(lo, hi))[0]
        cum = np.cumsum(hist[::-1])  # counts from the top bin down
        j = int(np.searchsorted(cum, k - above))  # first top-bin index reaching k
        j = min(j, _HIST_BINS - 1)
        b = _HIST_BINS - 1 - j
        above_b = above + (int(cum[j - 1]) if j > 0 else 0)
        nlo, nhi = float(edges[b]), float(edges[b + 1])
        if hist[b] <= _EXACT_LIMIT:
            vals = []
            last = b == _HIST_BINS - 1
            for _, a, v in score_windows(scores, None, is_cancelled):
                x = a[v].astype(np.float64)
                sel = (x >= nlo) & ((x <= nhi) if last else (x < nhi))
                if sel.any():
                    vals.append(x[sel])
            vals = np.sort(np.concatenate(vals))[::-1] if vals else np.array([nlo])
            idx = min(max(k - above_b - 1, 0), vals.size - 1)
            return float(vals[idx])
        # too many values in one bin: refine inside it
        above = above_b
        lo, hi = nlo, np.nextafter(nhi, -np.inf) if b != _HIST_BINS - 1 else nhi
    return lo


def compute_threshold(path: str, method: str = THRESHOLD_METHOD,
                      value: float = THRESHOLD, *,
                      band: int = 1, progress: ProgressFn = None,
                      is_cancelled: CancelFn = None,
                      stream: Optional[ScoreStream] = None) -> float:
    """Score threshold for ``method`` (see module docstring); ``stream`` as
    :func:`threshold_and_summary` takes it."""
    if method == "fixed":
        if stream is not None:  # threshold_and_summary checks it otherwise
            _check_stream(stream, method, value)
        _check_method(method, value)
        return float(value)
    return threshold_and_summary(path, method, value, band=band, progress=progress,
                                 is_cancelled=is_cancelled, stream=stream)[0]


def threshold_and_summary(path: str, method: str = THRESHOLD_METHOD,
                          value: float = THRESHOLD, *, band: int = 1,
                          progress: ProgressFn = None, is_cancelled: CancelFn = None,
                          stream: Optional[ScoreStream] = None
                          ) -> Tuple[float, ScoreSummary]:
    """The threshold of :func:`compute_threshold` and the :class:`ScoreSummary` of the
    valid scores, from the same streaming pass (plus refinement passes only when more
    than :data:`_EXACT_LIMIT` pixels are flagged); no pass with a ``stream`` of this
    ``method`` and ``value`` that saw every score as it was written (:func:`observer`)."""
    _check_method(method, value)
    scores, info = open_scores(path, band)
    if stream is None:
        stream = ScoreStream(method, value, info.width * info.height)
        for _, values, valid in score_windows(scores, progress, is_cancelled):
            stream.add(values[valid])
    else:
        _check_stream(stream, method, value)
    return stream.threshold(path, scores, is_cancelled), stream.summary(path)


def _check_stream(stream: ScoreStream, method: str, value) -> None:
    if (stream.method, stream.value) != (method, value):
        raise ValueError(f"The score stream is for the {stream.method} threshold "
                         f"{stream.value}, not for {method} {value}.")


def observer(*streams: Optional[ScoreStream]) -> Optional[Callable[[np.ndarray], None]]:
    """The ``observe`` of ``raster.pipeline.score_raster`` that feeds every stream given
    (None ignored) the valid scores of each block written, found once per block (invalid
    pixels are written as :data:`~..raster.output.NODATA`); None without a stream."""
    streams = [stream for stream in streams if stream is not None]
    if not streams:
        return None

    def observe(block: np.ndarray) -> None:
        scores = block[valid_scores(block, NODATA)]
        for stream in streams:
            stream.add(scores)
    return observe


def _check_method(method: str, value) -> None:
    if method not in METHODS:
        raise ParameterError(f"Unknown threshold method {method!r}; use one of {METHODS}")
    if method == "fixed" and (value is None or not math.isfinite(float(value))):
        raise ParameterError("The fixed score threshold must be a finite number.")
    if method == "top_fraction" and not (0.0 < float(value) <= 1.0):
        raise ParameterError(
            f"The top fraction must be between 0 and 1 (got {value}); "
            "for example 0.005 flags the 0.5 % highest scores.")
