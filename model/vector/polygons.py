"""Threshold a score raster and turn the anomalous pixels into ranked polygons.

QGIS-free (GDAL/OGR + numpy). Memory stays bounded: the raster is read window by
window, the threshold comes from one streaming pass (:mod:`.threshold`), and
memory and time do not grow with the number of anomalous groups (:mod:`.groups`).

The steps: the threshold; the flagged pixels grouped 8-connected in one streaming
pass that keeps each group's peak, size and score sum (groups of fewer than
``min_area`` pixels are dropped, the others counted and ranked: 1 = most anomalous,
highest peak, then largest, then first in raster order; with ``top_n > 0`` only the
``top_n`` best are kept, the others counted, never polygonised); the flagged pixels
are grouped again (kept from the first pass when at most :data:`REPLAY_PIXELS`, else
read again) to write the kept groups' ranks into a temporary raster that ``gdal.Polygonize``
traces into one polygon per group; the polygons are written in rank order, in the
raster's CRS, with the attributes of :mod:`.attributes`.

The output is written completely or not at all (:func:`~..raster.output.atomic_output`):
a failed or cancelled run leaves no partial file and keeps an existing output
untouched until the new one is ready.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import numpy as np
from osgeo import gdal, gdal_array, ogr

from ..defaults import MIN_AREA, THRESHOLD, THRESHOLD_METHOD, TOP_N
from ..raster.files import check_output_folder
from ..raster.output import WriteFailures, fast_compression, gdal_quiet
from ..raster.progress import CancelFn, ProgressFn, check_cancelled, report, sub_progress
from .attributes import NO_GEOTRANSFORM, layer_srs, write_features
from .groups import FlaggedStrip, GroupLabels, GroupScan, Ranked, strip_rows
from .output import vector_driver, write_vector
from .threshold import (ScoreBand, ScoreStream, at_least, compute_threshold, open_scores,
                        score_windows)

_LABEL_OPTIONS = ["TILED=YES", "SPARSE_OK=TRUE", *fast_compression(), "BIGTIFF=IF_SAFER"]


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


def polygonize_scores(src_path: str, dst_path: str, *, method: str = THRESHOLD_METHOD,
                      threshold: float = THRESHOLD, min_area: int = MIN_AREA, top_n: int = TOP_N,
                      band: int = 1, layer_name: Optional[str] = None, progress: ProgressFn = None,
                      is_cancelled: CancelFn = None, stream: Optional[ScoreStream] = None
                      ) -> PolygonResult:
    """Threshold ``src_path`` and write ranked anomaly polygons to ``dst_path``.

    The format follows the extension of ``dst_path`` (GeoPackage by default).
    ``top_n > 0`` writes only the ``top_n`` most anomalous polygons (0 = all).
    ``stream``, a :class:`~.threshold.ScoreStream` of this ``method`` and ``threshold`` that
    saw every score as it was written, spares the pass that computes the threshold.
    Returns a :class:`PolygonResult`: ``count`` polygons written of ``groups`` found.
    """
    min_area = max(1, int(min_area or 1))
    top_n = max(0, int(top_n or 0))
    dst_path = str(dst_path)
    check_output_folder(dst_path)
    vector_driver(dst_path)
    scores, info = open_scores(src_path, band)
    score_threshold = compute_threshold(src_path, method, threshold, band=band,
                                        progress=sub_progress(progress, 0.0, 0.3),
                                        is_cancelled=is_cancelled, stream=stream)
    failures = WriteFailures(dst_path)
    with failures.watch():
        try:
            with failures.raised():
                ranked, n_valid, n_flagged, strips = _find_groups(
                    scores, score_threshold, min_area, top_n, sub_progress(progress, 0.3, 0.6),
                    is_cancelled)
                name = layer_name or os.path.splitext(os.path.basename(dst_path))[0] or \
                    "anomalies"
                if strips is None:  # too many to keep: read them again
                    strips = (strip for strip, _ in _flagged_strips(
                        scores, score_threshold, sub_progress(progress, 0.6, 0.85),
                        is_cancelled))
                _polygonize(scores, info, strips, ranked, n_valid, dst_path, name, failures,
                            progress, is_cancelled)
        except BaseException as error:
            failures.reraise(dst_path, error)
        finally:
            scores = None
    report(progress, 1.0)
    return PolygonResult(path=dst_path, layer_name=name, count=len(ranked.groups.ids),
                         threshold=score_threshold, n_valid=n_valid, n_flagged=n_flagged,
                         groups=ranked.found)


REPLAY_PIXELS = 1 << 22
"""Flagged pixels up to which the grouping pass keeps them (12 bytes each with float32
scores) for the labelling pass, which otherwise reads the score raster again."""


def _flagged_strips(scores: ScoreBand, threshold: float, progress, is_cancelled):
    """``(strip, valid pixels)`` of each strip of whole rows (see :mod:`.groups`)."""
    rows = strip_rows(scores.ds.RasterXSize)
    for (_, y, _, _), values, valid in score_windows(scores, progress, is_cancelled, rows=rows):
        yield FlaggedStrip.of(y, values, valid & at_least(values, threshold)), int(valid.sum())


def _find_groups(scores: ScoreBand, threshold: float, min_area: int, top_n: int,
                 progress, is_cancelled) -> Tuple[Ranked, int, int, Optional[list]]:
    """Group the flagged pixels in one streaming pass: ``(ranked groups, valid pixels,
    flagged pixels, the strips if at most REPLAY_PIXELS were flagged, else None)``; only
    the best ``top_n`` groups are held."""
    scan = GroupScan(scores.ds.RasterXSize, min_area, top_n)
    n_valid = n_flagged = 0
    strips: Optional[list] = []
    for strip, valid in _flagged_strips(scores, threshold, progress, is_cancelled):
        scan.add_strip(strip)
        n_valid += valid
        n_flagged += strip.index.size
        if strips is not None and n_flagged <= REPLAY_PIXELS:
            strips.append(strip)
        else:
            strips = None
    return scan.ranked(), n_valid, n_flagged, strips


def _write_labels(band, strips: Iterable[FlaggedStrip], ranked: Ranked) -> np.ndarray:
    """Write each kept group's rank on its pixels (0 elsewhere) into ``band``. Returns, for
    each kept group, how many valid pixels score at least its peak (for ``top_share``: a
    scene-relative score that reads the same in every raster, 1e-4 = top 0.01 %)."""
    width, dtype = band.XSize, gdal_array.GDALTypeCodeToNumericTypeCode(band.DataType)
    labels = GroupLabels(width, ranked)
    peaks = np.sort(ranked.groups.peak)
    reached = np.zeros(len(peaks) + 1, dtype=np.int64)  # valid pixels reaching j sorted peaks
    for strip in strips:
        painted = np.zeros(strip.height * width, dtype)
        painted[strip.index] = labels.ranks(strip)
        band.WriteArray(painted.reshape(strip.height, width), 0, strip.y0)
        # every peak is flagged: pixels below the threshold reach none (bin 0, not counted)
        reached += np.bincount(np.searchsorted(peaks, strip.values, side="right"),
                               minlength=len(peaks) + 1)
    reaching = np.cumsum(reached[::-1])[::-1][1:]  # pixels scoring >= peaks[j]
    return reaching[np.searchsorted(peaks, ranked.groups.peak, side="left")]


def _polygonize(scores: ScoreBand, info, strips: Iterable[FlaggedStrip], ranked: Ranked,
                n_valid: int, dst_path: str, name: str, failures, progress,
                is_cancelled) -> None:
    """Trace the kept groups into polygons (in a temporary folder) and write them to
    ``dst_path`` with their attributes."""
    gt = info.geotransform if info.has_geotransform else NO_GEOTRANSFORM
    srs = layer_srs(info)
    kept = len(ranked.groups.ids)
    tmpdir = tempfile.mkdtemp(prefix="anomaly-poly-")
    label_ds = traced_ds = traced = None
    try:
        fid_of_rank = np.zeros(kept + 1, dtype=np.int64)
        shares = np.zeros(kept)
        if kept:
            label_ds = _rank_raster(os.path.join(tmpdir, "labels.tif"), info, gt, kept)
            shares = _write_labels(label_ds.GetRasterBand(1), strips, ranked)
            shares = shares / max(n_valid, 1)
            check_cancelled(is_cancelled)
            traced_ds, traced = _trace(label_ds.GetRasterBand(1), os.path.join(tmpdir, "p.gpkg"),
                                       None if info.gcps else srs)
            for feature in traced:
                fid_of_rank[feature.GetField(0)] = feature.GetFID()
        report(progress, 0.9)

        def write(out_layer):
            write_features(out_layer, traced, fid_of_rank, ranked, shares, scores.ds, info, gt,
                           srs)
        write_vector(dst_path, name, srs, write, failures, is_cancelled)
    finally:
        with gdal_quiet():
            label_ds = traced = traced_ds = None  # noqa: F841 - closes the temporary files
        shutil.rmtree(tmpdir, ignore_errors=True)


def _rank_raster(path: str, info, gt, kept: int):
    """A new raster on the score raster's grid for the ranks 1 to ``kept`` (of the
    smallest unsigned type that holds them; blocks left at 0 are not stored)."""
    data_type = next(t for t, top in ((gdal.GDT_Byte, 255), (gdal.GDT_UInt16, 65535),
                                      (gdal.GDT_UInt32, None)) if top is None or kept <= top)
    dataset = gdal.GetDriverByName("GTiff").Create(path, info.width, info.height, 1, data_type,
                                                   _LABEL_OPTIONS)
    dataset.SetGeoTransform(gt)
    return dataset


def _trace(band, path: str, srs):
    """``(dataset, layer)`` of the 8-connected polygons of the non-zero ranks in ``band``,
    each with its ``rank``, in a new GeoPackage ``path``."""
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = dataset.CreateLayer("poly", srs=srs, geom_type=ogr.wkbPolygon,
                                options=["SPATIAL_INDEX=NO"])
    layer.CreateField(ogr.FieldDefn("rank", ogr.OFTInteger))
    layer.StartTransaction()
    gdal.Polygonize(band, band, layer, 0, ["8CONNECTED=8"])
    layer.CommitTransaction()
    return dataset, layer
