"""Opening and reading rasters: validation, band selection, windows with validity masks.

Band numbers are 1-based (GDAL convention); ``bands=None`` means all bands. A pixel
is *valid* when every selected band is finite and differs from that band's nodata
value (and the band's alpha band or internal mask, if any, keeps it).
"""
import math
import os
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor
from typing import (Callable, Deque, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    TypeVar)

import numpy as np
from osgeo import gdal

from .errors import ParameterError, RasterInputError


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
    alpha_band: Optional[int] = None
    """The alpha band, read into ``valid`` (0 = transparent) where GDAL's masks leave it
    out: bands with a nodata value have a nodata mask instead."""
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
            raise ParameterError(
                f"BANDS must list band numbers such as 1,3 (got '{_typed(value)}'). "
                "Give whole numbers separated by commas, or leave it empty for all bands.")
        bands.append(int(number))
    if len(set(bands)) != len(bands):
        twice = next(b for b in bands if bands.count(b) > 1)
        raise ParameterError(
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
    internal mask, makes pixels invalid (see :attr:`RasterInfo.mask_bands` and
    :attr:`RasterInfo.alpha_band`).
    """
    path = str(path) if path is not None else ""
    ds = _open_checked(path)
    selected = _select_bands(ds, path, bands)
    nodata, dtypes, masks, alpha = _band_properties(ds, path, selected)
    gt = ds.GetGeoTransform(can_return_null=True)
    gcps = tuple(ds.GetGCPs() or ()) if gt is None else ()
    info = RasterInfo(
        path=path, width=ds.RasterXSize, height=ds.RasterYSize,
        band_count=ds.RasterCount, bands=selected,
        geotransform=tuple(gt) if gt else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        projection_wkt=ds.GetProjection() or "", nodata=nodata, dtypes=dtypes,
        has_geotransform=gt is not None, mask_bands=masks, alpha_band=alpha,
        scale=_value_scale(ds, selected, dtypes), gcps=gcps,
        gcp_wkt=(ds.GetGCPProjection() or "") if gcps else "")
    return ds, info


def _open_checked(path: str):
    """The GDAL dataset of ``path``, or :class:`RasterInputError` saying why there is none."""
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
    return ds


def _select_bands(ds, path: str, bands: Optional[Sequence[int]]) -> List[int]:
    """``bands`` checked against ``ds``; by default every band but alpha bands."""
    every = list(range(1, ds.RasterCount + 1))
    if bands is None or len(bands) == 0:
        alpha = {b for b in every
                 if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand}
        return [b for b in every if b not in alpha] or every
    selected = [int(b) for b in bands]
    bad = [b for b in selected if b < 1 or b > ds.RasterCount]
    if bad:
        raise RasterInputError(
            f"Band {bad[0]} does not exist in '{path}', which has "
            f"{ds.RasterCount} band(s). Choose band numbers from 1 to {ds.RasterCount}.")
    return selected


def _alpha_band(ds) -> Optional[int]:
    """The first band GDAL reads as alpha, or None."""
    return next((b for b in range(1, ds.RasterCount + 1)
                 if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand), None)


def _band_properties(ds, path: str, selected: Sequence[int]):
    """``(nodata values, data type names, bands whose GDAL mask is read, alpha band read
    beside them or None)`` of ``selected``; complex bands are refused."""
    nodata, dtypes, masks, alpha_masked = [], [], [], False
    for b in selected:
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
        alpha_masked |= bool(flags & gdal.GMF_ALPHA)
        if not flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA) and not (
                flags & gdal.GMF_PER_DATASET and masks):
            masks.append(b)
    return nodata, dtypes, masks, None if alpha_masked else _alpha_band(ds)


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


# GDAL types whose every value is exactly a float32: read straight into float32.
EXACT_IN_FLOAT32 = {"Byte", "Int8", "UInt16", "Int16", "Float32"}
INTEGER_TYPES = {"Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64"}


Item, Block = TypeVar("Item"), TypeVar("Block")


READERS = 2
"""Threads that decode ahead of a streaming pass (:func:`read_ahead`): decoding
compressed many-band files costs about as much as the arithmetic on them, so two
readers keep two cores busy."""


def read_ahead(items: Iterable[Item], read: Callable[[Item], Block],
               readers: int = 1) -> Iterator[Block]:
    """``read(item)`` of each item in order, the next ``readers`` items read in threads
    while the caller works on the current one (GDAL decodes without holding Python's
    lock, so decoding overlaps the caller's arithmetic). At most ``readers + 1`` blocks
    exist at a time. With several readers ``read`` must be thread-safe (see
    :class:`DatasetPerThread`)."""
    readers = max(1, int(readers))
    with ThreadPoolExecutor(readers, thread_name_prefix="anomaly-read-ahead") as pool:
        pending: Deque = deque()
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) > readers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class DatasetPerThread:
    """The dataset of one raster, opened once in each thread that asks for it (a GDAL
    dataset must not be read from two threads at once); read it with the
    :class:`RasterInfo` of :func:`open_dataset`, which validated it once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: List = []
        self._lock = threading.Lock()

    def __call__(self):
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = _open_checked(self.path)
            self._local.ds = ds
            with self._lock:
                self._opened.append(ds)
        return ds

    def close(self) -> None:
        """Close every thread's dataset (once no thread reads any more)."""
        with self._lock:
            self._opened.clear()


def aligned_windows(ds, pixels: int, multiple: int = 1) -> List[Tuple[int, int, int, int]]:
    """``(xoff, yoff, xsize, ysize)`` windows of about ``pixels`` pixels at most covering
    ``ds`` row by row, each side a multiple of ``multiple`` (but the last ones), made of
    whole blocks of its first band where a block fits: each block is then decoded once,
    even by readers in different threads. Full-width strips where they fit."""
    width, height = ds.RasterXSize, ds.RasterYSize
    multiple = max(1, int(multiple))
    pixels = max(int(pixels), multiple * multiple)
    block_x, block_y = ds.GetRasterBand(1).GetBlockSize()
    if block_x % multiple or block_y % multiple or block_x * block_y > pixels:
        columns = rows = max(multiple, math.isqrt(pixels) // multiple * multiple)  # squares
    elif block_x < width and pixels // block_y < width:  # tiles: whole tiles, as many as fit
        columns, rows = pixels // block_y // block_x * block_x, block_y
    else:  # full-width strips of whole blocks
        columns, rows = width, max(block_y, pixels // width // block_y * block_y)
    return [(x, y, min(columns, width - x), min(rows, height - y))
            for y in range(0, height, rows) for x in range(0, width, columns)]


class BufferPool:
    """Float32 arrays that a streaming pass hands back once it is done with a window, so
    that the next windows are read into the same memory (thread-safe).

    Windows of many bands take tens of megabytes. Allocated afresh in reader threads and
    freed in another, each came as new pages from the system, and zeroing them took
    about as long as decoding 200 compressed bands (``tools/read_speed.py``).
    """

    def __init__(self) -> None:
        self._free: dict = {}
        self._lent: set = set()
        self._lock = threading.Lock()

    def take(self, shape: Tuple[int, ...]) -> np.ndarray:
        """A free array of ``shape`` (contents undefined), or a new one; free arrays of
        other shapes are let go (windows of one shape follow each other, and memory
        stays within that of the windows in use)."""
        shape = tuple(shape)
        with self._lock:
            if any(key != shape for key in self._free):
                self._free = {shape: self._free.get(shape, [])}
            free = self._free.get(shape)
            array = free.pop() if free else np.empty(shape, np.float32)
            self._lent.add(id(array))
        return array

    def give(self, array: np.ndarray) -> None:
        """Hand back ``array``, which nothing may use any more; an array that was not
        taken from the pool (a window read otherwise) is left to the garbage collector."""
        with self._lock:
            if id(array) in self._lent:
                self._lent.remove(id(array))
                self._free.setdefault(array.shape, []).append(array)


def own_masks(ds, info: RasterInfo) -> list:
    """The GDAL bands whose 0 makes a pixel invalid: the masks of ``info.mask_bands``
    (alpha band or internal mask) and ``info.alpha_band``."""
    return [ds.GetRasterBand(b).GetMaskBand() for b in info.mask_bands] + \
        ([ds.GetRasterBand(info.alpha_band)] if info.alpha_band is not None else [])


def read_window(ds, info: RasterInfo, x: int, y: int, w: int, h: int,
                buffers: Optional[BufferPool] = None):
    """Read selected bands of a window; return ``(float32 (B,h,w), valid bool (h,w))``.

    All bands are read in one request (one pass over pixel-interleaved blocks), into an
    array of ``buffers`` when given (hand it back with :meth:`BufferPool.give`).
    """
    nb = len(info.bands)
    direct = all(t in EXACT_IN_FLOAT32 for t in info.dtypes)
    try:
        into = buffers.take((nb, h, w)) if direct and buffers is not None else None
        arr = ds.ReadAsArray(x, y, w, h, band_list=list(info.bands), buf_obj=into,
                             buf_type=gdal.GDT_Float32 if direct and into is None else None)
    except RuntimeError:
        arr = None
    if arr is None:
        raise RasterInputError(
            f"Could not read bands {info.bands} of '{info.path}'. The file may be damaged.")
    if arr.shape != (nb, h, w):  # one band: (h, w)
        arr = arr.reshape(nb, h, w)
    for i, name in enumerate(info.dtypes):
        if name == "Int8":  # GDAL 3.6 reads signed bytes as unsigned: restore the sign
            arr = arr.astype(np.float32, copy=False)
            arr[i][arr[i] > 127] -= 256
    valid = np.ones((h, w), dtype=bool)
    for i, nd in enumerate(info.nodata):
        band = arr[i]
        if info.dtypes[i] not in INTEGER_TYPES:  # integers read as floats are finite
            valid &= np.isfinite(band)
        if nd is not None and not math.isnan(nd):
            valid &= band != nd
    for mask in own_masks(ds, info):
        valid &= mask.ReadAsArray(x, y, w, h) > 0
    if info.scale != 1.0:
        arr = arr * info.scale
    out = arr if arr.dtype == np.float32 else arr.astype(np.float32)
    if info.scale != 1.0:
        valid &= np.isfinite(out).all(axis=0)
    return out, valid


def read_tile_with_margin(ds, info: RasterInfo, x0: int, y0: int, w: int, h: int, overlap: int,
                          buffers: Optional[BufferPool] = None):
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
    return read_window(ds, info, rx0, ry0, rx1 - rx0, ry1 - ry0, buffers)
