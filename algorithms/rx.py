"""anomaly:rx - global RX anomaly score."""

from qgis.core import QgsProcessingParameterRasterDestination

from ..model.classic.rx import rx_score_raster
from ..model.vector.threshold import observer
from .area import AREA_HELP, add_area_parameters, read_area
from .base import AnomalyAlgorithm
from .provenance import provenance, record_in_raster
from .styles import layer_name, score_stretch, stretch_stream


class RxAlgorithm(AnomalyAlgorithm):
    INPUT = "INPUT"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"

    NAME = "rx"
    DISPLAY_NAME = "RX anomaly score"
    GROUP_ID = "scoring"
    TAGS = ["rx", "reed-xiaoli", "mahalanobis", "hyperspectral", "multispectral"]
    SUMMARY = (
        "Global RX (Reed-Xiaoli) anomaly detector: the score of a pixel is its Mahalanobis "
        "distance to the mean of the raster under the raster's covariance, "
        "sqrt((x - mean)<sup>T</sup> C<sup>-1</sup> (x - mean)) (one band: |x - mean| / std, "
        "in standard deviations). Two streaming passes, tile by tile: the raster is "
        "never loaded at once. Nodata and non-finite pixels are ignored and stay nodata "
        "(-9999) in the output, which has the input's exact grid and CRS. An optional area "
        "of interest (MASK polygons, EXTENT) restricts the statistics and the scores to "
        "it. Needs nothing beyond QGIS (no PyTorch).")
    EXPECT = (
        "A score layer named '[input] - RX score', styled transparent for ordinary "
        "pixels and red to bright yellow over the 5 % most anomalous ones. The scale grows "
        "with the number of bands: over the raster the root mean square of the scores is "
        "the square root of the number of bands (by construction; less when bands are "
        "combinations of others), so read a score against sqrt(bands), or flag a share of "
        "the pixels with a top-fraction threshold rather than a fixed score. On the 4 "
        "hyperspectral dev scenes (64 to 189 bands; tools/score_scales.py) the median pixel "
        "scored 0.93 to 0.98 x sqrt(bands) and the 0.5 % highest scores began at 1.7 to "
        "2.1 x sqrt(bands); on the 189-band scene every pixel scored between 8.4 and 45.1 "
        "(sqrt(189) = 13.7). RX finds pixels whose spectrum differs from the scene as a "
        "whole; it ignores spatial context, so large uniform objects may score low. Complex "
        "bands (SAR) are scored on their magnitude. Follow with 'Anomaly polygons from a "
        "score raster' to get ranked polygons.")
    REFERENCE = (
        "Reed and Yu, <i>Adaptive multiple-band CFAR detection of an optical pattern with "
        "unknown spectral distribution</i>, IEEE Transactions on Acoustics, Speech, and "
        "Signal Processing 38(10), 1990.")
    HELP_ANCHOR = "anomalyrx--rx-anomaly-score"
    PARAM_HELP = [
        (INPUT, "Raster to score (any number of bands, any data type; complex bands are "
                "scored on their magnitude)."),
        (BANDS, "Bands to use (optional, default: all bands)."),
    ] + AREA_HELP + [
        (OUTPUT, "Score raster: float32 GeoTIFF, nodata -9999, higher = more anomalous."),
    ]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input_and_bands()
        add_area_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "RX score"))

    def process_core(self, parameters, context, feedback):
        src = self.raster_path(parameters, self.INPUT, context)
        bands = self.bands(parameters, self.BANDS, context)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        self.check_outputs([(self.OUTPUT, dst)])
        area = read_area(self, parameters, context, feedback, src)
        progress, cancelled = self.callbacks(feedback)
        stretch = stretch_stream(src) if self.may_load(context, dst) else None
        mean, cov, n = rx_score_raster(src, dst, bands, progress=progress,
                                       is_cancelled=cancelled, window=area.window,
                                       mask_path=area.mask_path, observe=observer(stretch))
        feedback.pushInfo(f"RX statistics from {n} valid pixels over {len(mean)} band(s).")
        record_in_raster(dst, provenance(self.id(), parameters, valid_pixels=n),
                         f"RX score ({self.id()})")
        if stretch is not None:  # QGIS will load it
            low, high = score_stretch(dst, is_cancelled=cancelled, stream=stretch)
            self.style_output(dst, "score",
                              layer_name(self.input_name(parameters, self.INPUT, context),
                                         "RX score"), low=low, high=high)
        return {self.OUTPUT: dst}
