"""Running the bundled detector: on an in-memory array, or over a raster file by tiles.

The per-raster spectral reduction is fitted once from streaming band statistics
(exact mean and covariance over every valid pixel), then each padded tile is mapped
to the network's input channels and scored. Nodata and non-finite pixels are fed as
the raster mean and written as nodata by the engine.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..defaults import OVERLAP, TILE_SIZE
from ..raster.area import Window, area_source
from ..raster.errors import RasterInputError
from ..raster.io import INTEGER_TYPES, open_raster_checked
from ..raster.pipeline import Observer, score_raster
from ..raster.progress import sub_progress
from ..raster.scorer import TileScorer as RasterTileScorer, zero_scorer
from ..raster.stats import band_statistics, no_variation, pool_mean, statistics_stride
from .features import INPUT_CHANNELS, SpectralReduction, fit_from_array, grey_level_variance
from .fused import FusedScorer, convolution_dtype, precision_name
from .network import SIZE_MULTIPLE, Detector
from .reduced_raster import ReducedChannels, reduced_raster, reduces_first
from .weights import WeightsError, load_detector

__all__ = ["DetectionResult", "RasterInputError", "SCALES", "TileScorer", "WeightsError",
           "check_scale", "detect_raster", "detection_statistics", "raster_scorer",
           "resolve_device", "score_array", "tile_align", "tile_core", "tile_margin"]


def resolve_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; refuses an unusable 'cuda'."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device '{requested}': use auto, cpu or cuda.")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("DEVICE is 'cuda' but PyTorch sees no CUDA GPU on this machine: "
                         "choose 'auto' or 'cpu', or install a CUDA build of PyTorch.")
    return requested


def check_precision(precision: str, device: str) -> None:
    """A ValueError for a precision the device cannot give (see
    :func:`.fused.convolution_dtype`); bfloat16 is a CPU option."""
    convolution_dtype(precision)
    if device != "cpu" and (precision or "").lower() == "bfloat16":
        raise ValueError("PRECISION 'bfloat16' is offered on the CPU only: choose 'auto' or "
                         "'float32' on a GPU.")


def _round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-int(value) // multiple) * multiple


THREADS_ENV = "ANOMALY_DETECTOR_TORCH_THREADS"


def use_all_cores() -> int:
    """Let torch use every core (it may default to fewer), or ``$ANOMALY_DETECTOR_TORCH_THREADS``
    threads (set by the batch runner, which shares the cores between its workers)."""
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    if torch.get_num_threads() < cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc reuse freed feature maps instead of unmapping and re-faulting them.

    Large tensors are otherwise mmap'ed and returned to the system on every layer;
    the page faults cost ~15 % of the CPU time of a forward pass on 2 cores. Memory
    stays bounded by the engine's memory setting; :func:`release_memory` gives it
    back after a run. No effect outside glibc (Windows, macOS).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: feature maps from the heap
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: give back large free tops
        # M_ARENA_MAX: the reader, writer and compute threads otherwise each keep an
        # arena of freed tiles (measured: +230 MB peak on a 8192 x 8192 raster)
        libc.mallopt(-8, 2)
    except (OSError, AttributeError):
        pass


def _trim_heap() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; no-op elsewhere), in
    a thread of its own: the run's results are complete, and the caller goes on meanwhile."""
    threading.Thread(target=_trim_heap, name="anomaly-release-memory", daemon=True).start()


class PreparedTile(NamedTuple):
    channels: np.ndarray  # (INPUT_CHANNELS, h / scale, w / scale) float32
    shape: tuple[int, int]  # (h, w) of the tile as read
    core: tuple[int, int, int, int] | None = None  # rows, columns of it whose scores are kept


