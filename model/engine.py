"""Tiled raster engine shared by every detector.

The engine reads a GDAL raster window by window (never the whole raster at
once), hands tiles with an overlap margin to a scoring function and writes each
tile's core into a float32 GeoTIFF that lies on the input's exact grid.

Conventions
-----------
* Band numbers are 1-based (GDAL convention); ``bands=None`` means all bands.
* A pixel is *valid* when every selected band is finite and differs from that
  band's nodata value.
* Score rasters are float32 with nodata :data:`NODATA` (-9999) written where
  the input is invalid or the scoring function returned a non-finite value.
* Progress is reported through ``progress(fraction)`` with a fraction in
  [0, 1]; ``is_cancelled()`` is polled once per block or tile and a
  :class:`Cancelled` exception is raised when it returns True.
"""

import math
import os
import queue
import re
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .linalg import matmul

NODATA = -9999.0
"""Nodata value of every score raster written by :func:`score_raster`."""


def _score_compression() -> List[str]:
    """ZSTD level 1 where this GDAL build has it, else DEFLATE level 1.

    Float score maps barely compress (their low mantissa bits are noise): on a
    4096 x 4096 map ZSTD 1 writes 58 MB in 0.12 s, DEFLATE 1 51 MB in 0.55 s (higher
    levels gain nothing), and compression time would otherwise bound anomaly:rx.
    """
    creation = gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
    return ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"] if "ZSTD" in creation else \
        ["COMPRESS=DEFLATE", "ZLEVEL=1"]


