"""anomaly:local_rx and anomaly:local_contrast - classic window detectors, optional polygons."""

from typing import Optional, Tuple

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination)

from ..model.classic.local_baselines import (CONTRAST_SCALES, GUARD_WINDOW as DEFAULT_GUARD,
                                             LARGEST_WINDOW, OUTER_WINDOW as DEFAULT_OUTER,
                                             local_contrast_score_raster, local_rx_score_raster,
                                             parse_scales, window_problem)
from ..model.raster.output import atomic_output
from ..model.raster.progress import sub_progress
from ..model.vector.threshold import observer
from .base import AnomalyAlgorithm
from .params import (THRESHOLD_HELP, add_polygon_outputs, add_threshold_parameters,
                     polygon_outputs, read_threshold_parameters, threshold_stream)
from .styles import stretch_stream

POLYGONS_HELP = (
    "Optional ranked anomaly polygons of the score (GeoPackage by default; none unless "
    "a file is given): the fields and the THRESHOLD_METHOD, THRESHOLD, MIN_AREA and TOP_N "
    "parameters are those of anomaly:polygonize.")
OUTPUT_HELP = [
    ("OUTPUT", "Score raster: float32 GeoTIFF, nodata -9999, higher = more anomalous."),
    ("OUTPUT_POLYGONS", POLYGONS_HELP),
]


class LocalScoreAlgorithm(AnomalyAlgorithm):
    """A score raster from a window detector, and its polygons when asked for.

    Subclasses set ``SCORE_NAME`` and implement :meth:`add_window_parameters`,
    :meth:`window_problem` and :meth:`score`.
    """

    INPUT = "INPUT"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    SCORE_NAME = ""
    GROUP_ID = "scoring"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input_and_bands()
        self.add_window_parameters()
        add_threshold_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.SCORE_NAME[0].upper() + self.SCORE_NAME[1:]))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Anomalies", type=QgsProcessing.TypeVectorPolygon,
            optional=True, createByDefault=False))
        add_polygon_outputs(self)

    def add_window_parameters(self) -> None:
        raise NotImplementedError

    def window_problem(self, parameters) -> Optional[str]:
        """A sentence saying what to change in the window parameters, or None."""
        raise NotImplementedError

    def score(self, src, dst, bands, parameters, context, progress, cancelled, observe
              ) -> Tuple[int, dict]:
        """Write the score raster ``dst`` (each block written passed to ``observe``, if
        given); return the valid pixels and other facts worth recording (named as outputs,
        e.g. ``{"COMPONENTS": 10}``)."""
        raise NotImplementedError

    @staticmethod
    def raw(parameters, name, default):
        """A parameter's value as given (``default`` when absent or empty)."""
        value = parameters.get(name) if isinstance(parameters, dict) else None
        return default if value is None or value == "" else value

    def _check_parameters(self, parameters, context):
        problem = self.window_problem(parameters)
        if problem:
            return False, problem
        return super()._check_parameters(parameters, context)

    def process_core(self, parameters, context, feedback):
        problem = self.window_problem(parameters)  # also for runs that skip the check
        if problem:
            raise QgsProcessingException(problem)
        src = self.raster_path(parameters, self.INPUT, context)
        bands = self.bands(parameters, self.BANDS, context)
        score_path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        polygons_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        self.check_outputs([(self.OUTPUT, score_path), (self.OUTPUT_POLYGONS, polygons_path)])
        threshold = read_threshold_parameters(self, parameters, context)
        progress, cancelled = self.callbacks(feedback)
        share = 0.9 if polygons_path else 1.0
        stream = threshold_stream(threshold, src) if polygons_path else None
        stretch = stretch_stream(src) if self.may_load(context, score_path) else None
        # the score replaces a previous one only when complete, with its polygons and metadata
        with atomic_output(score_path) as partial:
            valid, extra = self.score(src, partial, bands, parameters, context,
                                      sub_progress(progress, 0.0, share), cancelled,
                                      observer(stream, stretch))
            feedback.pushInfo(f"Scored {valid} valid pixels" + "".join(
                f", {name} {value}" for name, value in extra.items()) + ".")
            polygons, _ = self.polygons_and_provenance(
                parameters, feedback, partial, polygons_path, threshold,
                {"valid_pixels": valid, **extra}, f"{self.SCORE_NAME} ({self.id()})",
                sub_progress(progress, share, 1.0), cancelled, stream)
        outputs = {self.OUTPUT: score_path, "VALID_PIXELS": valid, **extra}
        if polygons is not None:
            outputs.update(polygon_outputs(polygons))
            outputs[self.OUTPUT_POLYGONS] = polygons_path
        self.style_score_and_polygons(parameters, context, score_path, self.SCORE_NAME,
                                      polygons_path, cancelled, stretch)
        return outputs


