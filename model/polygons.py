"""Threshold a score raster and turn the anomalous pixels into ranked polygons.

QGIS-free (GDAL/OGR + numpy). Memory stays bounded: the raster is read window
by window, the threshold comes from streaming histograms (never a sort of all
pixels), and memory and time do not grow with the number of anomalous groups
(see :mod:`.groups`).

Threshold methods (pixels with ``score >= threshold`` are anomalous):

* ``top_fraction`` (default): ``value`` is the fraction of *valid* pixels to
  flag, e.g. 0.005 = the 0.5 % highest scores. The threshold is the exact
  k-th highest score, ``k = ceil(value * n_valid)``, found by refining
  histograms (ties at the threshold are all kept).
* ``fixed``: ``value`` is the score threshold itself.
* ``automatic``: ``mean + 3 * std`` of the valid scores (the three-sigma
  rule), computed in one streaming pass; ``value`` is ignored.

The flagged pixels are grouped 8-connected in one streaming pass that keeps each
group's peak, size and score sum; groups of fewer than ``min_area`` pixels are
dropped, the others counted and ranked (1 = most anomalous: highest peak, then
largest, then first in raster order) and, with ``top_n > 0``, only the ``top_n``
best are kept (the others are counted, never polygonised). A second pass writes the
kept groups' ranks into a temporary raster that ``gdal.Polygonize`` turns into one
polygon per group. Each feature carries ``rank``, ``score_max``, ``score_mean``,
``pixels``, ``area`` (map units squared), ``centroid_x`` / ``centroid_y`` (the
polygon's centroid), ``peak_x`` / ``peak_y`` (its highest-scoring pixel), ``lon`` /
``lat`` (that peak in WGS 84), ``area_m2`` (ellipsoidal, through an equal-area
projection) and ``top_share`` (the share of valid pixels scoring at least its peak);
features are written in rank order, in the raster's CRS.

The output is written under a temporary name in the destination folder and
renamed when complete: a failed or cancelled run leaves no partial file and
keeps an existing output untouched until the new one is ready.
"""

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .engine import (CancelFn, ProgressFn, RasterInputError, WriteFailures, _check, _report,
                     gdal_quiet, iter_windows, open_dataset)
from .groups import GroupLabels, GroupScan, Ranked, strip_rows

METHODS = ("top_fraction", "fixed", "automatic")
DEFAULT_TOP_N = 500
"""Polygons written by default: the most anomalous groups, a list an analyst can read."""
AUTO_K = 3.0
BLOCK = 1024
_HIST_BINS = 4096
_EXACT_LIMIT = 2_000_000

FIELDS = (("rank", ogr.OFTInteger), ("score_max", ogr.OFTReal), ("score_mean", ogr.OFTReal),
          ("pixels", ogr.OFTInteger64), ("area", ogr.OFTReal), ("centroid_x", ogr.OFTReal),
          ("centroid_y", ogr.OFTReal), ("peak_x", ogr.OFTReal), ("peak_y", ogr.OFTReal),
          ("lon", ogr.OFTReal), ("lat", ogr.OFTReal), ("area_m2", ogr.OFTReal),
          ("top_share", ogr.OFTReal))
"""Attribute fields of every polygon output, in order."""

OGR_DRIVERS = {
    ".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON",
    ".fgb": "FlatGeobuf", ".gml": "GML", ".kml": "KML", ".sqlite": "SQLite", ".csv": "CSV",
    ".tab": "MapInfo File", ".mif": "MapInfo File",
}

LAYER_OPTIONS = {"GPKG": ["SPATIAL_INDEX=YES"], "CSV": ["GEOMETRY=AS_WKT"]}
"""Layer creation options per driver (a CSV keeps its polygons as WKT)."""


@dataclass
class PolygonResult:
    path: str
    layer_name: str
    count: int
    threshold: float
    n_valid: int
    n_flagged: int
    groups: int
    """8-connected groups of at least ``min_area`` flagged pixels; ``count`` of them written."""


class _Scores(NamedTuple):
    """An open score raster and the band that is thresholded."""
    ds: object
    band: object


def _score_windows(scores: _Scores, nodata, progress=None, is_cancelled=None, block=BLOCK,
                   rows: Optional[int] = None):
    """``(window, scores, valid)`` of square blocks, or of strips of ``rows`` whole rows."""
    band = scores.band
    width, height = scores.ds.RasterXSize, scores.ds.RasterYSize
    wins = ([(0, y, width, min(rows, height - y)) for y in range(0, height, rows)] if rows
            else list(iter_windows(width, height, block)))
    for i, (x, y, w, h) in enumerate(wins):
        _check(is_cancelled)
        a = band.ReadAsArray(x, y, w, h).astype(np.float64)
        valid = np.isfinite(a)
        if nodata is not None and not math.isnan(nodata):
            valid &= a != nodata
        yield (x, y, w, h), a, valid
        _report(progress, (i + 1) / len(wins))