GTIFF_OPTIONS = ["TILED=YES", *_score_compression(), "BIGTIFF=IF_SAFER",
                 "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
_BLOCK = 256  # block side of GTIFF_OPTIONS

ProgressFn = Optional[Callable[[float], None]]
CancelFn = Optional[Callable[[], bool]]
ScoreTileFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class RasterInputError(ValueError):
    """Bad input raster. The message is a sentence that tells the user what to do."""


class RasterOutputError(RasterInputError):
    """An output could not be written (disk full, I/O error); any previous output was kept."""


class Cancelled(Exception):
    """Raised when the caller's ``is_cancelled()`` callback returned True."""


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    bands: List[int]
    geotransform: Tuple[float, ...]
    projection_wkt: str
    nodata: List[Optional[float]] = field(default_factory=list)
    dtypes: List[str] = field(default_factory=list)
    has_geotransform: bool = True
    mask_bands: List[int] = field(default_factory=list)
    """Bands whose GDAL mask (alpha band or internal mask) is read into ``valid``."""
    scale: float = 1.0
    """Power of two every value is multiplied by when read (extreme float magnitudes)."""
    gcps: tuple = ()
    gcp_wkt: str = ""

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in map units squared (handles rotated grids)."""
        gt = self.geotransform
        return abs(gt[1] * gt[5] - gt[2] * gt[4])


# --------------------------------------------------------------------------
# Opening and validation

def _open(path: str) -> Optional["gdal.Dataset"]:
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError:  # gdal.UseExceptions() is active in this process
        return None
    finally:
        gdal.PopErrorHandler()


def _subdataset_hint(ds) -> str:
    """' It holds subdatasets such as ...' for a container of subdatasets, else ''."""
    names = [v for k, v in sorted((ds.GetMetadata("SUBDATASETS") or {}).items())
             if k.endswith("_NAME")]
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f" It holds {len(names)} subdatasets: give one of them as the input, e.g. {shown}."


def parse_bands(value) -> Optional[List[int]]:
    """Band numbers from a parameter value: an int, a list, or text such as ``"1, 3"``.

    An empty value means all bands (``None``). Text that is not a list of whole
    numbers and a band listed twice raise :class:`RasterInputError` naming what was given.
    """
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = []
    for item in items:
        parts += re.split(r"[\s,;]+", item.strip()) if isinstance(item, str) else [item]
    parts = [p for p in parts if p != ""]
    bands = []
    for part in parts:
        try:
            number = float(part)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number != int(number):
            raise RasterInputError(
                f"BANDS must list band numbers such as 1,3 (got '{_typed(value)}'). "
                "Give whole numbers separated by commas, or leave it empty for all bands.")
        bands.append(int(number))
    if len(set(bands)) != len(bands):
        twice = next(b for b in bands if bands.count(b) > 1)
        raise RasterInputError(
            f"BANDS lists band {twice} more than once (got '{_typed(value)}'). "
            "List each band once.")
    return bands or None


def _typed(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


_SCALE_LIMIT = 64  # |log2| of a magnitude beyond which floating-point values are rescaled


def _value_scale(ds, bands: Sequence[int], dtypes: Sequence[str]) -> float:
    """A power of two that brings floating-point values of extreme magnitude near 1.

    Tiles are scored in float32 and statistics square values in float64: magnitudes
    beyond 2**64 or below 2**-64 would overflow, vanish or lose precision. RX and the
    detector do not depend on a common scale of all bands, so this changes no score.
    """
    if not {"Float32", "Float64"} & set(dtypes):
        return 1.0
    peak = 0.0
    for b in bands:
        try:
            lo, hi = ds.GetRasterBand(b).ComputeRasterMinMax(True)
        except (RuntimeError, TypeError):
            continue
        if lo is not None and math.isfinite(lo) and math.isfinite(hi):
            peak = max(peak, abs(lo), abs(hi))
    if peak == 0.0:
        return 1.0
    exponent = math.frexp(peak)[1]
    return math.ldexp(1.0, -exponent) if abs(exponent) > _SCALE_LIMIT else 1.0


def _is_file_path(path: str) -> bool:
    """Whether ``path`` names a file (not a /vsi path or a GDAL connection string)."""
    return not path.startswith("/vsi") and not re.match(r"^[A-Za-z0-9_]{2,}:", path)


def open_dataset(path: str, bands: Optional[Sequence[int]] = None):
    """Open and validate a raster; return ``(gdal.Dataset, RasterInfo)``.

    ``bands=None`` selects every band but alpha bands, whose transparency, like an
    internal mask, makes pixels invalid (see :attr:`RasterInfo.mask_bands`).
    """
    path = str(path) if path is not None else ""
    if not path:
        raise RasterInputError("No input raster was given. Choose a raster file.")
    if _is_file_path(path):
        if not os.path.exists(path):
            raise RasterInputError(
                f"The input raster '{path}' does not exist. Check the path and try again.")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RasterInputError(
                f"The input file '{path}' is empty (0 bytes). Choose a valid raster file.")
    ds = _open(path)
    if ds is None:
        if not path.startswith("/vsi") and not os.path.exists(path):
            raise RasterInputError(
                f"The input raster '{path}' does not exist. Check the path and try again.")
        raise RasterInputError(
            f"The file '{path}' is not a raster that GDAL can read. "
            "Choose a raster file such as a GeoTIFF.")
    if ds.RasterCount == 0:
        hint = _subdataset_hint(ds) or " Choose a raster file."
        raise RasterInputError(f"The file '{path}' contains no raster bands.{hint}")
    if ds.RasterXSize <= 0 or ds.RasterYSize <= 0:
        raise RasterInputError(
            f"The raster '{path}' has zero width or height. Choose a non-empty raster.")
    every = list(range(1, ds.RasterCount + 1))
    if bands is None or len(bands) == 0:
        alpha = {b for b in every
                 if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand}
        sel = [b for b in every if b not in alpha] or every
    else:
        sel = [int(b) for b in bands]
        bad = [b for b in sel if b < 1 or b > ds.RasterCount]
        if bad:
            raise RasterInputError(
                f"Band {bad[0]} does not exist in '{path}', which has "
                f"{ds.RasterCount} band(s). Choose band numbers from 1 to {ds.RasterCount}.")
    nodata, dtypes, masks = [], [], []
    for b in sel:
        band = ds.GetRasterBand(b)
        nodata.append(band.GetNoDataValue())
        signed_byte = band.GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE"
        dtypes.append("Int8" if signed_byte else gdal.GetDataTypeName(band.DataType))
        if gdal.DataTypeIsComplex(band.DataType):
            raise RasterInputError(
                f"Band {b} of '{path}' holds complex values ({dtypes[-1]}). Score its "
                "magnitude instead: the Processing algorithms do this automatically; from "
                "Python, convert it first (for example a VRT with the 'mod' pixel function).")
        flags = band.GetMaskFlags()
        if not flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA) and not (
                flags & gdal.GMF_PER_DATASET and masks):
            masks.append(b)
    gt = ds.GetGeoTransform(can_return_null=True)
    gcps = tuple(ds.GetGCPs() or ()) if gt is None else ()
    info = RasterInfo(
        path=path, width=ds.RasterXSize, height=ds.RasterYSize,
        band_count=ds.RasterCount, bands=sel,
        geotransform=tuple(gt) if gt else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        projection_wkt=ds.GetProjection() or "", nodata=nodata, dtypes=dtypes,
        has_geotransform=gt is not None, mask_bands=masks,
        scale=_value_scale(ds, sel, dtypes), gcps=gcps,
        gcp_wkt=(ds.GetGCPProjection() or "") if gcps else "")
    return ds, info


def open_raster_checked(path: str, bands: Optional[Sequence[int]] = None) -> RasterInfo:
    """Validate ``path`` and the band selection; return a :class:`RasterInfo`.

    Raises :class:`RasterInputError` for a missing or empty file, a file that is
    not a raster, a raster of zero size or a band number out of range.
    """
    ds, info = open_dataset(path, bands)
    ds = None
    return info


# --------------------------------------------------------------------------
# Files an input reads and files an output may replace

_SIDECARS = ("", ".aux.xml", ".ovr", ".msk")
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def _local_file(name: str) -> Optional[str]:
    """The file on disk behind ``name``: itself, the archive of a /vsizip/-like path,
    or None (memory and network paths)."""
    for prefix in _ARCHIVES:
        if name.startswith(prefix):
            rest = name[len(prefix):].strip("{}")
            parts = rest.split("/")
            for i in range(1, len(parts) + 1):
                candidate = "/".join(parts[:i])
                if candidate and os.path.isfile(candidate):
                    return candidate
            return None
    return None if name.startswith("/vsi") else name


def input_files(path: str) -> List[str]:
    """Every file on disk that reading the raster ``path`` involves.

    GDAL's file list (a VRT's sources, nested VRTs' too, an ENVI header, a world
    file...), the archive of a /vsizip/-like path, and the sidecars GDAL may read
    beside each of them.
    """
    names, pending = set(), [str(path)]
    while pending:  # a VRT's sources may be VRTs
        name = pending.pop()
        if name in names:
            continue
        names.add(name)
        if name == str(path) or name.lower().endswith(".vrt"):
            ds = _open(name)
            if ds is not None:
                pending += ds.GetFileList() or []
                ds = None
    files = {f for f in map(_local_file, names) if f}
    return sorted({f + s for f in files for s in _SIDECARS} |
                  {p for f in files for p in _world_files(f)})


def _world_files(path: str) -> List[str]:
    """``x.aux`` and the world files GDAL looks for beside ``x.ext`` (x.tfw, x.tifw, x.wld)."""
    stem, ext = os.path.splitext(path)
    names = [stem + ".aux", stem + ".wld"]
    if len(ext) > 2:
        names += [stem + ext[:2] + ext[-1] + "w", path + "w"]
    return names


def check_score_path(path: str, name: str = "score") -> None:
    """Refuse a score raster output whose extension is not GeoTIFF's (.tif, .tiff)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in ("", ".tif", ".tiff"):
        raise RasterInputError(
            f"The {name} output '{path}' has the extension '{ext}', but score rasters are "
            "written as GeoTIFF. Choose a name ending in .tif.")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` are one file (through symlinks and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_inputs_as_outputs(outputs: Sequence[Tuple[str, str]], inputs: Sequence[str],
                             cache: Optional[dict] = None) -> None:
    """Raise :class:`RasterInputError` when an output ``(NAME, path)`` is a file that an
    input raster reads: inputs are never overwritten. ``cache`` keeps each input's
    :func:`input_files` between calls."""
    cache = {} if cache is None else cache
    for source in inputs:
        if source not in cache:
            cache[source] = input_files(source)
        files = cache[source]
        for name, path in outputs:
            hit = next((f for f in files if path and same_file(path, f)), None)
            if hit is None:
                continue
            if _local_file(source) and same_file(hit, _local_file(source)):
                raise RasterInputError(
                    f"The {name} output '{path}' is the input raster itself. Choose another "
                    "file name: inputs are never overwritten.")
            raise RasterInputError(
                f"The {name} output '{path}' is the file '{hit}', which the input raster "
                f"'{source}' reads. Choose another file name: inputs are never overwritten.")


# --------------------------------------------------------------------------
# Memory setting

DEFAULT_MEMORY_MB = 768
"""Working memory of one scoring run, in MiB, unless ``memory_mb`` or the
environment variable :data:`MEMORY_ENV` says otherwise. It bounds the
statistics blocks, the tiles in flight (prefetched, batched, being written)
and, through :func:`limit_gdal_cache`, GDAL's block cache in processes the
plugin owns (batch, bench). It never depends on the raster's size."""

MEMORY_ENV = "ANOMALY_DETECTOR_MEMORY_MB"
_MIN_MEMORY_MB = 32.0


def memory_budget(memory_mb: Optional[float] = None) -> int:
    """The memory setting in bytes: ``memory_mb``, else ``$ANOMALY_DETECTOR_MEMORY_MB``,
    else :data:`DEFAULT_MEMORY_MB`."""
    if memory_mb is None:
        text = os.environ.get(MEMORY_ENV, "").strip()
        try:
            memory_mb = float(text) if text else DEFAULT_MEMORY_MB
        except ValueError:
            memory_mb = DEFAULT_MEMORY_MB
    return int(max(_MIN_MEMORY_MB, float(memory_mb)) * 2 ** 20)


def limit_gdal_cache(memory_mb: Optional[float] = None, share: float = 0.25) -> int:
    """Cap GDAL's process-wide block cache to ``share`` of the memory setting.

    GDAL's default cache (5 % of RAM) fills with every block read from a large
    raster and counts towards the process's memory; command-line entry points
    that own their process call this. Returns the new cap in bytes.
    """
    cap = max(16 * 2 ** 20, int(memory_budget(memory_mb) * share))
    if gdal.GetCacheMax() > cap:
        gdal.SetCacheMax(cap)
    return min(cap, gdal.GetCacheMax())


# --------------------------------------------------------------------------
# Window reading

def iter_windows(width: int, height: int, block: int) -> Iterator[Tuple[int, int, int, int]]:
    """Yield ``(xoff, yoff, xsize, ysize)`` windows covering the raster row by row."""
    block = max(1, int(block))
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield x, y, min(block, width - x), min(block, height - y)


# GDAL types whose every value is exactly a float32: read straight into float32.
_EXACT_IN_FLOAT32 = {"Byte", "Int8", "UInt16", "Int16", "Float32"}


def read_window(ds, info: RasterInfo, x: int, y: int, w: int, h: int):
    """Read selected bands of a window; return ``(float32 (B,h,w), valid bool (h,w))``.

    All bands are read in one request (one pass over pixel-interleaved blocks).
    """
    nb = len(info.bands)
    direct = all(t in _EXACT_IN_FLOAT32 for t in info.dtypes)
    try:
        arr = ds.ReadAsArray(x, y, w, h, band_list=list(info.bands),
                             buf_type=gdal.GDT_Float32 if direct else None)
    except RuntimeError:
        arr = None
    if arr is None:
        raise RasterInputError(
            f"Could not read bands {info.bands} of '{info.path}'. The file may be damaged.")
    arr = arr.reshape(nb, h, w)
    for i, name in enumerate(info.dtypes):
        if name == "Int8":  # GDAL 3.6 reads signed bytes as unsigned: restore the sign
            arr = arr.astype(np.float32, copy=False)
            arr[i][arr[i] > 127] -= 256
    valid = np.ones((h, w), dtype=bool)
    for i, nd in enumerate(info.nodata):
        band = arr[i]
        if band.dtype.kind in "fc":
            valid &= np.isfinite(band)
        if nd is not None and not math.isnan(nd):
            valid &= band != nd
    for b in info.mask_bands:  # alpha band or internal mask: 0 = transparent
        valid &= ds.GetRasterBand(b).GetMaskBand().ReadAsArray(x, y, w, h) > 0
    if info.scale != 1.0:
        arr = arr * info.scale
    out = arr if arr.dtype == np.float32 else arr.astype(np.float32)
    if info.scale != 1.0:
        valid &= np.isfinite(out).all(axis=0)
    return out, valid


def _check(is_cancelled: CancelFn) -> None:
    if is_cancelled is not None and is_cancelled():
        raise Cancelled("The operation was cancelled.")


def _report(progress: ProgressFn, fraction: float) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))))


# --------------------------------------------------------------------------
# Pass 1: statistics

def statistics_block(band_count: int, block_size: int = 1024,
                     memory_mb: Optional[float] = None) -> int:
    """Side of the square statistics blocks: ``block_size`` capped by the memory setting.

    A block costs about 28 bytes per pixel and band (float32 read, float64 copy
    and centred copy); a quarter of the memory setting is used.
    """
    pixels = memory_budget(memory_mb) // 4 // (28 * max(1, band_count) + 1)
    return max(16, min(int(block_size), int(math.isqrt(max(1, pixels)))))


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


def band_statistics(path: str, bands: Optional[Sequence[int]] = None, *, block_size: int = 1024,
                    progress: ProgressFn = None, is_cancelled: CancelFn = None,
                    memory_mb: Optional[float] = None, pool: int = 1, stride: int = 1
                    ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact streaming mean ``(B,)`` and covariance ``(B, B)`` over valid pixels
    (of the raster averaged over ``pool`` x ``pool`` blocks, see :func:`pool_mean`;
    with ``stride`` > 1, of every ``stride``-th of those pixels in each direction).

    Blocks are merged with Chan et al.'s pairwise update in float64, so the
    result equals ``np.mean`` / ``np.cov`` (ddof=1) of all valid pixels up to
    rounding. Blocks are at most ``block_size`` pixels square and smaller for
    many bands (see :func:`statistics_block`). Returns ``(mean, cov, n_valid)``.
    """
    ds, info = open_dataset(path, bands)
    nb = len(info.bands)
    step = pool * stride  # blocks start on the grid of both
    block = max(step, statistics_block(nb, block_size, memory_mb) // step * step)
    n = 0
    mean = np.zeros(nb)
    m2 = np.zeros((nb, nb))
    windows = list(iter_windows(info.width, info.height, block))
    for i, (x, y, w, h) in enumerate(windows):
        _check(is_cancelled)
        data, valid = pool_mean(*read_window(ds, info, x, y, w, h), pool)
        if stride > 1:
            data, valid = data[:, ::stride, ::stride], valid[::stride, ::stride]
        if valid.all():
            xs = data.reshape(nb, -1).astype(np.float64)
        else:
            xs = data[:, valid].astype(np.float64)  # (B, k)
        del data
        k = xs.shape[1]
        if k:
            mb = xs.mean(axis=1)
            xs -= mb[:, None]
            m2b = matmul(xs, xs.T)
            delta = mb - mean
            tot = n + k
            mean = mean + delta * (k / tot)
            m2 = m2 + m2b + np.outer(delta, delta) * (n * k / tot)
            n = tot
        del xs
        _report(progress, (i + 1) / len(windows))
    ds = None
    if n == 0:
        raise RasterInputError(
            f"The raster '{path}' contains no valid pixels (all nodata or non-finite) "
            "in the selected bands. Check its nodata value or choose other bands.")
    cov = m2 / max(n - 1, 1)
    return mean, cov, n


def no_variation(mean: np.ndarray, cov: np.ndarray, tolerance: float = 1e-10) -> bool:
    """Whether the statistics describe a raster without variation: every band's standard
    deviation is at most ``tolerance`` times its mean's magnitude (all valid pixels equal
    up to rounding). Such a raster has no anomaly."""
    variance = np.diag(np.atleast_2d(np.asarray(cov, np.float64)))
    scale = np.maximum(np.abs(np.asarray(mean, np.float64)), np.finfo(np.float64).tiny)
    return bool(np.all(np.sqrt(np.maximum(variance, 0.0)) <= tolerance * scale))


def zero_scorer(tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``score_tile`` of a raster without variation: 0 everywhere (see :func:`no_variation`)."""
    return np.zeros(tile.shape[1:], np.float32)


# --------------------------------------------------------------------------
# Pass 2: tiled scoring

def _tile_starts(size: int, tile: int, align: int = 1) -> List[Tuple[int, int, int, int]]:
    """Tiles along one axis as ``(read_start, read_length, write_start, write_stop)``.

    The axis is cut into as few tiles of at most ``tile`` as it needs, of equal
    length (rounded up to a multiple of ``align``), so no tile is mostly margin.
    Every read is that long (or the whole axis): the last tile is shifted back
    so that it stays full-sized, and only its part not yet written is kept.
    With ``align > 1`` the shifted start is rounded down to a multiple of
    ``align`` (and the tile grows by less than ``align``), so every read starts
    on the same ``align`` grid: scorers that pool by ``align`` see the same
    pooling grid in every tile.
    """
    count = -(-size // max(1, tile))  # ceil divisions
    length = -(-size // count)
    t = min(size, -(-length // align) * align)
    out = []
    for s in range(0, size, t):
        r = min(s, size - t)
        if align > 1 and r != s:
            r = (r // align) * align
        out.append((r, max(t, min(s + t, size) - r), s, min(s + t, size)))
    return out


def read_tile_with_margin(ds, info: RasterInfo, x0: int, y0: int, w: int, h: int, overlap: int):
    """Read the window ``(x0, y0, w, h)`` grown by ``overlap`` on each side, clipped
    to the raster: at the raster's edges the tile simply ends, as the raster does.

    Because every tile reads ``overlap`` real pixels beyond its core wherever the
    raster has them, tiled scoring equals scoring the whole raster at once wherever
    the scorer's receptive field fits in the overlap: no seams, and no invented
    (mirrored or constant) context at the raster's edges.
    Returns ``(tile (B, h', w'), valid (h', w'))``; the core starts at
    ``(y0 - max(0, y0 - overlap), x0 - max(0, x0 - overlap))`` in it.
    """
    rx0 = max(0, x0 - overlap)
    ry0 = max(0, y0 - overlap)
    rx1 = min(info.width, x0 + w + overlap)
    ry1 = min(info.height, y0 + h + overlap)
    return read_window(ds, info, rx0, ry0, rx1 - rx0, ry1 - ry0)


def create_score_raster(path: str, info: RasterInfo, options: Sequence[str] = GTIFF_OPTIONS, *,
                        height: Optional[int] = None, row_offset: int = 0):
    """Create an empty float32 single-band GeoTIFF on the grid of ``info``.

    With ``height`` (and ``row_offset``), only the rows ``row_offset`` to
    ``row_offset + height`` of that grid: a horizontal strip.
    """
    drv = gdal.GetDriverByName("GTiff")
    rows = info.height if height is None else int(height)
    out = drv.Create(str(path), info.width, rows, 1, gdal.GDT_Float32, list(options))
    if out is None:
        raise RasterInputError(
            f"Could not create the output raster '{path}'. Check that the folder exists "
            "and is writable.")
    if info.has_geotransform:
        gt = list(info.geotransform)
        gt[0] += row_offset * gt[2]
        gt[3] += row_offset * gt[5]
        out.SetGeoTransform(tuple(gt))
    if info.projection_wkt:
        out.SetProjection(info.projection_wkt)
    if info.gcps:
        out.SetGCPs([gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel, g.GCPLine - row_offset,
                              g.Info, g.Id) for g in info.gcps], info.gcp_wkt)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    return out


def temp_name(dst_path: str) -> str:
    """A hidden file name beside ``dst_path`` for writing it before it is complete."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    base = os.path.basename(dst_path)
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}.partial.tif")


def remove_quietly(path: str) -> None:
    """Remove ``path`` and its ``.aux.xml`` sidecar where they exist."""
    for p in (path, path + ".aux.xml"):
        try:
            os.remove(p)
        except OSError:
            pass


def replace_output(tmp: str, dst_path: str) -> None:
    """Move the complete file ``tmp`` onto ``dst_path`` in one step (the previous
    output stays until then); the previous output's statistics sidecar goes with it."""
    os.replace(tmp, dst_path)
    try:
        os.remove(dst_path + ".aux.xml")
    except OSError:
        pass


class WriteFailures:
    """Collects GDAL/OGR failures reported while an output is written.

    Writers report a full disk or an I/O error through GDAL's error handler, not as
    an exception: push :meth:`watch` (in every thread that writes) and call
    :meth:`check` before the output replaces the previous one.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.messages: List[str] = []

    def _handler(self, level, number, message) -> None:
        if level >= gdal.CE_Failure:
            self.messages.append(str(message))

    def _output_handler(self, level, number, message) -> None:
        text = str(message)
        if os.path.basename(self.path) in text or "no space left" in text.lower():
            self._handler(level, number, message)

    @contextmanager
    def watch(self, output_only: bool = False):
        """Collect failures of this thread (with ``output_only``, those that name the
        output or a full disk: a reading thread may flush the output's blocks)."""
        gdal.PushErrorHandler(self._output_handler if output_only else self._handler)
        try:
            yield self
        finally:
            gdal.PopErrorHandler()

    @contextmanager
    def raised(self):
        """Collect the failures GDAL raises as RuntimeError (``gdal.UseExceptions()``)."""
        try:
            yield
        except RuntimeError as error:
            self.messages.append(str(error))
            raise

    def check(self, dst_path: str) -> None:
        """Raise :class:`RasterOutputError` when a failure was reported."""
        if self.messages:
            raise output_error(dst_path, "; ".join(self.messages[:2]))

    def reraise(self, dst_path: str, error: BaseException) -> None:
        """Re-raise ``error`` of a failed write: as the output's sentence when the write
        failed (a reported failure, a file system error), else as it is."""
        if isinstance(error, (RasterInputError, Cancelled)):
            raise error
        if self.messages or isinstance(error, OSError):
            raise output_error(dst_path, "; ".join(self.messages[:2]) or str(error)) from error
        raise error


@contextmanager
def gdal_quiet():
    """GDAL reports nothing and raises nothing (``gdal.UseExceptions()`` included) here."""
    raising = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()
        if raising:
            gdal.UseExceptions()


def output_error(dst_path: str, detail: str) -> RasterOutputError:
    """The sentence for an output that could not be written (disk full or other)."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    try:
        free = os.statvfs(folder)
        free_mb = free.f_bavail * free.f_frsize / 2 ** 20
    except OSError:
        free_mb = math.inf
    if "no space left" in detail.lower() or free_mb < 1:
        return RasterOutputError(
            f"The disk is full: the output '{dst_path}' could not be written "
            f"({free_mb:.1f} MB free in '{folder}'). Free some space or choose another "
            "folder, then run again; any previous output was left as it was.")
    return RasterOutputError(
        f"The output '{dst_path}' could not be written ({detail}). Check the free disk "
        f"space and the permissions of '{folder}', then run again; any previous output "
        "was left as it was.")


Span = Tuple[int, int, int, int]  # (read_start, read_length, write_start, write_stop)


@dataclass
class TilePlan:
    """The tile grid of one scoring run (identical for a whole raster and for any
    group of its tile rows, so strips scored apart assemble into the same map)."""

    rows: List[Span]
    cols: List[Span]
    tile_size: int
    overlap: int
    batch: int
    prefetch: int

    @property
    def tile_count(self) -> int:
        return len(self.rows) * len(self.cols)

    def row_groups(self, count: int) -> List[Tuple[int, int]]:
        """Split the tile rows into ``count`` (or fewer) contiguous ``(start, stop)`` groups."""
        count = max(1, min(int(count), len(self.rows)))
        edges = [round(i * len(self.rows) / count) for i in range(count + 1)]
        return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]

    def write_rows(self, start: int, stop: int) -> Tuple[int, int]:
        """First and last-plus-one raster row written by tile rows ``start:stop``."""
        return self.rows[start][2], self.rows[stop - 1][3]


def plan_tiles(info: RasterInfo, score_tile: Optional[ScoreTileFn] = None, *,
               tile_size: int = 512, overlap: int = 32, align: int = 1,
               memory_mb: Optional[float] = None, batch_size: Optional[int] = None) -> TilePlan:
    """Tile grid, batch size and prefetch depth that fit the memory setting.

    A tile in flight costs ``4 * bands + 1`` bytes per window pixel (read data
    and mask) plus, while scored, ``score_tile.bytes_per_pixel`` (default
    ``8 * bands + 16``). A scorer with ``prepare(tile, valid)`` (run by the
    reader thread, e.g. a band reduction) and ``score_prepared(list)`` keeps
    only prepared tiles in flight (``prepared_bytes_per_pixel`` each). Up to ``score_tile.max_batch`` (default 1) equal-shaped
    tiles are scored per call when the scorer has ``score_batch``; two tiles are
    prefetched. If one tile of ``tile_size`` does not fit, smaller tiles are
    used (a multiple of ``align``): with a seam-free scorer (receptive field
    within ``overlap``) the result does not change.
    """
    budget = memory_budget(memory_mb)
    nb = len(info.bands)
    read_bpp = 4 * nb + 1
    score_bpp = float(getattr(score_tile, "bytes_per_pixel", 8 * nb + 16))
    prepared = hasattr(score_tile, "prepare") and hasattr(score_tile, "score_prepared")
    queued_bpp = float(getattr(score_tile, "prepared_bytes_per_pixel", read_bpp)) \
        if prepared else read_bpp
    max_batch = int(batch_size or getattr(score_tile, "max_batch", 1) or 1)
    if not hasattr(score_tile, "score_batch"):
        max_batch = 1
    prefetch = 2
    align = max(1, int(align))
    tile = max(1, int(tile_size))

    # types that GDAL reads straight into float32 need no second copy of a tile
    raw_copies = 1 if all(t in _EXACT_IN_FLOAT32 for t in info.dtypes) else 2

    def window_px(t):
        th = min(t, info.height) + 2 * overlap + align
        tw = min(t, info.width) + 2 * overlap + align
        return th * tw

    def cost(t, b):
        px = window_px(t)
        raw = px * read_bpp * raw_copies if prepared else 0  # the tile being read and prepared
        return raw + (prefetch + b) * px * queued_bpp + b * px * score_bpp + px * 8

    while tile > 4 * align and cost(tile, 1) > budget:
        tile = max(4 * align, int(tile * 0.8) // align * align)
    batch = 1
    while batch < max_batch and cost(tile, batch + 1) <= budget:
        batch += 1
    return TilePlan(rows=_tile_starts(info.height, tile, align),
                    cols=_tile_starts(info.width, tile, align),
                    tile_size=tile, overlap=overlap, batch=batch, prefetch=prefetch)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@contextmanager
def _nothing():
    yield


_END = object()


class _Worker(threading.Thread):
    """A daemon thread with a bounded inbox or outbox that stops on request."""

    def __init__(self, name: str, depth: int) -> None:
        super().__init__(name=name, daemon=True)
        self.queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                if not self.is_alive() and self.error is not None:
                    return False
        return False

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return _END
                if not self.is_alive():
                    # a dead reader that left nothing: report its error or the end
                    try:
                        return self.queue.get_nowait()
                    except queue.Empty:
                        return _Failure(self.error) if self.error else _END


class _Reader(_Worker):
    """Reads the tiles (with their margins) of a plan ahead of the scorer."""

    def __init__(self, src_path, bands, jobs, overlap, depth, prepare=None,
                 failures: Optional[WriteFailures] = None) -> None:
        super().__init__("anomaly-reader", depth)
        self.src_path, self.bands, self.jobs, self.overlap = src_path, bands, jobs, overlap
        self.prepare, self.failures = prepare, failures

    def run(self) -> None:
        # GDAL's block cache may flush the output's blocks from this thread too
        with self.failures.watch(output_only=True) if self.failures else _nothing():
            self._read()

    def _read(self) -> None:
        try:
            ds, info = open_dataset(self.src_path, self.bands)
            for job in self.jobs:
                if self.stop.is_set():
                    return
                (ry, th, _, _), (rx, tw, _, _) = job
                tile, valid = read_tile_with_margin(ds, info, rx, ry, tw, th, self.overlap)
                if self.prepare is not None:
                    tile = self.prepare(tile, valid)
                if not self.put((job, tile, valid)):
                    return
            ds = None
            self.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the scoring thread
            self.error = error
            self.put(_Failure(error))


class _Writer(_Worker):
    """Crops each scored tile to its core, masks it and writes it."""

    def __init__(self, band, overlap, row_offset, depth,
                 failures: Optional[WriteFailures] = None) -> None:
        super().__init__("anomaly-writer", depth)
        self.band, self.overlap, self.row_offset = band, overlap, row_offset
        self.width = band.XSize
        self.failures = failures

    def run(self) -> None:
        with self.failures.watch() if self.failures else _nothing():
            self._write()

    def _write(self) -> None:
        try:
            while True:
                item = self.get()
                if item is _END:
                    return
                job, scores, valid = item
                (ry, _, wy0, wy1), (rx, _, wx0, wx1) = job
                oy = wy0 - max(0, ry - self.overlap)
                ox = wx0 - max(0, rx - self.overlap)
                core = scores[oy:oy + (wy1 - wy0), ox:ox + (wx1 - wx0)]
                cvalid = valid[oy:oy + (wy1 - wy0), ox:ox + (wx1 - wx0)]
                core = np.where(cvalid & np.isfinite(core), core, np.float32(NODATA))
                self.band.WriteArray(core.astype(np.float32, copy=False), wx0,
                                     wy0 - self.row_offset)
                if wx1 == self.width and (wy1 - self.row_offset) % _BLOCK == 0:
                    # a finished band of whole blocks: compress it now, overlapping the
                    # scoring of the next tiles (and keeping the block cache small)
                    self.band.FlushCache()
        except BaseException as error:  # noqa: BLE001 - re-raised by the scoring thread
            if isinstance(error, RuntimeError) and self.failures is not None:
                self.failures.messages.append(str(error))  # GDAL raised it (exceptions on)
            self.error = error
            self.stop.set()


def _score_batch(score_tile, tiles, valids, prepared=False):
    if prepared:
        return [np.asarray(s, dtype=np.float32) for s in score_tile.score_prepared(tiles)]
    if len(tiles) > 1:
        out = score_tile.score_batch(np.stack(tiles), np.stack(valids))
        return [np.asarray(s, dtype=np.float32) for s in out]
    return [np.asarray(score_tile(tiles[0], valids[0]), dtype=np.float32)]


def score_tiles(src_path: str, out_band, score_tile: ScoreTileFn, plan: TilePlan, *,
                bands: Optional[Sequence[int]] = None, row_range: Optional[Tuple[int, int]] = None,
                row_offset: int = 0, progress: ProgressFn = None,
                is_cancelled: CancelFn = None, failures: Optional[WriteFailures] = None
                ) -> None:
    """Score the tiles of ``plan`` (tile rows ``row_range``) into ``out_band``.

    Three threads overlap the work: a reader prefetches tiles with margins, this
    thread scores them (``plan.batch`` equal-shaped tiles per call), a writer
    crops, masks and writes the cores (at raster row minus ``row_offset``).
    """
    start, stop = row_range or (0, len(plan.rows))
    jobs = [(r, c) for r in plan.rows[start:stop] for c in plan.cols]
    total = len(jobs)
    prepared = hasattr(score_tile, "prepare") and hasattr(score_tile, "score_prepared")
    reader = _Reader(src_path, bands, jobs, plan.overlap, plan.prefetch,
                     score_tile.prepare if prepared else None, failures)
    writer = _Writer(out_band, plan.overlap, row_offset, plan.batch + 1, failures)
    reader.start()
    writer.start()
    done = 0
    pending = None
    try:
        finished = False
        while not finished:
            group = [pending] if pending is not None else []
            pending = None
            while len(group) < plan.batch:
                item = reader.get()
                if item is _END:
                    finished = True
                    break
                if isinstance(item, _Failure):
                    raise item.error
                if group and item[2].shape != group[0][2].shape:
                    pending = item
                    break
                group.append(item)
            if not group:
                break
            _check(is_cancelled)
            scored = _score_batch(score_tile, [g[1] for g in group], [g[2] for g in group],
                                  prepared)
            for (job, _, valid), scores in zip(group, scored):
                if scores.shape != valid.shape:
                    raise ValueError(
                        f"score_tile returned shape {scores.shape}, expected {valid.shape}")
                if writer.error is not None or not writer.put((job, scores, valid)):
                    raise writer.error or RuntimeError("the tile writer stopped")
                done += 1
                _report(progress, done / total)
        writer.put(_END)
        writer.join()
        if writer.error is not None:
            raise writer.error
    finally:
        reader.stop.set()
        writer.stop.set()
        reader.join()
        writer.join()


class _ScoreTarget:
    """The open score raster of :func:`written_score_raster`: ``band`` to write into,
    ``failures`` to hand to the threads that write."""

    def __init__(self, dataset, failures: WriteFailures) -> None:
        self.dataset, self.failures = dataset, failures
        self.band = dataset.GetRasterBand(1)

    def close(self) -> None:
        """Flush and close the file (the caller keeps no reference to its band)."""
        if self.band is not None:
            self.band.FlushCache()
        self.band = None
        if self.dataset is not None:
            self.dataset.FlushCache()
        self.dataset = None


@contextmanager
def written_score_raster(dst_path: str, info: RasterInfo, **create_options):
    """A new score raster on ``info``'s grid, written completely or not at all.

    It is written under a temporary name beside ``dst_path`` and replaces it only when
    complete and without a reported failure; otherwise it is removed, any previous
    output stays as it was, and a failed write becomes the output's sentence
    (:meth:`WriteFailures.reraise`). Yields a :class:`_ScoreTarget`.
    """
    tmp = temp_name(dst_path)
    failures = WriteFailures(tmp)
    target = None
    try:
        with failures.watch():
            with failures.raised():
                target = _ScoreTarget(create_score_raster(tmp, info, **create_options), failures)
            yield target
            with failures.raised():
                target.close()
        failures.check(dst_path)
        replace_output(tmp, dst_path)
    except BaseException as error:
        with gdal_quiet():  # closing a file that failed fails again: say it once, below
            if target is not None:
                target.band = target.dataset = None
        remove_quietly(tmp)
        failures.reraise(dst_path, error)


def score_raster(src_path: str, dst_path: str, score_tile: ScoreTileFn, *,
                 bands: Optional[Sequence[int]] = None, tile_size: int = 512, overlap: int = 32,
                 align: int = 1, progress: ProgressFn = None, is_cancelled: CancelFn = None,
                 memory_mb: Optional[float] = None, batch_size: Optional[int] = None,
                 plan: Optional[TilePlan] = None, row_range: Optional[Tuple[int, int]] = None
                 ) -> None:
    """Score ``src_path`` tile by tile and write a float32 score GeoTIFF.

    ``score_tile(tile, valid)`` gets ``tile`` float32 ``(B, h, w)`` (the core
    window grown by ``overlap`` on every side, clipped to the raster: see
    :func:`read_tile_with_margin`) and ``valid`` bool ``(h, w)``; it returns float32
    ``(h, w)`` scores. Cores are ``tile_size`` long unless the raster is smaller
    along an axis (then one tile spans it); the last core is shifted back to stay
    full-sized (with ``align > 1`` it may be up to ``align - 1`` pixels longer). Invalid pixels reach
    ``score_tile`` with the values as read and ``valid=False``; the engine
    writes :data:`NODATA` there whatever is returned.

    Memory is bounded by the memory setting (``memory_mb``, see
    :func:`memory_budget`), never by the raster: see :func:`plan_tiles` for
    how tiles, batches and prefetching fit in it. A scorer may offer
    ``score_batch(tiles (N, B, h, w), valids (N, h, w)) -> (N, h, w)`` with a
    ``max_batch`` attribute (or ``batch_size`` here) to score several
    equal-shaped tiles per call.

    With ``plan`` and ``row_range`` (tile rows ``start, stop`` of that plan)
    only those rows are scored, into a strip GeoTIFF that covers the raster
    rows they write (see :func:`assemble_strips`).

    The output has the input's exact size, geotransform and CRS (tiled and
    compressed as :data:`GTIFF_OPTIONS` says, BigTIFF when needed). It is written
    under a temporary name in the destination folder and renamed on success; on
    :class:`Cancelled` or any other exception the partial file is removed.
    """
    tile_size = int(tile_size)
    overlap = max(0, int(overlap))
    if tile_size < 1:
        raise ValueError("tile_size must be at least 1")
    ds, info = open_dataset(src_path, bands)
    ds = None
    folder = os.path.dirname(os.path.abspath(dst_path))
    if not os.path.isdir(folder):
        raise RasterInputError(
            f"The output folder '{folder}' does not exist. Choose an existing folder.")
    if plan is None:
        plan = plan_tiles(info, score_tile, tile_size=tile_size, overlap=overlap, align=align,
                          memory_mb=memory_mb, batch_size=batch_size)
    row_offset, height = 0, None
    if row_range is not None:
        row_offset, last = plan.write_rows(*row_range)
        height = last - row_offset
    with written_score_raster(dst_path, info, height=height, row_offset=row_offset) as target:
        score_tiles(src_path, target.band, score_tile, plan, bands=bands, row_range=row_range,
                    row_offset=row_offset, progress=progress, is_cancelled=is_cancelled,
                    failures=target.failures)


def assemble_strips(strips: Sequence[Tuple[str, int]], dst_path: str, reference: str, *,
                    bands: Optional[Sequence[int]] = None, block_rows: int = 256) -> None:
    """Copy strip GeoTIFFs ``(path, first_row)`` into one score raster on ``reference``'s grid.

    Strips are copied ``block_rows`` rows at a time (bounded memory); the
    result is written under a temporary name and renamed on success.
    """
    ds, info = open_dataset(reference, bands)
    ds = None
    with written_score_raster(dst_path, info) as target, target.failures.raised():
        for path, first_row in strips:
            sds = gdal.Open(str(path))
            sband = sds.GetRasterBand(1)
            for y in range(0, sds.RasterYSize, block_rows):
                h = min(block_rows, sds.RasterYSize - y)
                target.band.WriteArray(sband.ReadAsArray(0, y, sds.RasterXSize, h), 0,
                                       first_row + y)
            sband = None
            sds = None