def _window_parameter(name, label, default):
    return QgsProcessingParameterNumber(
        name, label, type=QgsProcessingParameterNumber.Integer, defaultValue=default,
        minValue=1, maxValue=LARGEST_WINDOW)


class LocalRxAlgorithm(LocalScoreAlgorithm):
    GUARD_WINDOW = "GUARD_WINDOW"
    OUTER_WINDOW = "OUTER_WINDOW"
    COMPONENTS = "COMPONENTS"

    NAME = "local_rx"
    DISPLAY_NAME = "Local RX anomaly score (dual window)"
    SCORE_NAME = "local RX score"
    TAGS = ["rx", "local rx", "dual window", "mahalanobis", "hyperspectral", "multispectral",
            "target"]
    SUMMARY = (
        "Dual-window local RX: the background of each pixel is the ring between a guard "
        "window and an outer window centred on it; the score is the pixel's squared "
        "Mahalanobis distance to that ring's mean under the ring's own covariance. The bands "
        "are first turned into whitened principal components of the whole raster (all of "
        "them with 1 to 3 bands, else the 10 strongest), and 0.001 is added to the ring's "
        "covariance (the ridge). The guard window keeps a target's own pixels out of its "
        "background, so targets up to about the guard's size stand out from their "
        "surroundings even where the scene as a whole is varied. Two streaming passes, tile "
        "by tile with a margin of half the outer window, so the map equals scoring the whole "
        "raster at once; nodata and non-finite pixels are left out of the statistics and of "
        "every window and stay nodata (-9999). The output has the input's exact grid and "
        "CRS. Needs nothing beyond QGIS (no PyTorch).")
    EXPECT = (
        "A score layer named '[input] - local RX score' (transparent for ordinary pixels, "
        "red to bright yellow over the 5 % most anomalous ones), and the polygons "
        "'[input] - anomalies' when OUTPUT_POLYGONS is given. The score is a squared distance "
        "in units of the local variance: compare it with K, the number of components used "
        "(written to the log and to the output's metadata as COMPONENTS). On the 40 labelled "
        "dev scenes of four modalities (tools/score_scales.py) the median pixel scored at "
        "most 0.8 x K, the 0.5 % highest scores began between 1.5 x K and 19.1 x K, and any "
        "score above 20 x K was in the top 0.5 % of its scene. Objects larger than the guard "
        "window reach into their own background ring and score lower.")
    REFERENCE = (
        "Reed and Yu, <i>Adaptive multiple-band CFAR detection of an optical pattern with "
        "unknown spectral distribution</i>, IEEE Transactions on Acoustics, Speech, and "
        "Signal Processing 38(10), 1990 (RX), with the dual (guard and outer) window of "
        "Kwon and Nasrabadi, <i>Kernel RX-algorithm</i>, IEEE Transactions on Geoscience "
        "and Remote Sensing 43(2), 2005.")
    HELP_ANCHOR = "anomalylocal_rx--local-rx-anomaly-score-dual-window"

    PARAM_HELP = [
        (LocalScoreAlgorithm.INPUT, "Raster to score (any number of bands, any data type)."),
        (LocalScoreAlgorithm.BANDS, "Bands to use (optional, default: all bands)."),
        (GUARD_WINDOW, f"Side of the guard window in pixels, odd (default {DEFAULT_GUARD}): "
                       "pixels this close are left out of the background; make it a little "
                       "larger than the targets."),
        (OUTER_WINDOW, f"Side of the outer window in pixels, odd and larger than the guard "
                       f"(default {DEFAULT_OUTER}): the background is the ring between the two "
                       "windows."),
    ] + THRESHOLD_HELP + OUTPUT_HELP

    def add_window_parameters(self) -> None:
        self.addParameter(_window_parameter(self.GUARD_WINDOW, "Guard window (pixels, odd)",
                                            DEFAULT_GUARD))
        self.addParameter(_window_parameter(self.OUTER_WINDOW, "Outer window (pixels, odd)",
                                            DEFAULT_OUTER))

    def initAlgorithm(self, config=None):  # noqa: N802
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputNumber(self.COMPONENTS, "Whitened components used"))

    def window_problem(self, parameters):
        return window_problem(self.raw(parameters, self.GUARD_WINDOW, DEFAULT_GUARD),
                              self.raw(parameters, self.OUTER_WINDOW, DEFAULT_OUTER))

    def score(self, src, dst, bands, parameters, context, progress, cancelled, observe):
        result = local_rx_score_raster(
            src, dst, bands, guard=self.parameterAsInt(parameters, self.GUARD_WINDOW, context),
            outer=self.parameterAsInt(parameters, self.OUTER_WINDOW, context),
            progress=progress, is_cancelled=cancelled, observe=observe)
        return result.valid_pixels, {self.COMPONENTS: result.components}


