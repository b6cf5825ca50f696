"""Plugin entry point: the Processing provider, and the desktop action.

The provider is registered in :meth:`initProcessing` (which qgis_process calls
without a GUI) and removed in :meth:`unload`. Nothing touches ``iface``
outside :meth:`initGui` and the actions it creates.

Desktop: a toolbar button and a *Raster* menu entry "Detect anomalies in
active layer" open the ``anomaly:detect`` dialog with the active raster
preselected. When PyTorch is missing, the message bar offers to install its
CPU build into the plugin-managed folder (see :mod:`.deps`). A second button and
menu entry, "Anomaly triage", shows the triage dock (see :mod:`.triage`).
"""

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsMessageLog, QgsTask

from . import deps

MENU = "&Anomaly Detector"
ACTION_TEXT = "Detect anomalies in active layer"
LOG_TAG = "Anomaly detection"
DETECT_ID = "anomaly:detect"
NOT_A_RASTER = ("The active layer is not a raster. Select a raster layer in the Layers "
                "panel, then click 'Detect anomalies in active layer' again.")


class TorchInstallTask(QgsTask):
    """Runs pip in the background; reports in the message bar when done."""

    def __init__(self, on_done):
        super().__init__("Installing PyTorch (CPU) for Anomaly Detector", QgsTask.CanCancel)
        self.on_done = on_done
        self.ok, self.output = False, ""

    def run(self):
        try:
            self.ok, self.output = deps.install_torch(is_cancelled=self.isCanceled)
        except Exception as error:  # noqa: BLE001 - reported to the user in finished()
            self.ok, self.output = False, str(error)
        return self.ok

    def finished(self, result):  # noqa: D401 - QGIS API
        self.on_done(self.ok, self.output)


class AnomalyDetectorPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None
        self.triage = None
        self.dialog = None
        self.install_task = None
        # PyTorch installed by the plugin lives in a folder of the profile:
        # make it importable for the desktop and for qgis_process alike.
        deps.add_deps_to_path()

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        from .provider import AnomalyProvider
        if self.provider is None:
            self.provider = AnomalyProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction
        from .provider import ICON_PATH
        self.action = QAction(QIcon(ICON_PATH), ACTION_TEXT, self.iface.mainWindow())
        self.action.setObjectName("anomalyDetectorDetectActiveLayer")
        self.action.setToolTip(f"{ACTION_TEXT} (Anomaly Detector)")
        self.action.triggered.connect(self.open_detect_dialog)
        self.iface.addToolBarIcon(self.action)  # the Plugins toolbar, shown by default
        self.iface.addPluginToRasterMenu(MENU, self.action)
        from .triage.dock import TriageEntry
        self.triage = TriageEntry(self.iface, MENU)
        if not deps.torch_available():
            self.offer_torch_install()

    def unload(self):
        if self.action is not None and self.iface is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None
        if self.triage is not None:
            self.triage.unload()
            self.triage = None
        if self.dialog is not None:
            self.dialog.close()
            self.dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- desktop action ----------------------------------------------------

    def active_raster(self):
        """The active layer if it is a raster; otherwise say so in the message bar."""
        layer = self.iface.activeLayer() if self.iface is not None else None
        if layer is None or layer.type() != QgsMapLayer.RasterLayer:
            if self.iface is not None:
                self.iface.messageBar().pushMessage("Anomaly Detector", NOT_A_RASTER,
                                                    level=Qgis.Warning, duration=8)
            return None
        return layer

    def open_detect_dialog(self):
        """Open the anomaly:detect dialog with the active raster preselected (non-modal)."""
        layer = self.active_raster()
        if layer is None:
            return None
        if not deps.torch_available():
            self.offer_torch_install()
            return None
        import processing
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = processing.createAlgorithmDialog(DETECT_ID, {"INPUT": layer})
        self.dialog.show()
        return self.dialog

    @staticmethod
    def detect_parameters(layer, **overrides):
        """Parameters the dialog starts with for ``layer`` (outputs: temporary files)."""
        params = {"INPUT": layer, "OUTPUT_SCORE": "TEMPORARY_OUTPUT",
                  "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"}
        params.update(overrides)
        return params

    def run_detect(self, layer, feedback=None, **overrides):
        """Run anomaly:detect on ``layer`` and load its named, styled outputs, as the
        dialog does (same algorithm and post-processors), without a dialog."""
        import processing
        return processing.runAndLoadResults(
            DETECT_ID, self.detect_parameters(layer, **overrides), feedback=feedback)

    # -- PyTorch -----------------------------------------------------------

    def offer_torch_install(self):
        """Message bar: PyTorch is missing, with a button that installs the CPU build."""
        if self.iface is None:
            return
        from qgis.PyQt.QtWidgets import QPushButton
        bar = self.iface.messageBar()
        text = ("The learned detector (Detect anomalies) needs PyTorch, which is not "
                f"installed. Install the CPU build (about 200 MB) into {deps.deps_folder()}? "
                "RX and polygonize work without it.")
        widget = bar.createMessage("Anomaly Detector", text)
        button = QPushButton("Install PyTorch", widget)
        button.setObjectName("anomalyDetectorInstallTorch")
        button.clicked.connect(lambda: (bar.popWidget(widget), self.install_torch()))
        widget.layout().addWidget(button)
        bar.pushWidget(widget, Qgis.Warning)
        QgsMessageLog.logMessage(deps.torch_missing_message(), LOG_TAG, Qgis.Warning)

    def install_torch(self):
        if self.install_task is not None:
            return
        self.install_task = TorchInstallTask(self._torch_installed)
        QgsApplication.taskManager().addTask(self.install_task)
        if self.iface is not None:
            self.iface.messageBar().pushMessage(
                "Anomaly Detector", "Installing PyTorch in the background; the task bar shows "
                "progress.", level=Qgis.Info, duration=8)

    def _torch_installed(self, ok, output):
        self.install_task = None
        QgsMessageLog.logMessage(output, LOG_TAG, Qgis.Info if ok else Qgis.Critical)
        if self.iface is None:
            return
        if ok and deps.torch_available():
            self.iface.messageBar().pushMessage(
                "Anomaly Detector", "PyTorch is installed. If 'Detect anomalies' still reports "
                "it missing, restart QGIS.", level=Qgis.Success, duration=10)
        else:
            self.iface.messageBar().pushMessage(
                "Anomaly Detector", "PyTorch could not be installed (details in the Log "
                "Messages panel, tab 'Anomaly detection'). Install it yourself with: "
                f"{deps.install_command_text()}", level=Qgis.Critical)