class TileScorer(RasterTileScorer):
    """Callable (bands (B, h, w), valid (h, w)) -> scores (h, w) float32 for one raster.

    With ``scale`` > 1 the tile is analysed at 1/``scale`` resolution (valid pixels
    averaged over ``scale`` x ``scale`` blocks, see :func:`pool_mean`) and its
    scores are upsampled bilinearly: about ``scale``² times less work, for objects at
    least ``scale`` pixels across. Tiles must start on multiples of :func:`tile_align`
    and carry :func:`tile_margin` pixels of context.

    ``score_batch`` scores several equal-shaped tiles in one forward pass; the
    engine uses it (up to ``max_batch`` tiles) and sizes its tiles with
    ``bytes_per_pixel``, the scorer's working memory per tile pixel.
    """

    max_batch = 1  # on CPU a batch is no faster than its tiles one by one (measured)
    bytes_per_pixel = 900  # a forward pass's peak, one or two views: 340-670 bytes per tile
    # pixel on tiles of 640-1536 px (tools/forward_memory.py)
    prepared_bytes_per_pixel = 4 * INPUT_CHANNELS + 1  # a reduced tile and its mask

    def __init__(self, model: Detector, reduction: SpectralReduction, device: str = "cpu",
                 scale: int = 1, precision: str = "auto", grey_step: float | None = None
                 ) -> None:
        self.model = model.to(memory_format=torch.channels_last)
        self.reduction, self.device, self.scale = reduction, device, check_scale(scale)
        # one grey level along component 1 (the evidence's spread floor): the reduction's
        self.grey_step = reduction.grey_step if grey_step is None else grey_step
        if self.scale > 1:  # the network's share shrinks; add the upsampled scores and
            # the pooling's temporaries (rows summed, then columns) of the raw bands
            pooling = 4 * reduction.band_count * (1 / self.scale + 1 / self.scale ** 2)
            self.bytes_per_pixel = self.bytes_per_pixel / self.scale ** 2 + 16 + pooling
        if device == "cpu":
            use_all_cores()
            keep_freed_memory()
        self._fused = FusedScorer.build(self.model, device, precision)
        self.precision = precision_name(self._fused.dtype if self._fused else torch.float32)
        if device != "cpu":
            self.max_batch = 4

    def prepare(self, bands: np.ndarray, valid: np.ndarray | None = None,
                core: tuple[int, int, int, int] | None = None) -> PreparedTile:
        """The (pooled) spectral reduction of one (B, h, w) tile; ``core`` (rows y0:y1,
        columns x0:x1 of the tile) is where scores are needed (None: everywhere).

        The engine runs it in its reader thread, so that only the reduced tiles (not the
        raw bands) wait in its queue."""
        shape = bands.shape[1:]
        if self.scale > 1:
            bands, valid = pool_mean(
                bands, np.ones(shape, bool) if valid is None else valid, self.scale)
        return PreparedTile(self.reduction.apply(bands, valid), shape, core)

    @torch.inference_mode()
    def score_prepared(self, prepared: list[PreparedTile]) -> np.ndarray:
        """Score equal-shaped prepared tiles in one forward pass -> (N, h, w) float32."""
        height, width = prepared[0].channels.shape[1:]
        pad_h, pad_w = _round_up(height) - height, _round_up(width) - width
        batch = np.stack([p.channels for p in prepared]) if len(prepared) > 1 else \
            prepared[0].channels[None]
        if pad_h or pad_w:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        if self._fused is not None:  # computes only the window that is kept
            scores = self._fused(tensor, self._window(prepared, tensor.shape[-2:]),
                                 self.grey_step)
        else:
            scores = self.model.score(tensor, self.grey_step)
        scores = scores[:, :height, :width]
        if self.scale > 1:
            scores = F.interpolate(scores[:, None], scale_factor=self.scale, mode="bilinear",
                                   align_corners=False)[:, 0]
        out_height, out_width = prepared[0].shape
        return scores[:, :out_height, :out_width].float().cpu().numpy()

    def _window(self, prepared: list[PreparedTile], size: tuple[int, int]
                ) -> tuple[int, int, int, int] | None:
        """The analysis-grid window, in multiples of :data:`SIZE_MULTIPLE`, that covers the
        cores of ``prepared`` and the pixel beyond them that upsampled scores need."""
        cores = [p.core for p in prepared]
        if any(core is None for core in cores):
            return None
        y0, y1 = min(c[0] for c in cores), max(c[1] for c in cores)
        x0, x1 = min(c[2] for c in cores), max(c[3] for c in cores)
        step = self.scale * SIZE_MULTIPLE
        margin = 1 if self.scale > 1 else 0
        return (max(0, (y0 // step - margin) * SIZE_MULTIPLE),
                min(size[0], (-(-y1 // step) + margin) * SIZE_MULTIPLE),
                max(0, (x0 // step - margin) * SIZE_MULTIPLE),
                min(size[1], (-(-x1 // step) + margin) * SIZE_MULTIPLE))

    def with_reduction(self, reduction) -> "TileScorer":
        """This scorer for tiles that another reduction prepares (a reduced raster's)."""
        return TileScorer(self.model, reduction, self.device, self.scale, self.precision,
                          self.grey_step)

    def score_batch(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Score (N, B, h, w) tiles (with (N, h, w) masks) -> (N, h, w) float32."""
        return self.score_prepared([self.prepare(bands[i], None if valid is None else valid[i])
                                    for i in range(bands.shape[0])])

    def __call__(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        return self.score_batch(bands[None], None if valid is None else valid[None])[0]


def score_array(model: Detector, image: np.ndarray, valid: np.ndarray | None = None,
                device: str = "cpu") -> np.ndarray:
    """Score a whole in-memory (B, H, W) image in one pass (small scenes, validation); an
    integer ``image`` is reduced as a raster of integer bands is."""
    reduction = fit_from_array(image, valid)
    return TileScorer(model, reduction, device)(image.astype(np.float32, copy=False), valid)


def raster_scorer(model: Detector, mean: np.ndarray, covariance: np.ndarray,
                  grey_level: float = 0.0, device: str = "cpu", scale: int = 1,
                  precision: str = "auto"):
    """The ``score_tile`` of a raster with these statistics (:class:`DetectionStatistics`):
    the detector, or zeros for a raster without variation (it has no anomaly, and the
    network would show its border effects)."""
    if no_variation(mean, covariance):
        return zero_scorer
    return TileScorer(model, SpectralReduction.fit(mean, covariance, grey_level), device,
                      scale, precision)


SCALES = (1, 2, 4)


def check_scale(scale: int) -> int:
    """``scale`` if it is an analysis scale the detector offers, else a ValueError."""
    if scale not in SCALES:
        raise ValueError(f"The analysis scale must be one of {', '.join(map(str, SCALES))} "
                         f"(1 = full resolution), not {scale}.")
    return int(scale)


def tile_align(scale: int = 1) -> int:
    """Tiles start on multiples of this, so every tile pools on the whole raster's grid."""
    return SIZE_MULTIPLE * scale


def tile_core(tile_size: int, scale: int = 1) -> int:
    """Raster pixels along a tile's core for ``tile_size`` analysed pixels (at least 32)."""
    return _round_up(max(tile_size, 32)) * scale


def tile_margin(overlap: int, scale: int = 1) -> int:
    """Raster pixels of context read around each tile for ``overlap`` analysed pixels."""
    return _round_up(max(overlap, 0)) * scale


class DetectionStatistics(NamedTuple):
    """What normalises a raster for the detector (see :meth:`SpectralReduction.fit`)."""
    mean: np.ndarray
    covariance: np.ndarray
    grey_level: float  # variance of one grey level of integer bands, 0 for float ones


def detection_statistics(src_path: str, bands: Sequence[int] | None = None, scale: int = 1, *,
                         progress: Callable[[float], None] | None = None,
                         is_cancelled: Callable[[], bool] | None = None,
                         memory_mb: float | None = None) -> DetectionStatistics:
    """Band mean and covariance that normalise ``src_path`` for the detector, and the
    variance of one of its grey levels at this analysis ``scale``.

    Of the raster averaged over ``scale`` x ``scale`` blocks; exact over all valid
    pixels up to 4 x :data:`.raster.stats.STATISTICS_SAMPLE` pixels, estimated from a regular
    grid of at least that many beyond (the estimate barely moves, the cost of the
    covariance of hundreds of bands drops with the grid).
    """
    info = open_raster_checked(src_path, bands)
    stride = statistics_stride(-(-info.width // scale), -(-info.height // scale))
    mean, covariance, _ = band_statistics(
        src_path, bands, progress=progress, is_cancelled=is_cancelled, memory_mb=memory_mb,
        pool=scale, stride=stride)
    integer = all(dtype in INTEGER_TYPES for dtype in info.dtypes)
    return DetectionStatistics(mean, covariance, grey_level_variance(integer, scale))


@dataclass
class DetectionResult:
    device: str
    seconds: float
    tile_size: int
    overlap: int
    scale: int = 1
    weights_sha256: str = ""
    precision: str = "float32"  # arithmetic of the convolutions (see fused.convolution_dtype)


def detect_raster(src_path: str, dst_path: str, *, bands: Sequence[int] | None = None,
                  tile_size: int = TILE_SIZE, overlap: int = OVERLAP,
                  scale: int = 1, device: str = "auto", weights_path: str | None = None,
                  progress: Callable[[float], None] | None = None,
                  is_cancelled: Callable[[], bool] | None = None,
                  memory_mb: float | None = None, window: Window | None = None,
                  mask_path: str | None = None, precision: str = "auto",
                  observe: Observer | None = None) -> DetectionResult:
    """Write the deviation score map of ``src_path`` to ``dst_path`` (float32 GeoTIFF).

    ``memory_mb`` is the engine's memory setting (default: ``$ANOMALY_DETECTOR_MEMORY_MB``
    or :data:`.defaults.MEMORY_MB`); ``tile_size`` is the largest tile, smaller ones
    are used when it would not fit (the result does not depend on the tile size).
    ``scale`` 2 or 4 analyses the raster at 1/2 or 1/4 resolution (see :class:`TileScorer`);
    ``tile_size`` and ``overlap`` are counted in analysed pixels. The output is on the
    input's grid, or on ``window`` of it with an area of interest (``window``,
    ``mask_path``: see ``raster.area.area_source``), whose pixels alone give the statistics.
    ``precision`` is the convolutions' arithmetic on the CPU (see
    :func:`.fused.convolution_dtype`; 'float32' gives the same scores on every machine up
    to float rounding). ``observe`` sees each block of scores as written (see
    ``raster.pipeline.score_raster``).
    """
    start = time.perf_counter()
    device = resolve_device(device)
    check_precision(precision, device)
    scale = check_scale(scale)
    open_raster_checked(src_path, bands)
    model = load_detector(weights_path, device)
    tile_size = tile_core(tile_size, scale)

    with area_source(src_path, bands=bands, window=window, mask_path=mask_path) as path:
        statistics = detection_statistics(path, bands, scale,
                                          progress=sub_progress(progress, 0.0, 0.1),
                                          is_cancelled=is_cancelled, memory_mb=memory_mb)
        scorer = raster_scorer(model, *statistics, device, scale, precision)
        margin = tile_margin(overlap, scale)
        tiling = dict(tile_size=tile_size, overlap=margin, align=tile_align(scale),
                      is_cancelled=is_cancelled, memory_mb=memory_mb, observe=observe)
        try:
            if isinstance(scorer, TileScorer) and \
                    reduces_first(open_raster_checked(path, bands), memory_mb):
                with reduced_raster(path, bands, scorer.reduction, scale, memory_mb=memory_mb,
                                    progress=sub_progress(progress, 0.1, 0.4),
                                    is_cancelled=is_cancelled) as reduced:
                    score_raster(path, dst_path, scorer.with_reduction(ReducedChannels()),
                                 bands=bands, read_path=reduced,
                                 progress=sub_progress(progress, 0.4, 1.0), **tiling)
            else:
                score_raster(path, dst_path, scorer, bands=bands,
                             progress=sub_progress(progress, 0.1, 1.0), **tiling)
        finally:
            release_memory()
    return DetectionResult(device, time.perf_counter() - start, tile_size, margin, scale,
                           getattr(model, "weights_sha256", ""),
                           getattr(scorer, "precision", "float32"))
