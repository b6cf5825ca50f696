"""Area of interest: a pixel window of the input and a mask of polygons, QGIS-free.

An area of interest restricts a scoring run to the input's pixels inside an extent
(the output grid is the input's window covering it, on the input's own pixel grid)
and, optionally, inside polygons (rasterised, pixel centres, to a Byte raster on that
window's grid). :func:`area_source` presents both as one raster, a VRT of the window
whose mask is the polygons' (combined with the input's own alpha band or mask): the
engine then reads only that window and counts the pixels outside the polygons as
invalid, so statistics come from the area alone and scores outside it are nodata.
"""
from __future__ import annotations

import math
import os
import uuid
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import RasterInputError
from .io import RasterInfo, iter_windows, open_dataset
from .output import gdal_quiet, remove_quietly

_MASK_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
_EDGE = 1e-6  # pixels: an extent edge this close to a pixel edge does not take the next pixel
_SURFACES = {ogr.wkbUnknown, ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon,
             ogr.wkbMultiSurface, ogr.wkbPolyhedralSurface, ogr.wkbTIN,
             ogr.wkbGeometryCollection}


class Window(NamedTuple):
    """Pixel window of a raster: first column and row, width and height."""

    x: int
    y: int
    width: int
    height: int


class Area(NamedTuple):
    """An area of interest ready for the core: ``window`` (None = whole raster),
    ``mask_path`` (Byte raster on the window's grid, None = no polygons) and the
    number of pixels inside it."""

    window: Optional[Window]
    mask_path: Optional[str]
    pixels: int


def _georeferenced(path: str, bands: Optional[Sequence[int]] = None):
    """``(dataset, info)`` of a raster with a geotransform, else a sentence."""
    ds, info = open_dataset(path, bands)
    if not info.has_geotransform:
        raise RasterInputError(
            f"The raster '{path}' has no geotransform (no georeference, or GCPs only), so "
            "MASK and EXTENT cannot be placed on it. Georeference or warp it first (e.g. "
            "with gdalwarp), or leave MASK and EXTENT empty.")
    return ds, info


