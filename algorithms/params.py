"""Threshold / polygon parameters shared by anomaly:polygonize and anomaly:detect."""

from qgis.core import (QgsProcessingParameterEnum, QgsProcessingParameterNumber)

THRESHOLD_METHOD = "THRESHOLD_METHOD"
THRESHOLD = "THRESHOLD"
MIN_AREA = "MIN_AREA"

# (label shown in QGIS, method name in model.polygons); order = enum index
THRESHOLD_METHODS = [
    ("Top fraction of valid pixels", "top_fraction"),
    ("Fixed score", "fixed"),
    ("Automatic (mean + 3 standard deviations)", "automatic"),
]

THRESHOLD_HELP = [
    (THRESHOLD_METHOD,
     "How anomalous pixels are selected. <i>Top fraction</i> (default): the THRESHOLD "
     "fraction of valid pixels with the highest scores (0.005 = 0.5 %). <i>Fixed score</i>: "
     "pixels whose score is at least THRESHOLD. <i>Automatic</i>: pixels whose score is at "
     "least the mean plus 3 standard deviations of all valid scores (THRESHOLD is ignored)."),
    (THRESHOLD, "Fraction (top fraction method) or score value (fixed score method). "
                "Default 0.005."),
    (MIN_AREA, "Smallest polygon kept, in pixels (8-connected). Default 1."),
]


def add_threshold_parameters(alg, default_method=0, default_threshold=0.005, default_min_area=1):
    """Add THRESHOLD_METHOD, THRESHOLD and MIN_AREA to ``alg`` (in initAlgorithm)."""
    alg.addParameter(QgsProcessingParameterEnum(
        THRESHOLD_METHOD, "Threshold method", options=[m[0] for m in THRESHOLD_METHODS],
        defaultValue=default_method))
    alg.addParameter(QgsProcessingParameterNumber(
        THRESHOLD, "Threshold (fraction of pixels or score)",
        type=QgsProcessingParameterNumber.Double, defaultValue=default_threshold))
    alg.addParameter(QgsProcessingParameterNumber(
        MIN_AREA, "Minimum polygon area (pixels)", type=QgsProcessingParameterNumber.Integer,
        defaultValue=default_min_area, minValue=1))


def read_threshold_parameters(alg, parameters, context):
    """Return keyword arguments ``method``, ``threshold``, ``min_area`` for
    :func:`anomaly_detector.model.polygons.polygonize_scores`."""
    idx = alg.parameterAsEnum(parameters, THRESHOLD_METHOD, context)
    return {
        "method": THRESHOLD_METHODS[idx][1],
        "threshold": alg.parameterAsDouble(parameters, THRESHOLD, context),
        "min_area": alg.parameterAsInt(parameters, MIN_AREA, context),
    }
