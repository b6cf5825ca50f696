"""Threshold / polygon parameters shared by anomaly:polygonize and anomaly:detect."""

import math

from qgis.core import (QgsProcessing, QgsProcessingOutputNumber, QgsProcessingParameterEnum,
                       QgsProcessingParameterNumber, QgsProcessingParameterVectorDestination)

from osgeo import gdal

from ..model import defaults
from ..model.vector.threshold import ScoreStream
from ..model.vector.points import write_peak_points
from .provenance import record_in_vector

THRESHOLD_METHOD = "THRESHOLD_METHOD"
THRESHOLD = "THRESHOLD"
MIN_AREA = "MIN_AREA"
TOP_N = "TOP_N"
OUTPUT_POINTS = "OUTPUT_POINTS"

# (label shown in QGIS, method name in model.vector.threshold); order = enum index
THRESHOLD_METHODS = [
    ("Top fraction of valid pixels", "top_fraction"),
    ("Fixed score", "fixed"),
    ("Automatic (mean + 3 standard deviations)", "automatic"),
]

THRESHOLD_HELP = [
    (THRESHOLD_METHOD,
     "How anomalous pixels are selected. <i>Top fraction</i> (default): the THRESHOLD "
     f"fraction of valid pixels with the highest scores ({defaults.THRESHOLD} = "
     f"{defaults.THRESHOLD * 100:g} %). <i>Fixed score</i>: "
     "pixels whose score is at least THRESHOLD. <i>Automatic</i>: pixels whose score is at "
     "least the mean plus 3 standard deviations of all valid scores (THRESHOLD is ignored)."),
    (THRESHOLD, "Fraction (top fraction method) or score value (fixed score method). "
                f"Default {defaults.THRESHOLD}."),
    (MIN_AREA, f"Smallest polygon kept, in pixels (8-connected). Default {defaults.MIN_AREA}."),
    (TOP_N, f"Write only the N most anomalous polygons (ranks 1 to N; default "
            f"{defaults.TOP_N}); 0 writes all. Every group of flagged pixels is still found, "
            "ranked and counted (GROUP_COUNT, and in the log) in a streaming pass whose memory "
            "does not grow with their number; only the N written are polygonised. With 0, time "
            "and output grow with the number of groups (hundreds of thousands on a noisy "
            "raster)."),
]


def add_threshold_parameters(alg):
    """Add THRESHOLD_METHOD, THRESHOLD, MIN_AREA and TOP_N to ``alg`` (in initAlgorithm),
    with the defaults of :mod:`anomaly_detector.model.defaults`."""
    default_method = [m[1] for m in THRESHOLD_METHODS].index(defaults.THRESHOLD_METHOD)
    alg.addParameter(QgsProcessingParameterEnum(
        THRESHOLD_METHOD, "Threshold method", options=[m[0] for m in THRESHOLD_METHODS],
        defaultValue=default_method))
    alg.addParameter(QgsProcessingParameterNumber(
        THRESHOLD, "Threshold (fraction of pixels or score)",
        type=QgsProcessingParameterNumber.Double, defaultValue=defaults.THRESHOLD))
    alg.addParameter(QgsProcessingParameterNumber(
        MIN_AREA, "Minimum polygon area (pixels)", type=QgsProcessingParameterNumber.Integer,
        defaultValue=defaults.MIN_AREA, minValue=1))
    alg.addParameter(QgsProcessingParameterNumber(
        TOP_N, "Write only the N most anomalous polygons (0 = all)",
        type=QgsProcessingParameterNumber.Integer, defaultValue=defaults.TOP_N, minValue=0,
        optional=True))


def check_threshold_parameters(parameters):
    """A sentence saying what to change when a threshold parameter is out of range, else None.

    Called from ``checkParameterValues`` so that a bad value is refused before any
    work (and before QGIS's generic "Incorrect parameter value" message).
    """
    def number(name):
        value = parameters.get(name) if isinstance(parameters, dict) else None
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    method = number(THRESHOLD_METHOD)
    method = 0 if method is None else int(method)
    if not 0 <= method < len(THRESHOLD_METHODS):
        return (f"THRESHOLD_METHOD must be 0 (top fraction), 1 (fixed score) or 2 (automatic); "
                f"got {parameters.get(THRESHOLD_METHOD)}.")
    threshold = number(THRESHOLD)
    if threshold is not None:
        if not math.isfinite(threshold):
            return f"THRESHOLD must be a finite number (got {parameters.get(THRESHOLD)})."
        if THRESHOLD_METHODS[method][1] == "top_fraction" and not 0.0 < threshold <= 1.0:
            return (f"With the top fraction method THRESHOLD is a fraction of the valid pixels "
                    f"and must be greater than 0 and at most 1 (got {threshold:g}); for "
                    "example 0.005 flags the 0.5 % highest scores.")
    min_area = number(MIN_AREA)
    if min_area is not None and min_area < 1:
        return (f"MIN_AREA is the smallest polygon kept, in pixels, and must be at least 1 "
                f"(got {min_area:g}).")
    top_n = number(TOP_N)
    if top_n is not None and top_n < 0:
        return f"TOP_N must be 0 (keep all polygons) or a positive number (got {top_n:g})."
    return None


