"""MASK and EXTENT: the area of interest of anomaly:detect and anomaly:rx.

The parameters are turned into what the QGIS-free core takes: a pixel window and a
mask raster (see :mod:`anomaly_detector.model.raster.area`).
"""

from qgis.core import (QgsCoordinateReferenceSystem, QgsMapLayer, QgsProcessing,
                       QgsProcessingException, QgsProcessingFeatureSourceDefinition,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingUtils)

from ..model.raster.area import Area, prepare_area
from ..model.raster.files import same_file
from ..model.raster.io import open_raster_checked

MASK = "MASK"
EXTENT = "EXTENT"

# vector files GDAL reads as they are; other layers (and selections) are exported first
_READABLE_FORMATS = ["gpkg", "shp", "geojson", "json", "fgb", "sqlite", "gml", "kml", "tab"]

AREA_HELP = [
    (MASK, "Area of interest: polygons (optional, any CRS; reprojected to the raster's). Only "
           "pixels whose centre lies inside a polygon are analysed: the statistics come from "
           "them alone, every other pixel is nodata (-9999) and no anomaly polygon lies "
           "outside. With <i>Selected features only</i> ticked, only the selected polygons "
           "count."),
    (EXTENT, "Area of interest: extent (optional, any CRS). The output covers only the "
             "input's pixels that the extent overlaps, on the input's own pixel grid (not "
             "resampled), and the statistics come from them alone. An extent outside the "
             "raster is refused."),
]


def add_area_parameters(alg) -> None:
    """Add MASK and EXTENT to ``alg`` (in initAlgorithm)."""
    alg.addParameter(QgsProcessingParameterFeatureSource(
        MASK, "Area of interest: polygons", [QgsProcessing.TypeVectorPolygon], optional=True))
    alg.addParameter(QgsProcessingParameterExtent(
        EXTENT, "Area of interest: extent", optional=True))


def _given(parameters, name) -> bool:
    return parameters.get(name) not in (None, "")


def read_area(alg, parameters, context, feedback, src):
    """The ``model.raster.area.Area`` of MASK and EXTENT over the raster ``src`` (the whole
    raster when neither is given). QGIS transforms the extent to the raster's CRS; the
    MASK layer (its selected features when asked) is read from its file or exported to one."""
    if not (_given(parameters, MASK) or _given(parameters, EXTENT)):
        return Area(None, None, 0)
    extent = None
    if _given(parameters, EXTENT):
        crs = QgsCoordinateReferenceSystem.fromWkt(open_raster_checked(src).projection_wkt)
        rect = alg.parameterAsExtent(parameters, EXTENT, context, crs)
        extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
    mask = layer_name = label = None
    if _given(parameters, MASK):
        source = alg.parameterAsSource(parameters, MASK, context)
        if source is None:
            raise QgsProcessingException(
                f"The MASK layer '{parameters.get(MASK)}' could not be opened. Choose a polygon "
                "layer, or leave MASK empty to use the whole raster.")
        label = source.sourceName()
        _refuse_mask_as_output(alg, parameters, context)
        mask, layer_name = alg.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, MASK, context, _READABLE_FORMATS, "gpkg", feedback)
    area = prepare_area(src, alg.temporary_path("area-mask.tif"), extent=extent, mask=mask,
                        mask_layer=layer_name or None, mask_label=label)
    window = area.window
    where = "the whole raster" if window is None else (
        f"a window of {window.width} x {window.height} pixels from column {window.x}, "
        f"row {window.y}")
    feedback.pushInfo(f"Area of interest: {where}"
                      + (f", {area.pixels} pixels inside the MASK polygons." if mask else "."))
    return area


def _refuse_mask_as_output(alg, parameters, context) -> None:
    """Inputs are never overwritten: refuse an output that is the MASK layer's file."""
    value = parameters.get(MASK)
    if isinstance(value, QgsProcessingFeatureSourceDefinition):
        value = value.source.staticValue()
    layer = value if isinstance(value, QgsMapLayer) else \
        QgsProcessingUtils.mapLayerFromString(str(value), context)
    mask_file = layer.source().split("|")[0] if layer is not None else str(value)
    for pdef in alg.destinationParameterDefinitions():
        path = alg.parameterAsOutputLayer(parameters, pdef.name(), context)
        if path and same_file(path, mask_file):
            raise QgsProcessingException(
                f"The {pdef.name()} output '{path}' is the MASK layer's file. Choose another "
                "file name: inputs are never overwritten.")
