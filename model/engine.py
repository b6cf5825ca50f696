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
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

NODATA = -9999.0
"""Nodata value of every score raster written by :func:`score_raster`."""

GTIFF_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER",
                 "BLOCKXSIZE=256", "BLOCKYSIZE=256"]

ProgressFn = Optional[Callable[[float], None]]
CancelFn = Optional[Callable[[], bool]]
ScoreTileFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class RasterInputError(ValueError):
    """Bad input raster. The message is a sentence that tells the user what to do."""


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


def open_dataset(path: str, bands: Optional[Sequence[int]] = None):
    """Open and validate a raster; return ``(gdal.Dataset, RasterInfo)``."""
    path = str(path) if path is not None else ""
    if not path:
        raise RasterInputError("No input raster was given. Choose a raster file.")
    if not path.startswith("/vsi"):
        if not os.path.exists(path):
            raise RasterInputError(
                f"The input raster '{path}' does not exist. Check the path and try again.")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RasterInputError(
                f"The input file '{path}' is empty (0 bytes). Choose a valid raster file.")
    ds = _open(path)
    if ds is None:
        raise RasterInputError(
            f"The file '{path}' is not a raster that GDAL can read. "
            "Choose a raster file such as a GeoTIFF.")
    if ds.RasterCount == 0:
        raise RasterInputError(
            f"The file '{path}' contains no raster bands. Choose a raster file.")
    if ds.RasterXSize <= 0 or ds.RasterYSize <= 0:
        raise RasterInputError(
            f"The raster '{path}' has zero width or height. Choose a non-empty raster.")
    if bands is None or len(bands) == 0:
        sel = list(range(1, ds.RasterCount + 1))
    else:
        sel = [int(b) for b in bands]
        bad = [b for b in sel if b < 1 or b > ds.RasterCount]
        if bad:
            raise RasterInputError(
                f"Band {bad[0]} does not exist in '{path}', which has "
                f"{ds.RasterCount} band(s). Choose band numbers from 1 to {ds.RasterCount}.")
    nodata, dtypes = [], []
    for b in sel:
        band = ds.GetRasterBand(b)
        nodata.append(band.GetNoDataValue())
        dtypes.append(gdal.GetDataTypeName(band.DataType))
        if gdal.DataTypeIsComplex(band.DataType):
            raise RasterInputError(
                f"Band {b} of '{path}' holds complex values ({dtypes[-1]}). Score its "
                "magnitude instead: the Processing algorithms do this automatically; from "
                "Python, convert it first (for example a VRT with the 'mod' pixel function).")
    gt = ds.GetGeoTransform(can_return_null=True)
    info = RasterInfo(
        path=path, width=ds.RasterXSize, height=ds.RasterYSize,
        band_count=ds.RasterCount, bands=sel,
        geotransform=tuple(gt) if gt else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        projection_wkt=ds.GetProjection() or "", nodata=nodata, dtypes=dtypes,
        has_geotransform=gt is not None)
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
# Window reading

def iter_windows(width: int, height: int, block: int) -> Iterator[Tuple[int, int, int, int]]:
    """Yield ``(xoff, yoff, xsize, ysize)`` windows covering the raster row by row."""
    block = max(1, int(block))
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield x, y, min(block, width - x), min(block, height - y)


def read_window(ds, info: RasterInfo, x: int, y: int, w: int, h: int):
    """Read selected bands of a window; return ``(float32 (B,h,w), valid bool (h,w))``."""
    out = np.empty((len(info.bands), h, w), dtype=np.float32)
    valid = np.ones((h, w), dtype=bool)
    for i, (b, nd) in enumerate(zip(info.bands, info.nodata)):
        arr = ds.GetRasterBand(b).ReadAsArray(x, y, w, h)
        if arr is None:
            raise RasterInputError(
                f"Could not read band {b} of '{info.path}'. The file may be damaged.")
        if arr.dtype.kind in "fc":
            valid &= np.isfinite(arr)
        if nd is not None and not math.isnan(nd):
            valid &= arr != nd
        out[i] = arr
    return out, valid


def _check(is_cancelled: CancelFn) -> None:
    if is_cancelled is not None and is_cancelled():
        raise Cancelled("The operation was cancelled.")