def read_threshold_parameters(alg, parameters, context):
    """Return keyword arguments ``method``, ``threshold``, ``min_area``, ``top_n`` for
    :func:`anomaly_detector.model.vector.polygons.polygonize_scores`."""
    idx = alg.parameterAsEnum(parameters, THRESHOLD_METHOD, context)
    return {
        "method": THRESHOLD_METHODS[idx][1],
        "threshold": alg.parameterAsDouble(parameters, THRESHOLD, context),
        "min_area": alg.parameterAsInt(parameters, MIN_AREA, context),
        "top_n": max(0, alg.parameterAsInt(parameters, TOP_N, context)),
    }


def raster_pixels(raster: str) -> int:
    """Pixels of a raster: at most as many as a score raster of it (or of a window of it)."""
    dataset = gdal.Open(raster)
    return dataset.RasterXSize * dataset.RasterYSize


def threshold_stream(threshold: dict, raster: str) -> ScoreStream:
    """A stream that gathers the polygons' ``threshold`` (from
    :func:`read_threshold_parameters`) from the scores of ``raster`` (or of a window of it)
    while they are written: pass it to ``model.vector.threshold.observer`` for the
    scoring's ``observe`` and to :meth:`.base.AnomalyAlgorithm.polygons_and_provenance`."""
    return ScoreStream(threshold["method"], threshold["threshold"], raster_pixels(raster))


# Numbers returned by both algorithms that write polygons (for the modeler and scripts)
POLYGON_OUTPUTS = [
    ("COUNT", "Number of anomaly polygons written (as POLYGON_COUNT)"),
    ("POLYGON_COUNT", "Number of anomaly polygons written (at most TOP_N)"),
    ("GROUP_COUNT", "Number of groups of flagged pixels found (at least MIN_AREA pixels)"),
    ("THRESHOLD_VALUE", "Score threshold used"),
    ("VALID_PIXELS", "Valid (scored) pixels"),
    ("FLAGGED_PIXELS", "Pixels at or above the threshold"),
]


def add_polygon_outputs(alg):
    for name, label in POLYGON_OUTPUTS:
        alg.addOutput(QgsProcessingOutputNumber(name, label))


def polygon_outputs(result) -> dict:
    """The :data:`POLYGON_OUTPUTS` values of a ``model.vector.polygons.PolygonResult``."""
    return {"COUNT": int(result.count), "POLYGON_COUNT": int(result.count),
            "GROUP_COUNT": int(result.groups), "THRESHOLD_VALUE": float(result.threshold),
            "VALID_PIXELS": int(result.n_valid), "FLAGGED_PIXELS": int(result.n_flagged)}


def polygon_summary(result) -> str:
    """The log line of a ``model.vector.polygons.PolygonResult``: threshold, groups found,
    polygons written."""
    written = (f"all {result.count} written" if result.count == result.groups else
               f"the {result.count} most anomalous written as polygons (TOP_N)")
    return (f"Threshold {result.threshold:.6g}: {result.n_flagged} of {result.n_valid} valid "
            f"pixels flagged, {result.groups} group(s) found, {written}.")


POINTS_HELP = (OUTPUT_POINTS,
               "Optional peak points (none unless a file is given): one point per polygon at "
               "its highest-scoring pixel, with the polygon's fields (rank, scores, lon/lat "
               "in WGS 84, ...), in rank order: for GPS receivers and field work.")


def add_points_output(alg) -> None:
    """Add the optional OUTPUT_POINTS destination to ``alg`` (in initAlgorithm)."""
    alg.addParameter(QgsProcessingParameterVectorDestination(
        OUTPUT_POINTS, "Anomaly peaks (points)", type=QgsProcessing.TypeVectorPoint,
        optional=True, createByDefault=False))


def points_path(alg, parameters, context) -> str:
    """The OUTPUT_POINTS file asked for, or "" when none was."""
    return alg.parameterAsOutputLayer(parameters, OUTPUT_POINTS, context) or ""


def write_points(path: str, polygons_path: str, provenance_items: dict, cancelled) -> dict:
    """Write the peak points of ``polygons_path`` to ``path`` when one was asked for;
    returns the algorithm's OUTPUT_POINTS result."""
    if not path:
        return {}
    write_peak_points(polygons_path, path, is_cancelled=cancelled)
    record_in_vector(path, provenance_items)
    return {OUTPUT_POINTS: path}
