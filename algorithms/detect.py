"""anomaly:detect - the bundled cross-modality deep detector, then ranked polygons."""

from qgis.core import (QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputString,
                       QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterVectorDestination)

from .. import deps
from ..model import defaults
from ..model.raster.errors import AnomalyError
from ..model.raster.output import atomic_output
from ..model.raster.progress import sub_progress
from ..model.vector.threshold import observer
from .area import AREA_HELP, add_area_parameters, read_area
from .base import CITATION, AnomalyAlgorithm
from .params import (OUTPUT_POINTS, POINTS_HELP, THRESHOLD_HELP, add_points_output,
                     add_polygon_outputs, add_threshold_parameters, points_path, polygon_outputs,
                     read_threshold_parameters, threshold_stream, write_points)
from .styles import SCORE_SUFFIX, stretch_stream

DEVICES = ["auto", "cpu", "cuda"]
# arithmetic of each PRECISION option (model.defaults.PRECISIONS)
PRECISION_OPTIONS = [("auto", "Fastest: bfloat16 convolutions where the CPU computes them "
                              "natively (AVX512-BF16, AMX), else float32"),
                     ("float32", "float32: the same scores on every machine")]
# analysis scale of each SCALE option (model.nn.detector.SCALES)
SCALE_OPTIONS = [(1, "Full resolution"),
                 (2, "1/2 resolution: faster on few bands, for objects of 2 or more pixels"),
                 (4, "1/4 resolution: faster on few bands, for objects of 4 or more pixels")]


def torch_missing_message():
    """The sentence shown when PyTorch cannot be imported."""
    return deps.torch_missing_message()


def _import_detector():
    """The detector module, imported only when needed (it imports torch)."""
    try:
        from ..model.nn import detector
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        if missing.split(".")[0] == "torch" or "torch" in str(error):
            raise QgsProcessingException(torch_missing_message()) from error
        raise
    return detector


