"""Shared boilerplate of the plugin's Processing algorithms."""

import os
import signal
import threading
import traceback
from contextlib import contextmanager

import numpy as np
from osgeo import gdal
from qgis.core import (QgsCoordinateTransformContext, QgsMapLayer, QgsMapLayerFactory,
                       QgsMapLayerType, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingUtils)
from qgis.PyQt.QtCore import QCoreApplication, QThread, QUrl
from qgis.PyQt.QtGui import QIcon

from ..model.raster.errors import AnomalyError, Cancelled
from ..model.raster.files import check_output_paths, check_score_path, magnitude_vrt
from ..model.raster.io import open_raster_checked, parse_bands
from ..model.vector.output import vector_driver
from .params import THRESHOLD, check_threshold_parameters
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


def forget_frames(error):
    """Clear the variables of the finished frames behind ``error`` and its causes.

    They hold the run's datasets; a traceback kept in a reference cycle would
    otherwise close them only when Python collects it, possibly after QGIS shut GDAL
    down (a crash at exit).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def layer_path(layer):
    """The GDAL path of a raster layer (the file behind a :func:`raster_layer`)."""
    return layer.customProperty(SOURCE_PROPERTY) or layer.source().split("|")[0]


class Terminated(Cancelled):
    """The process received SIGTERM during a run."""


@contextmanager
def terminate_cleanly():
    """Turn SIGTERM into :class:`Terminated` during a run in the main thread (qgis_process),
    so that partial files are removed before the process ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("Stopped by a termination signal; no output was written.")
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
                                 polygons_path=None, is_cancelled=None):
        """Name and style a score raster ('<input> - <score_suffix>', stretched to its
        scores, under the polygons) and its polygons ('<input> - anomalies', if any)."""
        input_name = self.input_name(parameters, "INPUT", context)
        if self.may_load(context, score_path):
            low, high = score_stretch(score_path, is_cancelled=is_cancelled)
            self.style_output(score_path, "score", layer_name(input_name, score_suffix),
                              low=low, high=high, below=layer_name(input_name, POLYGONS_SUFFIX))
        if polygons_path:
            self.style_output(polygons_path, "polygons", layer_name(input_name, POLYGONS_SUFFIX))

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        for destination, kind, name, kwargs in self._styles:
            register_output(context, destination, kind, name, **kwargs)
        self._styles = []
        return {}

    # -- shared by subclasses -----------------------------------------------

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
            for path in self._temporary:
                gdal.Unlink(path)
            self._temporary = []

    def _process(self, parameters, context, feedback):
        """:meth:`process_core`, with every error turned into one sentence."""
        try:
            with terminate_cleanly():
                return self.process_core(parameters, context, feedback)
        except AnomalyError as err:
            raise QgsProcessingException(str(err)) from err
        except Terminated as err:
            raise QgsProcessingException(str(err)) from err
        except Cancelled as err:
            raise QgsProcessingException("Cancelled by the user; no output was written.") from err
        except np.linalg.LinAlgError as err:
            raise QgsProcessingException(
                f"The statistics of this raster could not be inverted ({err}). Check it for "
                "extreme or corrupt values, or choose other BANDS.") from err
        except MemoryError as err:
            raise QgsProcessingException(
                "Not enough memory for this raster. Choose a smaller TILE_SIZE (anomaly:detect) "
                "or fewer BANDS, or close other programs, then run again.") from err
        except QgsProcessingException:
            raise
        except RuntimeError as err:  # GDAL/OGR errors (exceptions enabled), torch errors
            text = str(err).strip() or type(err).__name__
            if "out of memory" in text.lower():
                raise QgsProcessingException(
                    f"Not enough memory ({text.splitlines()[0]}). Choose a smaller TILE_SIZE "
                    "or the cpu DEVICE, then run again.") from err
            raise QgsProcessingException(
                f"A raster could not be read or written ({text}). Check that the input file "
                "is complete and not damaged, and that the output disk has free space.") from err
        except OSError as err:
            raise QgsProcessingException(
                f"A file could not be read or written ({err}). Check the paths, the "
                "permissions and the free disk space.") from err
        except Exception as err:  # noqa: BLE001 - a sentence, never a traceback
            raise QgsProcessingException(
                f"The run stopped on an unexpected error ({type(err).__name__}: {err}). No "
                "output was written; please report it with the output of gdalinfo for the "
                "input.") from err

    def process_core(self, parameters, context, feedback):
        raise NotImplementedError
