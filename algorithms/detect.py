"""anomaly:detect - the bundled cross-modality deep detector, then ranked polygons."""

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBand,
                       QgsProcessingParameterEnum, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)

from ..model.polygons import polygonize_scores
from .base import AnomalyAlgorithm
from .params import THRESHOLD_HELP, add_threshold_parameters, read_threshold_parameters

DEVICES = ["auto", "cpu", "cuda"]
TORCH_MISSING = (
    "Anomaly detection needs PyTorch, which is not installed for the Python that QGIS uses. "
    "Install the CPU build with: python3 -m pip install --user torch "
    "--index-url https://download.pytorch.org/whl/cpu (then restart QGIS). "
    "RX and polygonize work without it.")


def _import_detector():
    """The detector module, imported only when needed (it imports torch)."""
    try:
        from ..model import detector
    except ImportError as error:
        if "torch" in str(error):
            raise QgsProcessingException(TORCH_MISSING) from error
        raise
    return detector


class DetectAlgorithm(AnomalyAlgorithm):
    INPUT = "INPUT"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    DEVICE = "DEVICE"
    OUTPUT_SCORE = "OUTPUT_SCORE"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    COUNT = "COUNT"
    DEVICE_USED = "DEVICE_USED"

    NAME = "detect"
    DISPLAY_NAME = "Detect anomalies"
    GROUP_ID = "scoring"
    TAGS = ["deep learning", "zero-shot", "hyperspectral", "multispectral", "sar", "infrared",
            "thermal", "visible", "target", "outlier"]
    SUMMARY = (
        "Scores how much every pixel deviates from its spatial and spectral surroundings with "
        "the bundled, pretrained cross-modality detector, then turns the most anomalous pixels "
        "into ranked polygons. Works zero-shot on any raster (hyperspectral, multispectral, "
        "visible, SAR, infrared, low-light; 1 to 1000+ bands; any data type) without "
        "retraining. The raster is normalised once from exact band statistics, then scored "
        "tile by tile with overlapping margins, so there are no seams. Scores lie in [0, 1]; "
        "nodata and non-finite input pixels are nodata (-9999) in the output, which has the "
        "input's exact grid and CRS.<br><br>Method: Li, Wang, Zhao, Zhang, Zhong, "
        "<i>Learning a Cross-modality Anomaly Detector for Remote Sensing Imagery</i>, "
        "IEEE Transactions on Image Processing, 2024 (arXiv:2310.07511); compact network "
        "and weights of this plugin: see weights/MODEL.md.")
    PARAM_HELP = [
        (INPUT, "Raster to analyse (the active layer in the dialog)."),
        (BANDS, "Bands to use (optional, default: all bands)."),
        (TILE_SIZE, "Side of the square tiles scored at once, in pixels (rounded up to a "
                    "multiple of 4). Larger tiles are faster but need more memory. Default 512."),
        (OVERLAP, "Context margin read around each tile, in pixels (rounded up to a multiple "
                  "of 4). Default 64 covers the network's receptive field: results do not "
                  "depend on the tile size."),
        (DEVICE, "auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu or cuda. The "
                 "device actually used is written to the log."),
    ] + THRESHOLD_HELP + [
        (OUTPUT_SCORE, "Deviation score raster: float32 GeoTIFF in [0, 1], nodata -9999."),
        (OUTPUT_POLYGONS, "Ranked anomaly polygons (GeoPackage by default): rank (1 = most "
                          "anomalous), score_max, score_mean, pixels, area (map units²)."),
    ]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands (default: all)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (pixels)", type=QgsProcessingParameterNumber.Integer,
            defaultValue=512, minValue=32, maxValue=8192))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap (pixels)", type=QgsProcessingParameterNumber.Integer,
            defaultValue=64, minValue=0, maxValue=1024))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        add_threshold_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SCORE, "Anomaly score"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Anomalies", type=QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.COUNT, "Number of anomaly polygons"))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, "Device used"))

    def process_core(self, parameters, context, feedback):
        src = self.raster_path(parameters, self.INPUT, context)
        bands = self.parameterAsInts(parameters, self.BANDS, context) or None
        score_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_SCORE, context)
        polygons_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        threshold = read_threshold_parameters(self, parameters, context)
        detector = _import_detector()
        progress, cancelled = self.callbacks(feedback)
        try:
            result = detector.detect_raster(
                src, score_path, bands=bands,
                tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
                overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
                device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                progress=None if progress is None else (lambda f: progress(0.9 * f)),
                is_cancelled=cancelled)
        except (detector.WeightsError, ValueError) as error:
            if isinstance(error, detector.RasterInputError):
                raise
            raise QgsProcessingException(str(error)) from error
        feedback.pushInfo(f"Scored on device '{result.device}' in {result.seconds:.1f} s "
                          f"(tiles {result.tile_size} px, overlap {result.overlap} px).")
        polygons = polygonize_scores(
            score_path, polygons_path, is_cancelled=cancelled,
            progress=None if progress is None else (lambda f: progress(0.9 + 0.1 * f)),
            **threshold)
        feedback.pushInfo(f"Threshold {polygons.threshold:.6g}: {polygons.count} anomaly polygon(s).")
        return {self.OUTPUT_SCORE: score_path, self.OUTPUT_POLYGONS: polygons_path,
                self.COUNT: int(polygons.count), self.DEVICE_USED: result.device}
