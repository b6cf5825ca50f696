"""QGIS-free numerical core of the Anomaly Detector plugin.

Nothing in this package imports qgis, so it can be used and tested without QGIS.
It needs numpy and GDAL (``raster``, ``classic``, ``vector``); the learned detector
(``nn``) and its training (``training``, not shipped in the plugin ZIP) need torch, the
batch entry (``batch``) Dask's ``distributed``, and the evaluation's object metrics scipy.
"""