def _open_scores(path: str, band: int):
    ds, info = open_dataset(path, [band])
    return _Scores(ds, ds.GetRasterBand(band)), info, info.nodata[0]


def score_summary(path: str, band: int = 1, *, progress: ProgressFn = None,
                  is_cancelled: CancelFn = None):
    """Streaming ``(n_valid, min, max, mean, std)`` of the valid scores."""
    ds, info, nd = _open_scores(path, band)
    n, lo, hi = 0, math.inf, -math.inf
    mean, m2 = 0.0, 0.0
    for _, a, v in _score_windows(ds, nd, progress, is_cancelled):
        x = a[v]
        if x.size == 0:
            continue
        k = x.size
        mb = float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        tot = n + k
        d = mb - mean
        mean += d * k / tot
        m2 += m2b + d * d * n * k / tot
        n = tot
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    if n == 0:
        raise RasterInputError(
            f"The score raster '{path}' contains no valid pixels (all nodata or non-finite). "
            "Check the input of the scoring step.")
    return n, lo, hi, mean, math.sqrt(m2 / n)


def _kth_highest(ds, nd, k: int, lo: float, hi: float, is_cancelled) -> float:
    """Exact k-th highest valid value by histogram refinement (bounded memory)."""
    above = 0  # number of values > hi already accounted for
    for _ in range(8):
        if hi <= lo:
            return lo
        hist = np.zeros(_HIST_BINS, dtype=np.int64)
        edges = np.linspace(lo, hi, _HIST_BINS + 1)
        for _, a, v in _score_windows(ds, nd, None, is_cancelled):
            x = a[v]
            x = x[(x >= lo) & (x <= hi)]
            if x.size:
                hist += np.histogram(x, bins=edges)[0]
        cum = np.cumsum(hist[::-1])  # counts from the top bin down
        j = int(np.searchsorted(cum, k - above))  # first top-bin index reaching k
        j = min(j, _HIST_BINS - 1)
        b = _HIST_BINS - 1 - j
        above_b = above + (int(cum[j - 1]) if j > 0 else 0)
        nlo, nhi = float(edges[b]), float(edges[b + 1])
        if hist[b] <= _EXACT_LIMIT:
            vals = []
            last = b == _HIST_BINS - 1
            for _, a, v in _score_windows(ds, nd, None, is_cancelled):
                x = a[v]
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


def compute_threshold(path: str, method: str = "top_fraction", value: float = 0.005, *,
                      band: int = 1, progress: ProgressFn = None,
                      is_cancelled: CancelFn = None) -> float:
    """Score threshold for ``method`` (see module docstring)."""
    if method not in METHODS:
        raise ValueError(f"Unknown threshold method {method!r}; use one of {METHODS}")
    if method == "fixed":
        if value is None or not math.isfinite(float(value)):
            raise RasterInputError("The fixed score threshold must be a finite number.")
        return float(value)
    n, lo, hi, mean, std = score_summary(path, band, progress=progress,
                                         is_cancelled=is_cancelled)
    if hi <= lo:  # no variation, no anomaly: a threshold above every score
        return math.nextafter(hi, math.inf)
    if method == "automatic":
        return mean + AUTO_K * std
    frac = float(value)
    if not (0.0 < frac <= 1.0):
        raise RasterInputError(
            f"The top fraction must be between 0 and 1 (got {value}); "
            "for example 0.005 flags the 0.5 % highest scores.")
    k = max(1, int(math.ceil(frac * n)))
    ds, info, nd = _open_scores(path, band)
    return _kth_highest(ds, nd, k, lo, hi, is_cancelled)


