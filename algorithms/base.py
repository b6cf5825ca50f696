"""Shared boilerplate of the plugin's Processing algorithms."""

import os
import tempfile
import uuid
from xml.sax.saxutils import escape

from osgeo import gdal
from qgis.core import (QgsMapLayer, QgsProcessingAlgorithm, QgsProcessingException, QgsRasterLayer,
                       QgsProcessingParameterRasterLayer, QgsProcessingUtils)
from qgis.PyQt.QtCore import QCoreApplication, QThread, QUrl
from qgis.PyQt.QtGui import QIcon

from ..model.engine import Cancelled, RasterInputError, open_raster_checked
from .params import THRESHOLD, check_threshold_parameters
from .styles import register_output

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icon.svg")

README_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")

CITATION = (
    "Li, Wang, Zhao, Zhang, Zhong, <i>Learning a Cross-modality Anomaly Detector for Remote "
    "Sensing Imagery</i>, IEEE Transactions on Image Processing, 2024 (arXiv:2310.07511).")

GROUPS = {
    "scoring": "Anomaly scores",
    "postprocessing": "Post-processing",
}


def _writable(folder):
    """Whether a file can be created in ``folder`` (tried, not guessed from permissions)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".anomaly-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


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
        if layer is not None and layer.name():
            return layer.name()
        path = self._inputs[0] if self._inputs else ""
        return os.path.splitext(os.path.basename(path))[0]

    def style_output(self, destination, kind, name, **kwargs):
        """Name and style ``destination`` once QGIS loads it (registered in
        :meth:`postProcessAlgorithm`, which runs in the main thread with the
        context that loads the layers)."""
        self._styles.append((destination, kind, name, kwargs))

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
        layer = self.parameterAsRasterLayer(parameters, name, context)
        value = parameters.get(name) if isinstance(parameters, dict) else None
        if layer is None and isinstance(value, str) and value.startswith("/vsi"):
            # a GDAL virtual path registered in another thread's context
            layer = QgsRasterLayer(value, os.path.basename(value), "gdal")
        if layer is None or not layer.isValid():
            raise QgsProcessingException(
                f"The {name} raster '{value}' could not be opened. Check that the file exists "
                "and is a raster GDAL can read.")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"The {name} layer must be a raster file read by GDAL (for example a GeoTIFF); "
                f"'{layer.name()}' uses the '{layer.providerType()}' provider. "
                "Save it as a GeoTIFF first.")
        path = layer.source().split("|")[0]
        self._inputs.append(path)
        return self._magnitude_if_complex(path)

    def _magnitude_if_complex(self, path):
        """``path``, or a temporary VRT of its bands' magnitude when they are complex.

        Complex rasters (e.g. SAR single-look complex, CInt16/CFloat32) are scored
        on their amplitude |z| with GDAL's ``mod`` pixel function; the VRT has the
        input's grid and CRS and lives in memory (``/vsimem/``) during the run.
        """
        ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY) if path else None
        if ds is None:
            return path
        complex_types = (gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64)
        bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
        if not any(b.DataType in complex_types for b in bands):
            return path
        parts = [f'<VRTDataset rasterXSize="{ds.RasterXSize}" rasterYSize="{ds.RasterYSize}">']
        if ds.GetProjection():
            parts.append(f"<SRS>{escape(ds.GetProjection())}</SRS>")
        gt = ds.GetGeoTransform(can_return_null=True)
        if gt:
            parts.append("<GeoTransform>" + ", ".join(repr(float(v)) for v in gt) + "</GeoTransform>")
        for i, band in enumerate(bands, start=1):
            source = (f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}'
                      f"</SourceFilename><SourceBand>{i}</SourceBand></SimpleSource>")
            nodata = band.GetNoDataValue()
            nd = "" if nodata is None else f"<NoDataValue>{abs(nodata)!r}</NoDataValue>"
            if band.DataType in complex_types:
                parts.append(f'<VRTRasterBand dataType="Float64" band="{i}" '
                             f'subClass="VRTDerivedRasterBand">{nd}'
                             "<PixelFunctionType>mod</PixelFunctionType>"
                             f"<SourceTransferType>CFloat64</SourceTransferType>{source}"
                             "</VRTRasterBand>")
            else:
                dtype = gdal.GetDataTypeName(band.DataType)
                parts.append(f'<VRTRasterBand dataType="{dtype}" band="{i}">{nd}{source}'
                             "</VRTRasterBand>")
        parts.append("</VRTDataset>")
        ds = None
        vrt = f"/vsimem/anomaly_detector/magnitude-{uuid.uuid4().hex}.vrt"
        gdal.FileFromMemBuffer(vrt, "".join(parts).encode("utf-8"))
        self._temporary.append(vrt)
        return vrt

    def check_outputs(self, outputs):
        """Refuse output files that are an input, each other, or in a folder that cannot be written.

        ``outputs`` is a list of ``(PARAMETER_NAME, path)``.
        """
        inputs = [os.path.realpath(p) for p in self._inputs if p and not p.startswith("/vsi")]
        seen = {}
        for name, path in outputs:
            if not path:
                continue
            if path.startswith("/vsi"):
                raise QgsProcessingException(
                    f"The {name} output '{path}' is a virtual GDAL path. Choose a file on disk.")
            real = os.path.realpath(path)
            if real in inputs:
                raise QgsProcessingException(
                    f"The {name} output '{path}' is the input raster itself. Choose another "
                    "file name: inputs are never overwritten.")
            if real in seen:
                raise QgsProcessingException(
                    f"The {seen[real]} and {name} outputs are the same file '{path}'. Choose "
                    "a different file name for each output.")
            seen[real] = name
            folder = os.path.dirname(real)
            if not os.path.isdir(folder):
                raise QgsProcessingException(
                    f"The folder of the {name} output, '{folder}', does not exist. Choose an "
                    "existing folder or create it first.")
            if not _writable(folder):
                raise QgsProcessingException(
                    f"The folder of the {name} output, '{folder}', is not writable. Choose a "
                    "folder where you can write.")

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Explain in one sentence why a raster input or a threshold cannot be used."""
        if self.parameterDefinition(THRESHOLD) is not None:
            message = check_threshold_parameters(parameters)
            if message:
                return False, message
        for pdef in self.parameterDefinitions():
            if not isinstance(pdef, QgsProcessingParameterRasterLayer):
                continue
            value = parameters.get(pdef.name()) if isinstance(parameters, dict) else None
            if isinstance(value, QgsMapLayer):
                layer = value
            elif isinstance(value, str) and value:
                layer = QgsProcessingUtils.mapLayerFromString(value, context)
            else:
                continue
            if layer is not None and layer.isValid():
                if layer.type() != QgsMapLayer.RasterLayer:
                    return False, (
                        f"'{layer.name()}' is a vector layer, but {pdef.name()} needs a raster "
                        "layer. Choose a raster (rasterize the vector layer first if needed).")
                continue
            if not isinstance(value, str):
                continue
            try:
                open_raster_checked(value.split("|")[0])
            except RasterInputError as err:
                return False, str(err)
            if value.startswith("/vsi"):
                # QGIS resolves only paths that exist on disk: register GDAL virtual
                # paths (/vsimem/, /vsizip/, /vsicurl/...) as layers of this run
                layer = QgsRasterLayer(value, os.path.basename(value), "gdal")
                if layer.isValid():
                    context.temporaryLayerStore().addMapLayer(layer)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self._inputs, self._temporary, self._styles = [], [], []
        try:
            return self.process_core(parameters, context, feedback)
        except RasterInputError as err:
            raise QgsProcessingException(str(err)) from err
        except Cancelled as err:
            raise QgsProcessingException("Cancelled by the user; no output was written.") from err
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
        finally:
            for path in self._temporary:
                gdal.Unlink(path)
            self._temporary = []

    def process_core(self, parameters, context, feedback):
        raise NotImplementedError