def to_raster_crs(extent: Sequence[float], extent_crs: str, raster_wkt: str
                  ) -> Tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` given in ``extent_crs`` (e.g. ``EPSG:4326``), as the
    bounding box of its densified outline in the raster's CRS."""
    if not extent_crs or not raster_wkt:
        return tuple(map(float, extent))
    source, target = osr.SpatialReference(), osr.SpatialReference()
    try:
        if source.SetFromUserInput(str(extent_crs)) or target.ImportFromWkt(raster_wkt):
            raise ValueError("unknown CRS")
        for srs in (source, target):
            srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return tuple(osr.CoordinateTransformation(source, target).TransformBounds(*extent, 21))
    except (RuntimeError, TypeError, ValueError) as error:
        raise RasterInputError(
            f"The extent {tuple(extent)} in {extent_crs} could not be transformed to the "
            f"raster's CRS ({error}). Check the CRS of the extent.") from error


def extent_window(path: str, extent: Sequence[float], extent_crs: str = "") -> Window:
    """The window of the raster ``path`` covering ``(xmin, ymin, xmax, ymax)``.

    The extent is in the raster's CRS, or in ``extent_crs``. Every pixel that the extent
    overlaps is in the window, which is clipped to the raster; an extent outside the
    raster raises :class:`RasterInputError`.
    """
    ds, info = _georeferenced(path)
    ds = None
    xmin, ymin, xmax, ymax = to_raster_crs(extent, extent_crs, info.projection_wkt)
    inverse = gdal.InvGeoTransform(info.geotransform)
    corners = [gdal.ApplyGeoTransform(inverse, x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    if (max(cols) <= 0 or min(cols) >= info.width or max(rows) <= 0
            or min(rows) >= info.height):
        raise RasterInputError(
            f"The EXTENT ({xmin:.10g}, {ymin:.10g}, {xmax:.10g}, {ymax:.10g} in the raster's "
            f"CRS) lies outside the raster '{path}', which covers {_bounds_text(info)}. "
            "Choose an extent that overlaps the raster.")
    x0 = min(info.width - 1, max(0, math.floor(min(cols) + _EDGE)))
    y0 = min(info.height - 1, max(0, math.floor(min(rows) + _EDGE)))
    x1 = min(info.width, max(x0 + 1, math.ceil(max(cols) - _EDGE)))
    y1 = min(info.height, max(y0 + 1, math.ceil(max(rows) - _EDGE)))
    return Window(x0, y0, x1 - x0, y1 - y0)


def _bounds_text(info: RasterInfo) -> str:
    gt = info.geotransform
    xs = [gt[0] + c * gt[1] + r * gt[2] for c in (0, info.width) for r in (0, info.height)]
    ys = [gt[3] + c * gt[4] + r * gt[5] for c in (0, info.width) for r in (0, info.height)]
    return f"x {min(xs):.10g} to {max(xs):.10g}, y {min(ys):.10g} to {max(ys):.10g}"


def _window_geotransform(info: RasterInfo, window: Window) -> Tuple[float, ...]:
    gt = info.geotransform
    return (gt[0] + window.x * gt[1] + window.y * gt[2], gt[1], gt[2],
            gt[3] + window.x * gt[4] + window.y * gt[5], gt[4], gt[5])


def _polygon_layer(vector: str, layer_name: Optional[str], label: Optional[str]):
    """``(dataset, layer)`` of a vector file's polygon layer, else a sentence (naming the
    layer ``label``, default its name in the file)."""
    with gdal_quiet():
        ds = gdal.OpenEx(str(vector), gdal.OF_VECTOR | gdal.OF_READONLY)
    if ds is None:
        missing = not str(vector).startswith("/vsi") and not os.path.exists(vector)
        raise RasterInputError(
            f"The MASK file '{vector}' does not exist. Check the path."
            if missing else f"The MASK file '{vector}' is not a vector layer that GDAL can "
                            "read. Choose a polygon layer such as a GeoPackage or Shapefile.")
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if layer is None:
        raise RasterInputError(
            f"The MASK file '{vector}' has no layer '{layer_name or 0}'. Choose one of its "
            "polygon layers.")
    label = label or layer.GetName()
    kind = ogr.GT_Flatten(layer.GetGeomType())
    if kind not in _SURFACES:
        raise RasterInputError(
            f"The MASK layer '{label}' holds {ogr.GeometryTypeToName(kind).lower()} "
            "geometries, but MASK needs polygons. Choose a polygon layer (buffer points or "
            "lines first if needed).")
    if layer.GetFeatureCount() == 0:
        raise RasterInputError(
            f"The MASK layer '{label}' has no polygons (it is empty, or no feature "
            "is selected). Select at least one polygon, or leave MASK empty to use the "
            "whole raster.")
    return ds, layer


def rasterize_area(vector: str, raster: str, mask_path: str, *,
                   window: Optional[Window] = None, layer_name: Optional[str] = None,
                   label: Optional[str] = None) -> int:
    """Rasterise the polygons of ``vector`` (any CRS: reprojected to the raster's) to a
    Byte GeoTIFF ``mask_path`` on the grid of ``window`` of ``raster``: 1 where a pixel's
    centre lies inside a polygon, else 0. Returns the number of pixels inside. Sentences
    name the layer ``label`` (default: its name in the file).

    GDAL rasterises in chunks and the count is streamed: memory does not grow with the
    raster. Polygons that miss the raster (or the window) raise :class:`RasterInputError`.
    """
    ds, info = _georeferenced(raster)
    ds = None
    window = window or Window(0, 0, info.width, info.height)
    vds, layer = _polygon_layer(vector, layer_name, label)
    out = gdal.GetDriverByName("GTiff").Create(str(mask_path), window.width, window.height, 1,
                                               gdal.GDT_Byte, _MASK_OPTIONS)
    if out is None:
        raise RasterInputError(f"The temporary mask '{mask_path}' could not be created. "
                               "Check the free space of the temporary folder.")
    out.SetGeoTransform(_window_geotransform(info, window))
    out.SetProjection(info.projection_wkt)
    try:
        if gdal.RasterizeLayer(out, [1], layer, burn_values=[1]) != gdal.CE_None:
            raise RuntimeError(gdal.GetLastErrorMsg())
        band = out.GetRasterBand(1)
        inside = sum(int(np.count_nonzero(band.ReadAsArray(x, y, w, h)))
                     for x, y, w, h in iter_windows(window.width, window.height, 1024))
        band = out = None
    except RuntimeError as error:
        band = out = None
        remove_quietly(mask_path)
        raise RasterInputError(f"The MASK polygons could not be rasterised ({error}). Check "
                               "the MASK layer's geometries.") from error
    finally:
        layer = vds = None
    if inside == 0:
        remove_quietly(mask_path)
        where = "" if (window.width, window.height) == (info.width, info.height) else \
            " within the EXTENT"
        raise RasterInputError(
            f"The MASK polygons do not overlap the raster '{raster}'{where}: no pixel centre "
            "lies inside them. Check the MASK layer's position and CRS, or choose other "
            "polygons.")
    return inside


def prepare_area(raster: str, mask_path: str, *, extent: Optional[Sequence[float]] = None,
                 extent_crs: str = "", mask: Optional[str] = None,
                 mask_layer: Optional[str] = None, mask_label: Optional[str] = None) -> Area:
    """The :class:`Area` of ``raster`` inside ``extent`` (``(xmin, ymin, xmax, ymax)`` in the
    raster's CRS or ``extent_crs``) and the polygons of the vector file ``mask`` (its
    layer ``mask_layer``, default the first; named ``mask_label`` in sentences),
    rasterised to ``mask_path``."""
    window = extent_window(raster, extent, extent_crs) if extent is not None else None
    if mask:
        pixels = rasterize_area(mask, raster, mask_path, window=window, layer_name=mask_layer,
                                label=mask_label)
        return Area(window, mask_path, pixels)
    return Area(window, None, window.width * window.height if window else 0)


def _source_element(parent, path: str, band: str, window: Optional[Window] = None) -> None:
    source = ET.SubElement(parent, "SimpleSource")
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = path
    ET.SubElement(source, "SourceBand").text = band
    if window is not None:
        size = {"xSize": str(window.width), "ySize": str(window.height)}
        ET.SubElement(source, "SrcRect", xOff=str(window.x), yOff=str(window.y), **size)
        ET.SubElement(source, "DstRect", xOff="0", yOff="0", **size)


def _absolute(path: str) -> str:
    return os.path.abspath(path) if os.path.exists(path) else path


def write_area_vrt(raster: str, vrt_path: str, *, bands: Optional[Sequence[int]] = None,
                   window: Optional[Window] = None, mask_path: Optional[str] = None) -> str:
    """Write a VRT of ``window`` of ``raster`` (all bands, same CRS, geotransform of the
    window) whose mask is ``mask_path`` (a Byte raster on the window's grid, 0 = outside)
    times the raster's own masks (alpha band, internal mask) of ``bands``. Returns
    ``vrt_path``."""
    source = _absolute(raster)  # the VRT may be read from another folder
    ds, info = _georeferenced(source, bands)
    window = window or Window(0, 0, info.width, info.height)
    draft = gdal.Translate("", ds, format="VRT", srcWin=list(window))
    root = ET.fromstring(draft.GetMetadata("xml:VRT")[0])
    draft = ds = None
    if mask_path is not None:
        with gdal_quiet():
            mask = gdal.Open(str(mask_path))
        if mask is None or (mask.RasterXSize, mask.RasterYSize) != (window.width, window.height):
            raise RasterInputError(
                f"The mask raster '{mask_path}' must be a raster of {window.width} x "
                f"{window.height} pixels (the area's window).")
        mask = None
        for parent in [root, *root.findall("VRTRasterBand")]:
            for old in parent.findall("MaskBand"):
                parent.remove(old)
        band = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        if info.mask_bands:  # the product of the area's mask and the raster's own masks
            band.set("subClass", "VRTDerivedRasterBand")
            ET.SubElement(band, "PixelFunctionType").text = "mul"
        _source_element(band, _absolute(str(mask_path)), "1")
        for b in info.mask_bands:
            _source_element(band, source, f"mask,{b}", window)
    data = ET.tostring(root)
    handle = gdal.VSIFOpenL(str(vrt_path), "wb")
    if handle is None or gdal.VSIFWriteL(data, 1, len(data), handle) != len(data):
        raise RasterInputError(f"The area file '{vrt_path}' could not be written.")
    gdal.VSIFCloseL(handle)
    return str(vrt_path)


@contextmanager
def named_as(area_path: str, raster: str) -> Iterator[None]:
    """Sentences about the area's raster ``area_path`` name ``raster`` instead."""
    try:
        yield
    except RasterInputError as error:
        text = str(error)
        if area_path not in text:
            raise
        raise type(error)(text.replace(f"'{area_path}'", f"'{raster}' (inside the area of "
                                                         "interest)")) from error


@contextmanager
def area_source(raster: str, *, bands: Optional[Sequence[int]] = None,
                window: Optional[Window] = None, mask_path: Optional[str] = None
                ) -> Iterator[str]:
    """The raster to read for an area of interest: ``raster`` itself without one, else a
    temporary in-memory VRT (see :func:`write_area_vrt`), removed afterwards."""
    if window is None and mask_path is None:
        yield raster
        return
    stem = os.path.splitext(os.path.basename(raster))[0] or "area"
    path = f"/vsimem/anomaly_detector/area-{uuid.uuid4().hex}/{stem}.vrt"
    try:
        write_area_vrt(raster, path, bands=bands, window=window, mask_path=mask_path)
        with named_as(path, raster):
            yield path
    finally:
        gdal.Unlink(path)