def vector_driver(path: str) -> str:
    """The OGR driver of a polygon output, from its extension (GeoPackage without one)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext and ext not in OGR_DRIVERS:
        raise RasterInputError(
            f"The polygon output '{path}' has the extension '{ext}', which is not a vector "
            f"format. Choose a name ending in {', '.join(sorted(set(OGR_DRIVERS)))}.")
    return OGR_DRIVERS.get(ext, "GPKG")


NO_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
"""Grid of a raster without georeferencing, as QGIS shows it (y from -height to 0)."""


def _apply_transformer(geom, transformer) -> None:
    """Move every vertex of polygon ``geom`` (in :data:`NO_GEOTRANSFORM` units) through
    ``transformer`` (pixel, line -> map coordinates)."""
    for r in range(geom.GetGeometryCount()):
        ring = geom.GetGeometryRef(r)
        points = [(p[0], -p[1]) for p in ring.GetPoints()]
        moved, _ = transformer.TransformPoints(0, points)
        for i, p in enumerate(moved):
            ring.SetPoint_2D(i, p[0], p[1])


def _wgs84_and_equal_area(srs):
    """Transformations from the layer's CRS to WGS 84 (lon, lat) and to an equal-area
    projection on the WGS 84 ellipsoid (for ellipsoidal areas); (None, None) without CRS."""
    if srs is None:
        return None, None
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    equal_area = osr.SpatialReference()
    equal_area.ImportFromProj4("+proj=cea +lon_0=0 +lat_ts=0 +datum=WGS84 +units=m +no_defs")
    equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(srs, wgs84), osr.CoordinateTransformation(srs, equal_area)


def _pixel_point(gt, transformer, row: int, col: int):
    """The centre of pixel (row, col) as an OGR point in the layer's coordinates."""
    point = ogr.Geometry(ogr.wkbPoint)
    if transformer is not None:  # GCPs: through the same transformer as the polygons
        moved, _ = transformer.TransformPoints(0, [(col + 0.5, row + 0.5)])
        x, y = moved[0][0], moved[0][1]
    else:
        x = gt[0] + (col + 0.5) * gt[1] + (row + 0.5) * gt[2]
        y = gt[3] + (col + 0.5) * gt[4] + (row + 0.5) * gt[5]
    point.AddPoint_2D(float(x), float(y))
    return point


def polygonize_scores(src_path: str, dst_path: str, *, method: str = "top_fraction",
                      threshold: float = 0.005, min_area: int = 1, top_n: int = DEFAULT_TOP_N,
                      band: int = 1, layer_name: Optional[str] = None, progress: ProgressFn = None,
                      is_cancelled: CancelFn = None) -> PolygonResult:
    """Threshold ``src_path`` and write ranked anomaly polygons to ``dst_path``.

    The format follows the extension of ``dst_path`` (GeoPackage by default).
    ``top_n > 0`` writes only the ``top_n`` most anomalous polygons (0 = all).
    Returns a :class:`PolygonResult`: ``count`` polygons written of ``groups`` found.
    """
    def sub(a, b):
        return (lambda f: _report(progress, a + (b - a) * f)) if progress else None

    min_area = max(1, int(min_area or 1))
    top_n = max(0, int(top_n or 0))
    dst_path = str(dst_path)
    folder = os.path.dirname(os.path.abspath(dst_path))
    if not os.path.isdir(folder):
        raise RasterInputError(
            f"The output folder '{folder}' does not exist. Choose an existing folder.")
    vector_driver(dst_path)
    thr = compute_threshold(src_path, method, threshold, band=band, progress=sub(0.0, 0.3),
                            is_cancelled=is_cancelled)
    ds, info, nd = _open_scores(src_path, band)
    failures = WriteFailures(dst_path)
    with failures.watch():
        try:
            with failures.raised():
                ranked, n_valid, n_flagged = _find_groups(ds, nd, thr, min_area, top_n,
                                                          sub(0.3, 0.6), is_cancelled)
                written, name = _polygonize(ds, info, nd, thr, ranked, n_valid, dst_path,
                                            layer_name, failures, sub, progress, is_cancelled)
        except BaseException as error:
            failures.reraise(dst_path, error)
        finally:
            ds = None
    _report(progress, 1.0)
    return PolygonResult(path=dst_path, layer_name=name, count=written, threshold=thr,
                         n_valid=n_valid, n_flagged=n_flagged, groups=ranked.found)


def _flagged_strips(scores: _Scores, nodata, threshold: float, progress, is_cancelled):
    """``(y, scores, valid, flagged)`` of each strip of whole rows (see :mod:`.groups`)."""
    rows = strip_rows(scores.ds.RasterXSize)
    for (_, y, _, _), a, v in _score_windows(scores, nodata, progress, is_cancelled, rows=rows):
        yield y, a, v, v & (a >= threshold)


