"""anomaly:polygonize - ranked anomaly polygons from a score raster."""

from qgis.core import (QgsProcessing, QgsProcessingOutputNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorDestination)

from ..model.polygons import polygonize_scores
from .base import AnomalyAlgorithm
from .params import THRESHOLD_HELP, add_threshold_parameters, read_threshold_parameters


class PolygonizeAlgorithm(AnomalyAlgorithm):
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    COUNT = "COUNT"
    THRESHOLD_VALUE = "THRESHOLD_VALUE"

    NAME = "polygonize"
    DISPLAY_NAME = "Anomaly polygons from a score raster"
    GROUP_ID = "postprocessing"
    TAGS = ["polygonize", "threshold", "vectorize", "rank"]
    SUMMARY = (
        "Selects the anomalous pixels of a score raster (band 1, higher = more anomalous) "
        "and turns each 8-connected group into a polygon with GDAL's polygonize. Polygons "
        "are ranked by their highest score (rank 1 = most anomalous) and carry score_max, "
        "score_mean, pixels and area (map units²). The output is in the raster's CRS, "
        "ordered by rank.")
    PARAM_HELP = [(INPUT, "Score raster, e.g. the output of anomaly:rx.")] + THRESHOLD_HELP + [
        (OUTPUT, "Polygon layer (GeoPackage by default)."),
    ]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Score raster"))
        add_threshold_parameters(self)
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Anomaly polygons", type=QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.COUNT, "Number of anomaly polygons"))
        self.addOutput(QgsProcessingOutputNumber(self.THRESHOLD_VALUE, "Score threshold used"))

    def process_core(self, parameters, context, feedback):
        src = self.raster_path(parameters, self.INPUT, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        kwargs = read_threshold_parameters(self, parameters, context)
        progress, cancelled = self.callbacks(feedback)
        res = polygonize_scores(src, dst, progress=progress, is_cancelled=cancelled, **kwargs)
        feedback.pushInfo(
            f"Threshold {res.threshold:.6g}: {res.n_flagged} of {res.n_valid} valid pixels, "
            f"{res.count} polygon(s).")
        return {self.OUTPUT: dst, self.COUNT: int(res.count),
                self.THRESHOLD_VALUE: float(res.threshold)}