def _report(progress: ProgressFn, fraction: float) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))))


# --------------------------------------------------------------------------
# Pass 1: statistics

def band_statistics(path: str, bands: Optional[Sequence[int]] = None, *, block_size: int = 1024,
                    progress: ProgressFn = None, is_cancelled: CancelFn = None
                    ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact streaming mean ``(B,)`` and covariance ``(B, B)`` over valid pixels.

    Blocks are merged with Chan et al.'s pairwise update in float64, so the
    result equals ``np.mean`` / ``np.cov`` (ddof=1) of all valid pixels up to
    rounding. Returns ``(mean, cov, n_valid)``.
    """
    ds, info = open_dataset(path, bands)
    nb = len(info.bands)
    n = 0
    mean = np.zeros(nb)
    m2 = np.zeros((nb, nb))
    windows = list(iter_windows(info.width, info.height, block_size))
    for i, (x, y, w, h) in enumerate(windows):
        _check(is_cancelled)
        data, valid = read_window(ds, info, x, y, w, h)
        xs = data[:, valid].astype(np.float64)  # (B, k)
        k = xs.shape[1]
        if k:
            mb = xs.mean(axis=1)
            c = xs - mb[:, None]
            m2b = c @ c.T
            delta = mb - mean
            tot = n + k
            mean = mean + delta * (k / tot)
            m2 = m2 + m2b + np.outer(delta, delta) * (n * k / tot)
            n = tot
        _report(progress, (i + 1) / len(windows))
    ds = None
    if n == 0:
        raise RasterInputError(
            f"The raster '{path}' contains no valid pixels (all nodata or non-finite) "
            "in the selected bands. Check its nodata value or choose other bands.")
    cov = m2 / max(n - 1, 1)
    return mean, cov, n


# --------------------------------------------------------------------------
# Pass 2: tiled scoring

def _tile_starts(size: int, tile: int, align: int = 1) -> List[Tuple[int, int, int, int]]:
    """Tiles along one axis as ``(read_start, read_length, write_start, write_stop)``.

    Every tile read is ``min(tile, size)`` long: the last tile is shifted back
    so that it stays full-sized, and only its part not yet written is kept.
    With ``align > 1`` the shifted start is rounded down to a multiple of
    ``align`` (and the tile grows by less than ``align``), so every read starts
    on the same ``align`` grid: scorers that pool by ``align`` see the same
    pooling grid in every tile.
    """
    t = min(tile, size)
    out = []
    for s in range(0, size, tile):
        r = min(s, size - t)
        if align > 1 and r != s:
            r = (r // align) * align
        out.append((r, max(t, min(s + tile, size) - r), s, min(s + tile, size)))
    return out


def _mirror_pad(arr: np.ndarray, pads: Tuple[int, int, int, int]) -> np.ndarray:
    """Reflect-pad the last two axes by (top, bottom, left, right)."""
    top, bottom, left, right = pads
    if not any(pads):
        return arr
    width = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
    # reflect needs at least 2 samples along an axis; a 1-pixel axis repeats
    mode = "reflect" if min(arr.shape[-2:]) > 1 else "edge"
    return np.pad(arr, width, mode=mode)


def read_padded_tile(ds, info: RasterInfo, x0: int, y0: int, w: int, h: int, overlap: int):
    """Read the window ``(x0, y0, w, h)`` grown by ``overlap`` on each side.

    The part of the margin outside the raster is filled by mirror (reflect)
    padding. Because the read part always reaches ``overlap`` pixels inwards
    (or spans the whole raster), the result equals the same window cut from
    ``np.pad(full_raster, overlap, mode="reflect")``: tiled scoring is
    seam-free wherever the scorer's receptive field fits in the overlap.
    Returns ``(tile (B, h+2o, w+2o), valid (h+2o, w+2o))``.
    """
    rx0 = max(0, x0 - overlap)
    ry0 = max(0, y0 - overlap)
    rx1 = min(info.width, x0 + w + overlap)
    ry1 = min(info.height, y0 + h + overlap)
    data, valid = read_window(ds, info, rx0, ry0, rx1 - rx0, ry1 - ry0)
    pads = (ry0 - (y0 - overlap), (y0 + h + overlap) - ry1,
            rx0 - (x0 - overlap), (x0 + w + overlap) - rx1)
    return _mirror_pad(data, pads), _mirror_pad(valid, pads)


def create_score_raster(path: str, info: RasterInfo, options: Sequence[str] = GTIFF_OPTIONS):
    """Create an empty float32 single-band GeoTIFF on the grid of ``info``."""
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(str(path), info.width, info.height, 1, gdal.GDT_Float32, list(options))
    if out is None:
        raise RasterInputError(
            f"Could not create the output raster '{path}'. Check that the folder exists "
            "and is writable.")
    if info.has_geotransform:
        out.SetGeoTransform(info.geotransform)
    if info.projection_wkt:
        out.SetProjection(info.projection_wkt)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    return out


def _temp_name(dst_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(dst_path))
    base = os.path.basename(dst_path)
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}.partial.tif")


def _remove_quietly(path: str) -> None:
    for p in (path, path + ".aux.xml"):
        try:
            os.remove(p)
        except OSError:
            pass


def score_raster(src_path: str, dst_path: str, score_tile: ScoreTileFn, *,
                 bands: Optional[Sequence[int]] = None, tile_size: int = 512, overlap: int = 32,
                 align: int = 1, progress: ProgressFn = None, is_cancelled: CancelFn = None) -> None:
    """Score ``src_path`` tile by tile and write a float32 score GeoTIFF.

    ``score_tile(tile, valid)`` gets ``tile`` float32 ``(B, h, w)`` (the core
    window grown by ``overlap`` on every side, mirror-padded where the margin
    leaves the raster) and ``valid`` bool ``(h, w)``; it returns float32
    ``(h, w)`` scores. Every tile has the full size ``tile_size + 2*overlap``
    unless the raster is smaller than ``tile_size`` along an axis (then that
    axis spans the whole raster plus padding; with ``align > 1`` the last tile
    may be up to ``align - 1`` pixels longer). Invalid pixels reach
    ``score_tile`` with the values as read and ``valid=False``; the engine
    writes :data:`NODATA` there whatever is returned.

    The output has the input's exact size, geotransform and CRS (tiled,
    DEFLATE, BigTIFF when needed). It is written under a temporary name in the
    destination folder and renamed on success; on :class:`Cancelled` or any
    other exception the partial file is removed.
    """
    tile_size = int(tile_size)
    overlap = max(0, int(overlap))
    if tile_size < 1:
        raise ValueError("tile_size must be at least 1")
    ds, info = open_dataset(src_path, bands)
    folder = os.path.dirname(os.path.abspath(dst_path))
    if not os.path.isdir(folder):
        raise RasterInputError(
            f"The output folder '{folder}' does not exist. Choose an existing folder.")
    tmp = _temp_name(dst_path)
    out = None
    try:
        out = create_score_raster(tmp, info)
        oband = out.GetRasterBand(1)
        cols = _tile_starts(info.width, tile_size, align)
        rows = _tile_starts(info.height, tile_size, align)
        total = len(cols) * len(rows)
        done = 0
        for (ry, th, wy0, wy1) in rows:
            for (rx, tw, wx0, wx1) in cols:
                _check(is_cancelled)
                tile, valid = read_padded_tile(ds, info, rx, ry, tw, th, overlap)
                scores = score_tile(tile, valid)
                scores = np.asarray(scores, dtype=np.float32)
                if scores.shape != valid.shape:
                    raise ValueError(
                        f"score_tile returned shape {scores.shape}, expected {valid.shape}")
                # crop the part of the core that this tile writes
                oy = overlap + (wy0 - ry)
                ox = overlap + (wx0 - rx)
                core = scores[oy:oy + (wy1 - wy0), ox:ox + (wx1 - wx0)]
                cvalid = valid[oy:oy + (wy1 - wy0), ox:ox + (wx1 - wx0)]
                core = np.where(cvalid & np.isfinite(core), core, np.float32(NODATA))
                oband.WriteArray(core.astype(np.float32, copy=False), wx0, wy0)
                done += 1
                _report(progress, done / total)
        oband.FlushCache()
        out.FlushCache()
        out = None
        ds = None
        _remove_quietly(dst_path)
        os.replace(tmp, dst_path)
    except BaseException:
        out = None
        ds = None
        _remove_quietly(tmp)
        raise
