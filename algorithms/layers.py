"""Raster layers of file inputs that write nothing into or beside the input."""

from osgeo import gdal
from qgis.core import (QgsCoordinateTransformContext, QgsMapLayerFactory, QgsMapLayerType,
                       QgsProcessingParameterRasterLayer, QgsProcessingUtils)
from qgis.PyQt.QtCore import QThread

SOURCE_PROPERTY = "anomaly_detector/source"


def raster_layer(source):
    """A QGIS raster layer of the file ``source`` that never writes into or beside it.

    QGIS computes statistics for a new layer's default style and GDAL saves them
    into a VRT itself or an ``.aux.xml`` beside the file (even into a zip archive).
    The layer reads ``source`` through an in-memory ``vrt://`` wrapper, opened with
    GDAL's PAM off, so that no file keeps them; it is named after ``source`` (so that
    Processing finds it for that value) and keeps the path in :data:`SOURCE_PROPERTY`.
    The algorithms read the file itself (with its sidecars) through GDAL.
    """
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")  # no .aux.xml beside files
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # e.g. "Unable to compute a transformation"
    try:
        # made by QGIS's factory, not as a Python subclass instance: a layer store may
        # delete it late (after QGIS exits) without calling back into Python
        layer = QgsMapLayerFactory.createLayer(
            f"vrt://{source}", source, QgsMapLayerType.RasterLayer,
            QgsMapLayerFactory.LayerOptions(QgsCoordinateTransformContext()), "gdal")
    finally:
        gdal.PopErrorHandler()
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    if layer is not None:
        layer.setCustomProperty(SOURCE_PROPERTY, source)
    return layer


def loaded_or_quiet_layer(value, context):
    """The layer that ``value`` names in ``context`` (or the project), else the file loaded
    by :func:`raster_layer` into the context's temporary store; None if neither works."""
    layer = QgsProcessingUtils.mapLayerFromString(value, context, False)
    if layer is None:
        quiet = raster_layer(value.split("|")[0])
        if quiet is not None and quiet.isValid():
            context.temporaryLayerStore().addMapLayer(quiet)  # the store owns it
            return quiet
    return layer


class RasterInput(QgsProcessingParameterRasterLayer):
    """A raster layer parameter whose files are loaded by :func:`raster_layer`.

    qgis_process (and Processing before the algorithm's own checks) loads a layer for
    a file path while checking the value; this parameter loads it first, quietly, so
    that the check finds it and no statistics are written into or beside the input.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802
        if context is not None and isinstance(value, str) and value:
            loaded_or_quiet_layer(value, context)
        return super().checkValueIsAcceptable(value, context)

    def clone(self):
        return RasterInput(self.name(), self.description(), self.defaultValue(),
                           bool(self.flags() & self.FlagOptional))


def release_quiet_layers(context):
    """Remove the :func:`raster_layer` layers of a run that failed from its context.

    A failed run's context may live on in a kept traceback; its layers would then be
    closed only when Python collects it, possibly after QGIS has shut GDAL down.
    """
    store = context.temporaryLayerStore()
    ours = [layer for layer in store.mapLayers().values()
            if layer.customProperty(SOURCE_PROPERTY) and layer.thread() == QThread.currentThread()]
    if ours:
        store.removeMapLayers(ours)


def layer_path(layer):
    """The GDAL path of a raster layer (the file behind a :func:`raster_layer`)."""
    return layer.customProperty(SOURCE_PROPERTY) or layer.source().split("|")[0]