def _find_groups(scores: _Scores, nodata, threshold: float, min_area: int, top_n: int,
                 progress, is_cancelled) -> Tuple[Ranked, int, int]:
    """Group the flagged pixels in one streaming pass: ``(ranked groups, valid pixels,
    flagged pixels)``; only the best ``top_n`` groups are held."""
    scan = GroupScan(scores.ds.RasterXSize, min_area, top_n)
    n_valid = n_flagged = 0
    for y, a, v, flagged in _flagged_strips(scores, nodata, threshold, progress, is_cancelled):
        scan.add(y, a, flagged)
        n_valid += int(v.sum())
        n_flagged += int(flagged.sum())
    return scan.ranked(), n_valid, n_flagged


def _write_labels(band, scores: _Scores, nodata, threshold: float, ranked: Ranked, progress,
                  is_cancelled) -> np.ndarray:
    """Write each kept group's rank on its pixels (0 elsewhere) into ``band``. Returns, for
    each kept group, how many valid pixels score at least its peak (for ``top_share``: a
    scene-relative score that reads the same in every raster, 1e-4 = top 0.01 %)."""
    labels = GroupLabels(scores.ds.RasterXSize, ranked)
    peaks = np.sort(ranked.groups.peak)
    reached = np.zeros(len(peaks) + 1, dtype=np.int64)  # valid pixels reaching j sorted peaks
    for y, a, v, flagged in _flagged_strips(scores, nodata, threshold, progress, is_cancelled):
        band.WriteArray(labels.add(y, a, flagged), 0, y)
        reached += np.bincount(np.searchsorted(peaks, a[v], side="right"),
                               minlength=len(peaks) + 1)
    at_least = np.cumsum(reached[::-1])[::-1][1:]  # pixels scoring >= peaks[j]
    return at_least[np.searchsorted(peaks, ranked.groups.peak, side="left")]


