"""anomaly:polygonize - ranked anomaly polygons from a score raster."""

from qgis.core import (QgsProcessing, QgsProcessingParameterBand,
                       QgsProcessingParameterVectorDestination)

from ..model.raster.io import open_raster_checked
from ..model.vector.polygons import polygonize_scores
from .base import CITATION, AnomalyAlgorithm
from .layers import RasterInput
from .params import (OUTPUT_POINTS, POINTS_HELP, THRESHOLD_HELP, add_points_output,
                     add_polygon_outputs, add_threshold_parameters, points_path, polygon_outputs,
                     polygon_summary, read_threshold_parameters, write_points)
from .provenance import provenance, record_in_vector
from .styles import POLYGONS_SUFFIX, layer_name


class PolygonizeAlgorithm(AnomalyAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    OUTPUT = "OUTPUT"

    NAME = "polygonize"
    DISPLAY_NAME = "Anomaly polygons from a score raster"
    GROUP_ID = "postprocessing"
    TAGS = ["polygonize", "threshold", "vectorize", "rank"]
    SUMMARY = (
        "Selects the anomalous pixels of a score raster (BAND, default 1; higher = more "
        "anomalous), groups them 8-connected, ranks the groups by their highest score (rank "
        "1 = most anomalous) and turns the TOP_N best into polygons with GDAL's polygonize. "
        "Polygons carry rank, score_max, "
        "score_mean, pixels, area (map units²), centroid_x / centroid_y (the centroid, in "
        "the raster's CRS), peak_x / peak_y (the highest-scoring pixel), lon / lat (that peak "
        "in WGS 84), area_m2 (ellipsoidal) and top_share (the share of valid pixels scoring "
        "at least the peak). The output is in the raster's CRS, ordered by rank. Needs nothing "
        "beyond QGIS (no PyTorch).")
    EXPECT = (
        "A polygon layer named '[input] - anomalies', drawn as cyan outlines labelled "
        "with their rank: sort the attribute table by rank and zoom to each feature to "
        "triage. The top fraction method always flags the same share of pixels, even in a "
        "scene without real anomalies; use a fixed score to flag only pixels above an "
        "absolute level. At most TOP_N polygons (default 500) are written, the most anomalous; "
        "the log and GROUP_COUNT say how many groups were found in all.")
    REFERENCE = (
        "Connected groups of flagged pixels become polygons with GDAL's GDALPolygonize "
        "(8-connected); the automatic threshold is the three-sigma rule. Score rasters of "
        "anomaly:detect come from the method of " + CITATION)
    HELP_ANCHOR = "anomalypolygonize--anomaly-polygons-from-a-score-raster"
    PARAM_HELP = [(INPUT, "Score raster, e.g. the output of anomaly:rx. Its nodata, NaN "
                   "and masked pixels (internal mask, alpha band) are not valid pixels."),
                  (BAND, "Band of the score raster to threshold (default 1).")] + \
        THRESHOLD_HELP + [
        (OUTPUT, "Polygon layer (GeoPackage by default)."),
        POINTS_HELP,
    ]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterInput(self.INPUT, "Score raster"))
        self.addParameter(QgsProcessingParameterBand(
            self.BAND, "Score band", defaultValue=1, parentLayerParameterName=self.INPUT,
            optional=True))
        add_threshold_parameters(self)
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Anomaly polygons", type=QgsProcessing.TypeVectorPolygon))
        add_points_output(self)
        add_polygon_outputs(self)

    def process_core(self, parameters, context, feedback):
        src = self.raster_path(parameters, self.INPUT, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        points = points_path(self, parameters, context)
        self.check_outputs([(self.OUTPUT, dst), (OUTPUT_POINTS, points)])
        kwargs = read_threshold_parameters(self, parameters, context)
        band = (self.bands(parameters, self.BAND, context) or [1])[0]
        feedback.pushInfo(f"Thresholding band {band} of {open_raster_checked(src).band_count}.")
        progress, cancelled = self.callbacks(feedback)
        res = polygonize_scores(src, dst, band=band, progress=progress, is_cancelled=cancelled,
                                **kwargs)
        feedback.pushInfo(polygon_summary(res))
        items = provenance(self.id(), parameters, threshold=res.threshold,
                           valid_pixels=res.n_valid, flagged_pixels=res.n_flagged,
                           group_count=res.groups)
        record_in_vector(dst, items)
        self.style_output(dst, "polygons", layer_name(
            self.input_name(parameters, self.INPUT, context), POLYGONS_SUFFIX))
        return {self.OUTPUT: dst, **polygon_outputs(res),
                **write_points(points, dst, items, cancelled)}
