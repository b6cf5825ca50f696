"""Shared boilerplate of the plugin's Processing algorithms."""

import os

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterRasterLayer, QgsProcessingUtils)
from qgis.PyQt.QtGui import QIcon

from ..model.engine import Cancelled, RasterInputError, open_raster_checked

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icon.svg")

GROUPS = {
    "scoring": "Anomaly scores",
    "postprocessing": "Post-processing",
}


class AnomalyAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set the class attributes and implement ``process_core``.

    ``PARAM_HELP`` is a list of ``(NAME, description)`` pairs used to build the
    help text shown in the algorithm dialog and by ``qgis_process help``.
    """

    NAME = ""
    DISPLAY_NAME = ""
    GROUP_ID = "scoring"
    SUMMARY = ""
    PARAM_HELP = []
    TAGS = []

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802
        return self.DISPLAY_NAME

    def group(self):
        return GROUPS[self.GROUP_ID]

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def tags(self):
        return list(self.TAGS) + ["anomaly", "outlier", "detection"]

    def icon(self):
        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802
        return ICON_PATH

    def shortHelpString(self):  # noqa: N802
        lines = [self.SUMMARY, ""]
        for pname, text in self.PARAM_HELP:
            lines.append(f"<b>{pname}</b>: {text}")
        return "<br>".join(lines)

    def createInstance(self):  # noqa: N802
        return type(self)()

    # -- helpers for subclasses --------------------------------------------

    @staticmethod
    def callbacks(feedback):
        """``(progress, is_cancelled)`` callbacks for the QGIS-free core."""
        if feedback is None:
            return None, None
        return (lambda f: feedback.setProgress(100.0 * f)), feedback.isCanceled

    def raster_path(self, parameters, name, context):
        """File path of a raster layer parameter (GDAL-readable), or a clear error."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None or not layer.isValid():
            value = parameters.get(name) if isinstance(parameters, dict) else None
            raise QgsProcessingException(
                f"The {name} raster '{value}' could not be opened. Check that the file exists "
                "and is a raster GDAL can read.")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"The {name} layer must be a raster file read by GDAL (for example a GeoTIFF); "
                f"'{layer.name()}' uses the '{layer.providerType()}' provider. "
                "Save it as a GeoTIFF first.")
        return layer.source().split("|")[0]

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Explain in one sentence why a raster input cannot be used."""
        for pdef in self.parameterDefinitions():
            if not isinstance(pdef, QgsProcessingParameterRasterLayer):
                continue
            value = parameters.get(pdef.name()) if isinstance(parameters, dict) else None
            if not isinstance(value, str) or not value:
                continue
            layer = QgsProcessingUtils.mapLayerFromString(value, context)
            if layer is not None and layer.isValid():
                continue
            try:
                open_raster_checked(value.split("|")[0])
            except RasterInputError as err:
                return False, str(err)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        try:
            return self.process_core(parameters, context, feedback)
        except RasterInputError as err:
            raise QgsProcessingException(str(err)) from err
        except Cancelled as err:
            raise QgsProcessingException("Cancelled by the user; no output was written.") from err

    def process_core(self, parameters, context, feedback):
        raise NotImplementedError