def _layer_srs(info):
    """The polygons' CRS: the raster's, or that of its GCPs; None without one."""
    if not (info.projection_wkt or info.gcp_wkt):
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(info.projection_wkt or info.gcp_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _polygonize(ds, info, nd, thr, ranked: Ranked, n_valid: int, dst_path: str,
                layer_name, failures, sub, progress, is_cancelled) -> Tuple[int, str]:
    """Polygonise the kept groups only and write them: ``(polygons written, layer name)``."""
    gt = info.geotransform if info.has_geotransform else NO_GEOTRANSFORM
    srs = _layer_srs(info)
    kept = len(ranked.groups.ids)
    tmpdir = tempfile.mkdtemp(prefix="anomaly-poly-")
    lds = polys = layer = None
    try:
        fid_of_rank = np.zeros(kept + 1, dtype=np.int64)
        shares = np.zeros(kept)
        if kept:
            # a raster of the kept groups' ranks, polygonised (8-connected) into a file
            lds = gdal.GetDriverByName("GTiff").Create(
                os.path.join(tmpdir, "labels.tif"), info.width, info.height, 1, gdal.GDT_Int32,
                ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
            lds.SetGeoTransform(gt)
            lband = lds.GetRasterBand(1)
            shares = _write_labels(lband, ds, nd, thr, ranked, sub(0.6, 0.85),
                                   is_cancelled) / max(n_valid, 1)
            polys = ogr.GetDriverByName("GPKG").CreateDataSource(os.path.join(tmpdir, "p.gpkg"))
            layer = polys.CreateLayer("poly", srs=None if info.gcps else srs,
                                      geom_type=ogr.wkbPolygon, options=["SPATIAL_INDEX=NO"])
            layer.CreateField(ogr.FieldDefn("rank", ogr.OFTInteger))
            _check(is_cancelled)
            layer.StartTransaction()
            gdal.Polygonize(lband, lband, layer, 0, ["8CONNECTED=8"])
            layer.CommitTransaction()
            for feature in layer:
                fid_of_rank[feature.GetField(0)] = feature.GetFID()
        _report(progress, 0.9)
        name = layer_name or os.path.splitext(os.path.basename(dst_path))[0] or "anomalies"

        def write(out_layer):
            _write_features(out_layer, layer, fid_of_rank, ranked, shares, ds.ds, info, gt, srs)
        _write_vector(dst_path, name, srs, write, failures, is_cancelled)
        return kept, name
    finally:
        with gdal_quiet():
            lband = lds = None
            layer = polys = None  # noqa: F841 - closes the temporary files
        shutil.rmtree(tmpdir, ignore_errors=True)


def _write_features(out_layer, polygons, fid_of_rank: np.ndarray, ranked: Ranked,
                    shares: np.ndarray, dataset, info, gt, srs) -> None:
    """Write the kept groups' polygons (from layer ``polygons``) in rank order."""
    groups = ranked.groups
    to_wgs84, to_equal_area = _wgs84_and_equal_area(srs)
    # GCP-georeferenced: vertices through GDAL's GCP transformer, as QGIS warps it
    transformer = gdal.Transformer(dataset, None, []) if info.gcps else None
    for i in range(len(groups.ids)):
        source = polygons.GetFeature(int(fid_of_rank[i + 1]))  # alive while cloning
        geom = source.GetGeometryRef().Clone()
        if transformer is not None:
            _apply_transformer(geom, transformer)
        pixels = int(groups.pixels[i])
        centroid = geom.Centroid()
        feat = ogr.Feature(out_layer.GetLayerDefn())
        feat.SetField("rank", i + 1)
        feat.SetField("score_max", float(groups.peak[i]))
        feat.SetField("score_mean", float(groups.score_sum[i] / pixels))
        feat.SetField("pixels", pixels)
        feat.SetField("area", float(geom.GetArea() if transformer else pixels * info.pixel_area))
        feat.SetField("centroid_x", float(centroid.GetX()))
        feat.SetField("centroid_y", float(centroid.GetY()))
        peak = _pixel_point(gt, transformer, *divmod(int(groups.peak_at[i]), info.width))
        feat.SetField("peak_x", peak.GetX())
        feat.SetField("peak_y", peak.GetY())
        feat.SetField("top_share", float(shares[i]))
        if to_wgs84 is not None:
            peak.Transform(to_wgs84)
            feat.SetField("lon", peak.GetX())
            feat.SetField("lat", peak.GetY())
            metric = geom.Clone()
            metric.Transform(to_equal_area)
            feat.SetField("area_m2", metric.GetArea())
        feat.SetGeometry(geom)
        out_layer.CreateFeature(feat)


def _write_vector(dst_path: str, name: str, srs, write, failures, is_cancelled) -> None:
    """Create the output layer with :data:`FIELDS` in a hidden folder beside ``dst_path``,
    fill it with ``write(layer)`` and move it into place when complete."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    drv_name = vector_driver(dst_path)
    odrv = ogr.GetDriverByName(drv_name)
    part_dir = os.path.join(folder, f".{os.path.basename(dst_path)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        os.mkdir(part_dir)
    except OSError as error:
        raise RasterInputError(
            f"Could not write in the output folder '{folder}' ({error.strerror}). "
            "Choose a folder where you can write.") from error
    out = None
    try:
        out = odrv.CreateDataSource(os.path.join(part_dir, os.path.basename(dst_path)))
        if out is None:
            raise RasterInputError(
                f"Could not create the output file '{dst_path}'. Check that the folder "
                "exists and is writable.")
        ol = out.CreateLayer(name, srs=srs, geom_type=ogr.wkbPolygon,
                             options=LAYER_OPTIONS.get(drv_name, []))
        for fname, ftype in FIELDS:
            if drv_name == "MapInfo File" and ftype == ogr.OFTInteger64:
                ftype = ogr.OFTReal  # MapInfo has no 64-bit integers
            ol.CreateField(ogr.FieldDefn(fname, ftype))
        ol.StartTransaction()
        write(ol)
        ol.CommitTransaction()
        ol = out = None
        _check(is_cancelled)
        failures.check(dst_path)
        _replace_vector(odrv, part_dir, dst_path)
    finally:
        with gdal_quiet():  # a failed write fails again when closed: said once
            ol = out = None  # noqa: F841
        shutil.rmtree(part_dir, ignore_errors=True)


def _replace_vector(driver, part_dir: str, dst_path: str) -> None:
    """Move every file written in ``part_dir`` beside ``dst_path``, replacing an
    existing output (all its sidecar files, e.g. a Shapefile's .dbf/.shx)."""
    if os.path.exists(dst_path):
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            driver.DeleteDataSource(dst_path)
        except RuntimeError:  # not a dataset of this format: removed below
            pass
        finally:
            gdal.PopErrorHandler()
        if os.path.exists(dst_path):
            os.remove(dst_path)
    folder = os.path.dirname(os.path.abspath(dst_path))
    for name in sorted(os.listdir(part_dir)):
        os.replace(os.path.join(part_dir, name), os.path.join(folder, name))


def count_polygons(path: str, layer_name: Optional[str] = None) -> int:
    """Number of features in a polygon output written by :func:`polygonize_scores`."""
    ds = ogr.Open(str(path))
    if ds is None:
        raise RasterInputError(f"Could not open the vector file '{path}'.")
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    return int(layer.GetFeatureCount())