class DetectAlgorithm(AnomalyAlgorithm):
    INPUT = "INPUT"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    SCALE = "SCALE"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    OUTPUT_SCORE = "OUTPUT_SCORE"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
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
        "input's exact grid and CRS. An optional area of interest (MASK polygons, EXTENT) "
        "restricts the statistics, the scores and the polygons to it. Needs PyTorch (the CPU "
        "build is enough): when it is missing, the plugin offers to install it and this "
        "algorithm says how.")
    EXPECT = (
        "Two layers: '[input] - anomaly score' (transparent for ordinary pixels, red to "
        "bright yellow over the 5 % most anomalous ones) and '[input] - anomalies' "
        "(cyan outlines labelled with their rank, with score_max, score_mean, pixels, area, "
        "centroid and peak coordinates, lon / lat of the peak, area_m2 and top_share for "
        "triage). The detector flags what differs from its "
        "surroundings: small objects, unusual materials, hot spots; large homogeneous "
        "regions are background. Scores are relative to the scene: compare ranks, not "
        "absolute values, between scenes. The device used (cpu or cuda) is written to the "
        "log; on a 2-core CPU a 3-band 2000 x 2000 pixel raster takes about 2 seconds "
        "(1.8 to 1.9 megapixels per second with bfloat16 arithmetic, the first with "
        "polygons; make bench). Complex bands (SAR) are scored on their magnitude; a grey "
        "image saved in several integer bands (a grey PNG, JPEG or RGB GeoTIFF) is scored as "
        "its one grey band, and on integer rasters a step of one grey level between flat "
        "areas is not taken for an anomaly. "
        "Cancelling leaves no output file.")
    REFERENCE = (
        CITATION + " This plugin ships a compact network trained after that method; see "
        "weights/MODEL.md for its model card.")
    HELP_ANCHOR = "learned-detector-anomalydetect"
    PARAM_HELP = [
        (INPUT, "Raster to analyse (the active layer in the dialog)."),
        (BANDS, "Bands to use (optional, default: all bands)."),
    ] + AREA_HELP + [
        (TILE_SIZE, "Side of the square tiles scored at once, in analysed pixels (rounded up "
                    "to a multiple of 4). Larger tiles need more memory; smaller ones are used "
                    f"when a tile would not fit. Default {defaults.TILE_SIZE}."),
        (OVERLAP, "Context margin read around each tile, in analysed pixels (rounded up to a "
                  f"multiple of 4). Default {defaults.OVERLAP} covers the network's receptive "
                  "field: results "
                  "do not depend on the tile size."),
        (SCALE, "Resolution the detector analyses. Full resolution finds the smallest "
                "targets. 1/2 or 1/4 averages 2 x 2 or 4 x 4 pixel blocks first: faster on "
                "rasters of few bands (see the README's performance table), for very large "
                "or very high-resolution rasters (e.g. 10 cm orthophotos, where objects span "
                "many pixels); targets smaller than a block fade, and on hundreds of bands "
                "the block averaging costs more than it saves. The score map is always "
                "written on the input's grid."),
        (DEVICE, "auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu or cuda. The "
                 "device actually used is written to the log."),
        (PRECISION, "Arithmetic of the network's convolutions on the CPU. Fastest (default) "
                    "uses bfloat16 on CPUs that compute it natively (AVX512-BF16 or AMX): about 1.4 times as fast a "
                    "forward pass, scores within about 0.01 of float32's, tiles still "
                    "seamless; other CPUs and GPUs use float32. float32 gives the same scores "
                    "on every machine (up to float rounding). The arithmetic used is written "
                    "to the log."),
    ] + THRESHOLD_HELP + [
        (OUTPUT_SCORE, "Deviation score raster: float32 GeoTIFF in [0, 1], nodata -9999."),
        (OUTPUT_POLYGONS, "Ranked anomaly polygons (GeoPackage by default): rank (1 = most "
                          "anomalous), score_max, score_mean, pixels, area (map units²), "
                          "centroid_x, centroid_y, peak_x, peak_y (in the raster's CRS), lon, "
                          "lat (the peak in WGS 84), area_m2, top_share (as in "
                          "anomaly:polygonize)."),
        POINTS_HELP,
    ]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input_and_bands()
        add_area_parameters(self)
        # tiling changes speed and memory, not the result: Advanced section of the dialog
        for name, label, default, low, high in (
                (self.TILE_SIZE, "Tile size (pixels)", defaults.TILE_SIZE, 32, 8192),
                (self.OVERLAP, "Tile overlap (pixels)", defaults.OVERLAP, 0, 1024)):
            parameter = QgsProcessingParameterNumber(
                name, label, type=QgsProcessingParameterNumber.Integer, defaultValue=default,
                minValue=low, maxValue=high)
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterEnum(
            self.SCALE, "Analysis resolution", options=[label for _, label in SCALE_OPTIONS],
            defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        precision = QgsProcessingParameterEnum(
            self.PRECISION, "Arithmetic", options=[label for _, label in PRECISION_OPTIONS],
            defaultValue=0)
        precision.setFlags(precision.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(precision)
        add_threshold_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SCORE, "Anomaly score"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Anomalies", type=QgsProcessing.TypeVectorPolygon))
        add_points_output(self)
        add_polygon_outputs(self)
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, "Device used"))

    def process_core(self, parameters, context, feedback):
        src = self.raster_path(parameters, self.INPUT, context)
        bands = self.bands(parameters, self.BANDS, context)
        score_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_SCORE, context)
        polygons_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        points = points_path(self, parameters, context)
        self.check_outputs([(self.OUTPUT_SCORE, score_path), (self.OUTPUT_POLYGONS, polygons_path),
                            (OUTPUT_POINTS, points)])
        threshold = read_threshold_parameters(self, parameters, context)
        area = read_area(self, parameters, context, feedback, src)
        detector = _import_detector()
        progress, cancelled = self.callbacks(feedback)
        # the score map replaces a previous one only with its polygons: a failed run
        # (cancel, full disk) leaves both as they were
        stretch = stretch_stream(src) if self.may_load(context, score_path) else None
        with atomic_output(score_path) as partial:
            result, polygons, items = self._detect(detector, src, partial, polygons_path, bands,
                                                   threshold, area, parameters, context,
                                                   feedback, progress, cancelled, stretch)
        self.style_score_and_polygons(parameters, context, score_path, SCORE_SUFFIX,
                                      polygons_path, cancelled, stretch)
        return {self.OUTPUT_SCORE: score_path, self.OUTPUT_POLYGONS: polygons_path,
                **polygon_outputs(polygons), self.DEVICE_USED: result.device,
                **write_points(points, polygons_path, items, cancelled)}

    def _detect(self, detector, src, partial, polygons_path, bands, threshold, area,
                parameters, context, feedback, progress, cancelled, stretch):
        """Score ``src`` into ``partial`` (its blocks also to the ``stretch`` stream, if any)
        and write its polygons and provenance; returns the detection and polygon results
        and the provenance items."""
        stream = threshold_stream(threshold, src) if polygons_path else None
        try:
            result = detector.detect_raster(
                src, partial, bands=bands,
                tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
                overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
                scale=SCALE_OPTIONS[self.parameterAsEnum(parameters, self.SCALE, context)][0],
                device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                precision=PRECISION_OPTIONS[
                    self.parameterAsEnum(parameters, self.PRECISION, context)][0],
                progress=sub_progress(progress, 0.0, 0.9), is_cancelled=cancelled,
                window=area.window, mask_path=area.mask_path,
                observe=observer(stream, stretch))
        except (detector.WeightsError, ValueError) as error:
            if isinstance(error, AnomalyError):
                raise
            raise QgsProcessingException(str(error)) from error
        feedback.pushInfo(f"Scored on device '{result.device}' ({result.precision} "
                          f"convolutions) in {result.seconds:.1f} s "
                          f"(tiles {result.tile_size} px, margin {result.overlap} px, "
                          f"analysed at {'full' if result.scale == 1 else f'1/{result.scale}'} "
                          "resolution).")
        polygons, items = self.polygons_and_provenance(
            parameters, feedback, partial, polygons_path, threshold,
            {"device": result.device, "precision": result.precision,
             "weights_sha256": result.weights_sha256},
            f"Anomaly score ({self.id()}, weights {result.weights_sha256[:12]})",
            sub_progress(progress, 0.9, 1.0), cancelled, stream)
        return result, polygons, items
