"""The base class of the plugin's Processing algorithms: help, outputs and their
styles, and the checks and error sentences every algorithm shares."""

import os

from osgeo import gdal
from qgis.core import (QgsMapLayer, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterBand, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingUtils)
from qgis.PyQt.QtCore import QCoreApplication, QThread, QUrl
from qgis.PyQt.QtGui import QIcon

from ..model.raster.errors import AnomalyError
from ..model.raster.files import check_output_paths, check_score_path, magnitude_vrt
from ..model.raster.io import open_raster_checked, parse_bands
from ..model.raster.memory import gdal_cache_capped
from ..model.raster.output import gdal_quiet
from ..model.vector.output import vector_driver
from ..model.vector.polygons import polygonize_scores
from .errors import forget_frames, processing_error, terminate_cleanly
from .layers import (SOURCE_PROPERTY, RasterInput, layer_path, loaded_or_quiet_layer,
                     release_quiet_layers)
from .params import THRESHOLD, check_threshold_parameters, polygon_summary
from .provenance import provenance, record_in_raster, record_in_vector
from .styles import POLYGONS_SUFFIX, layer_name, register_output, score_stretch

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icon.svg")

README_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")

CITATION = (
    "Li, Wang, Zhao, Zhang, Zhong, <i>Learning a Cross-modality Anomaly Detector for Remote "
    "Sensing Imagery</i>, IEEE Transactions on Image Processing, 2024 (arXiv:2310.07511).")

GROUPS = {
    "scoring": "Anomaly scores",
    "postprocessing": "Post-processing",
}


class AnomalyAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set the class attributes and implement ``process_core``.

    ``PARAM_HELP`` is a list of ``(NAME, description)`` pairs used to build the
    help text shown in the algorithm dialog and by ``qgis_process help``, with
    ``SUMMARY`` (what it does), ``EXPECT`` (what to expect) and ``REFERENCE``
    (where the method comes from).
    """

    NAME = ""
    DISPLAY_NAME = ""
    GROUP_ID = "scoring"
    SUMMARY = ""
    PARAM_HELP = []
    EXPECT = ""
    REFERENCE = ""
    HELP_ANCHOR = ""
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
        # one paragraph per line: the dialog shows each line as a paragraph and
        # qgis_process help prints them as they are
        lines = [self.SUMMARY, "<b>Parameters</b>"]
        for pname, text in self.PARAM_HELP:
            lines.append(f"<b>{pname}</b>: {text}")
        if self.EXPECT:
            lines += ["<b>What to expect</b>", self.EXPECT]
        if self.REFERENCE:
            lines += ["<b>Method</b>", self.REFERENCE]
        return "\n".join(lines)

    def helpUrl(self):  # noqa: N802
        """The plugin's README (shipped with it), at this algorithm's section."""
        if not os.path.isfile(README_PATH):
            return ""
        url = QUrl.fromLocalFile(README_PATH)
        if self.HELP_ANCHOR:
            url.setFragment(self.HELP_ANCHOR)
        return url.toString()

    def createInstance(self):  # noqa: N802
        return type(self)()

    def __init__(self):
        super().__init__()
        self._inputs, self._temporary, self._styles = [], [], []

    # -- output names and styles -------------------------------------------

    @staticmethod
    def may_load(context, destination):
        """Whether QGIS may load ``destination`` after the run.

        From a dialog the algorithm runs in a worker thread with a local context
        that does not list the layers to load: assume it will be loaded there.
        """
        if context.willLoadLayerOnCompletion(destination):
            return True
        app = QCoreApplication.instance()
        return app is not None and QThread.currentThread() != app.thread()

    def input_name(self, parameters, name, context):
        """Display name of a raster input: the layer name, else the file's base name."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is not None and layer.name() and not layer.customProperty(SOURCE_PROPERTY):
            return layer.name()
        path = self._inputs[0] if self._inputs else ""
        return os.path.splitext(os.path.basename(path))[0]

    def style_output(self, destination, kind, name, **kwargs):
        """Name and style ``destination`` once QGIS loads it (registered in
        :meth:`postProcessAlgorithm`, which runs in the main thread with the
        context that loads the layers)."""
        self._styles.append((destination, kind, name, kwargs))

    def style_score_and_polygons(self, parameters, context, score_path, score_suffix,
                                 polygons_path=None, is_cancelled=None, stretch=None):
        """Name and style a score raster ('<input> - <score_suffix>', stretched to its
        scores, under the polygons; ``stretch``: the :func:`.styles.stretch_stream` that
        saw them written) and its polygons ('<input> - anomalies', if any)."""
        input_name = self.input_name(parameters, "INPUT", context)
        if self.may_load(context, score_path):
            low, high = score_stretch(score_path, is_cancelled=is_cancelled, stream=stretch)
            self.style_output(score_path, "score", layer_name(input_name, score_suffix),
                              low=low, high=high, below=layer_name(input_name, POLYGONS_SUFFIX))
        if polygons_path:
            self.style_output(polygons_path, "polygons", layer_name(input_name, POLYGONS_SUFFIX))

    def polygons_and_provenance(self, parameters, feedback, score_path, polygons_path,
                                threshold, facts, description, progress, is_cancelled,
                                stream=None):
        """The ranked polygons of a finished score raster (when ``polygons_path`` is given;
        ``stream``: the :func:`.params.threshold_stream` that saw its scores written),
        then how the run was made (``facts`` and the polygons' threshold and counts)
        written into both files. Returns ``(polygons or None, provenance items)``."""
        polygons = None
        if polygons_path:
            polygons = polygonize_scores(score_path, polygons_path, is_cancelled=is_cancelled,
                                         progress=progress, stream=stream, **threshold)
            feedback.pushInfo(polygon_summary(polygons))
            facts = {"valid_pixels": polygons.n_valid, **facts,
                     "threshold": polygons.threshold, "flagged_pixels": polygons.n_flagged,
                     "group_count": polygons.groups}
        items = provenance(self.id(), parameters, **facts)
        record_in_raster(score_path, items, description)
        if polygons_path:
            record_in_vector(polygons_path, items)
        return polygons, items

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        for destination, kind, name, kwargs in self._styles:
            register_output(context, destination, kind, name, **kwargs)
        self._styles = []
        return {}

    # -- shared by subclasses -----------------------------------------------

    def add_input_and_bands(self):
        """Add the INPUT raster and its BANDS (optional, several) parameters."""
        self.addParameter(RasterInput(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands (default: all)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True))

    @staticmethod
    def callbacks(feedback):
        """``(progress, is_cancelled)`` callbacks for the QGIS-free core."""
        if feedback is None:
            return None, None
        return (lambda f: feedback.setProgress(100.0 * f)), feedback.isCanceled

    def raster_path(self, parameters, name, context):
        """File path of a raster layer parameter (GDAL-readable), or a clear error."""
        value = parameters.get(name) if isinstance(parameters, dict) else None
        layer = None
        if isinstance(value, str) and value:
            # (a path checked in another thread's context, a GDAL virtual path, a subdataset)
            layer = loaded_or_quiet_layer(value, context)
        if layer is None or not layer.isValid():
            layer = self.parameterAsRasterLayer(parameters, name, context) or layer
        if layer is None or not layer.isValid():
            raise QgsProcessingException(
                f"The {name} raster '{value}' could not be opened. Check that the file exists "
                "and is a raster GDAL can read.")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"The {name} layer must be a raster file read by GDAL (for example a GeoTIFF); "
                f"'{layer.name()}' uses the '{layer.providerType()}' provider. "
                "Save it as a GeoTIFF first.")
        path = layer_path(layer)
        self._inputs.append(path)
        return self._magnitude_if_complex(path)

    def _magnitude_if_complex(self, path):
        """``path``, or a temporary in-memory VRT of its bands' magnitude when they are
        complex (e.g. SAR single-look complex): see :func:`magnitude_vrt`."""
        vrt = magnitude_vrt(path)
        if vrt is None:
            return path
        self._temporary.append(vrt)
        return vrt

    def temporary_path(self, name):
        """A new file name ending in ``name`` in Processing's temporary folder; the file is
        removed after the run."""
        path = QgsProcessingUtils.generateTempFilename(name)
        self._temporary.append(path)
        return path

    def check_outputs(self, outputs, inputs=None):
        """Refuse output files that are an input, each other, or in a folder that cannot be written.

        ``outputs`` is a list of ``(PARAMETER_NAME, path)``; ``inputs`` the input rasters'
        paths (default: those read by :meth:`raster_path`).
        """
        check_output_paths(outputs, self._inputs if inputs is None else inputs)
        for name, path in outputs:
            if isinstance(self.parameterDefinition(name), QgsProcessingParameterRasterDestination):
                check_score_path(path, name)
            elif path:
                vector_driver(path)

    def bands(self, parameters, name, context):
        """The band numbers of a BANDS parameter (None = all bands), or a clear error."""
        value = parameters.get(name) if isinstance(parameters, dict) else None
        if value is None or isinstance(value, (str, int, float, list, tuple)):
            return parse_bands(value)
        return self.parameterAsInts(parameters, name, context) or None

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Explain in one sentence why a raster input or a threshold cannot be used."""
        try:
            ok, message = self._check_parameters(parameters, context)
        except Exception as err:  # noqa: BLE001 - a sentence, never a traceback
            ok, message = False, (f"The parameters could not be checked ({type(err).__name__}: "
                                  f"{err}). Check the input raster and the parameter values.")
        if not ok:
            release_quiet_layers(context)
        return ok, message

    def _check_parameters(self, parameters, context):
        """``(ok, sentence)`` for the thresholds, bands, raster inputs and outputs."""
        if self.parameterDefinition(THRESHOLD) is not None:
            message = check_threshold_parameters(parameters)
            if message:
                return False, message
        bands = None
        for name in ("BANDS", "BAND"):
            if self.parameterDefinition(name) is not None:
                try:
                    bands = self.bands(parameters, name, context)
                except AnomalyError as err:
                    return False, str(err)
        inputs = []
        message = self._check_rasters(parameters, context, inputs)
        if message:
            return False, message
        # refused here, before any work, the sentence is said once (also by qgis_process)
        outputs = [(p.name(), self.parameterAsOutputLayer(parameters, p.name(), context))
                   for p in self.destinationParameterDefinitions()]
        try:
            if bands and inputs:
                open_raster_checked(inputs[0], bands)
            self.check_outputs(outputs, inputs)
        except (AnomalyError, QgsProcessingException) as err:
            return False, str(err)
        return super().checkParameterValues(parameters, context)

    def _check_rasters(self, parameters, context, paths):
        """A sentence saying why a raster input cannot be used, else None; the inputs'
        GDAL paths are appended to ``paths``. New files are loaded as layers that write
        no statistics (see :func:`raster_layer`)."""
        for pdef in self.parameterDefinitions():
            if not isinstance(pdef, QgsProcessingParameterRasterLayer):
                continue
            value = parameters.get(pdef.name()) if isinstance(parameters, dict) else None
            if isinstance(value, QgsMapLayer):
                layer = value
            elif isinstance(value, str) and value:
                layer = loaded_or_quiet_layer(value, context)
                if layer is None:  # not a raster: a missing file, or a vector file for QGIS
                    try:
                        open_raster_checked(value.split("|")[0])
                    except AnomalyError as err:
                        if "not a raster" not in str(err):
                            return str(err)
                    layer = QgsProcessingUtils.mapLayerFromString(value, context)
            else:
                continue
            if layer is not None and layer.isValid():
                if layer.type() != QgsMapLayer.RasterLayer:
                    return (f"'{layer.name()}' is a vector layer, but {pdef.name()} needs a "
                            "raster layer. Choose a raster (rasterize the vector layer first "
                            "if needed).")
                if layer.providerType() == "gdal":
                    paths.append(layer_path(layer))
                continue
            if not isinstance(value, str):
                continue
            try:
                open_raster_checked(value.split("|")[0])
            except AnomalyError as err:
                return str(err)
            paths.append(value.split("|")[0])
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self._inputs, self._temporary, self._styles = [], [], []
        try:
            return self._process(parameters, context, feedback)
        except BaseException as error:
            release_quiet_layers(context)
            forget_frames(error)
            raise
        finally:
            with gdal_quiet():  # a temporary file that was never written is no error
                for path in self._temporary:
                    gdal.Unlink(path)
            self._temporary = []

    def _process(self, parameters, context, feedback):
        """:meth:`process_core`, with every error turned into one sentence."""
        try:
            with terminate_cleanly(), gdal_cache_capped():
                return self.process_core(parameters, context, feedback)
        except QgsProcessingException:
            raise
        except Exception as err:  # noqa: BLE001 - a sentence, never a traceback
            raise processing_error(err) from err

    def process_core(self, parameters, context, feedback):
        raise NotImplementedError
