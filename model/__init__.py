"""QGIS-free numerical core of the Anomaly Detector plugin.

Nothing in this package imports qgis: it needs numpy and GDAL only, so it can be
used and tested without QGIS.
"""
