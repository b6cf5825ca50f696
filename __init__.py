"""Anomaly Detector: a QGIS Processing plugin for anomaly detection in rasters.

QGIS calls :func:`classFactory`. Nothing here imports qgis at module level, so
``import anomaly_detector.model`` works without QGIS.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import AnomalyDetectorPlugin
    return AnomalyDetectorPlugin(iface)