class LocalContrastAlgorithm(LocalScoreAlgorithm):
    SCALES = "SCALES"

    NAME = "local_contrast"
    DISPLAY_NAME = "Local contrast anomaly score (multi-scale)"
    SCORE_NAME = "local contrast"
    TAGS = ["local contrast", "lcm", "small target", "infrared", "thermal", "sar", "visible"]
    SUMMARY = (
        "Multi-scale local contrast of the band mean: the selected bands are averaged and "
        "standardised (mean 0, standard deviation 1 over the raster); for each centre box "
        "side s of SCALES, the mean of the s x s box around a pixel is compared with the "
        "ring between the (2s+1) x (2s+1) and (4s+3) x (4s+3) boxes: |centre mean - ring "
        "mean| / (ring standard deviation + 0.01); the score is the largest over the scales. "
        "Small bright or dark spots (a hot animal, a vessel on water) stand out; it uses "
        "brightness, not spectra. Two streaming passes, tile by tile with a margin of the "
        "widest ring's half-side, so the map equals scoring the whole raster at once; nodata "
        "and non-finite pixels are left out of the statistics and of every box and stay "
        "nodata (-9999). The output has the input's exact grid and CRS. Needs nothing beyond "
        "QGIS (no PyTorch).")
    EXPECT = (
        "A score layer named '[input] - local contrast' (transparent for ordinary pixels, "
        "red to bright yellow over the 5 % most anomalous ones), and the polygons "
        "'[input] - anomalies' when OUTPUT_POLYGONS is given. The score is in units of the "
        "surrounding ring's standard deviation: on the 40 labelled dev scenes of four "
        "modalities (tools/score_scales.py) the median pixel scored at most 0.96, the 0.5 % "
        "highest scores began between 1.6 and 7.5, and any score above 7.5 was in the top "
        "0.5 % of its scene. Flat areas (quantised or saturated) have a ring without "
        "variation, so a small step there scores very high. Objects larger than the "
        "largest scale are background.")
    REFERENCE = (
        "After Chen, Li, Wei, Xia, Tang, <i>A local contrast method for small infrared target "
        "detection</i>, IEEE Transactions on Geoscience and Remote Sensing 52(1), 2014; this "
        "form (centre against ring in units of the ring's standard deviation, several "
        "scales) is the local contrast baseline of the plugin's evaluation "
        "(model/classic/baselines.py).")
    HELP_ANCHOR = "anomalylocal_contrast--local-contrast-anomaly-score-multi-scale"

    PARAM_HELP = [
        (LocalScoreAlgorithm.INPUT, "Raster to score (any number of bands, any data type; "
                                    "the bands are averaged)."),
        (LocalScoreAlgorithm.BANDS, "Bands to average (optional, default: all bands)."),
        (SCALES, "Centre box sides in pixels, odd, separated by commas (default "
                 f"{','.join(map(str, CONTRAST_SCALES))}; empty = default): include sides near "
                 "the targets' size."),
    ] + THRESHOLD_HELP + OUTPUT_HELP

    def add_window_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(
            self.SCALES, "Centre box sides (pixels, odd, comma-separated)",
            defaultValue=",".join(map(str, CONTRAST_SCALES)), optional=True))

    def window_problem(self, parameters):
        try:
            parse_scales(self.raw(parameters, self.SCALES, CONTRAST_SCALES))
        except ValueError as error:
            return str(error)
        return None

    def score(self, src, dst, bands, parameters, context, progress, cancelled, observe):
        scales = parse_scales(self.parameterAsString(parameters, self.SCALES, context) or
                              CONTRAST_SCALES)
        result = local_contrast_score_raster(src, dst, bands, scales=scales,
                                             progress=progress, is_cancelled=cancelled,
                                             observe=observe)
        return result.valid_pixels, {}
