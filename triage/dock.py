"""The "Anomaly triage" dock: the candidates of an anomaly polygon layer by rank; the map
follows the current candidate; keys mark and step (the logic lives in :mod:`.review`).

Keys while the dock has the focus: J or N next, K or P previous, C confirmed, D
dismissed, U unsure, Backspace clears. Marking moves on to the next candidate.
"""

import os

from qgis.core import (Qgis, QgsCoordinateTransform, QgsCsException, QgsMapLayerProxyModel,
                       QgsProject, QgsProviderRegistry, QgsVectorLayer)
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor, QIcon, QKeySequence
from qgis.PyQt.QtWidgets import (QAbstractItemView, QAction, QCheckBox, QFileDialog, QHBoxLayout,
                                 QLabel, QPushButton, QTableWidget, QTableWidgetItem,
                                 QToolButton, QVBoxLayout, QWidget)

from .review import (REVIEW_FIELD, Candidate, candidates, export_csv, is_anomaly_layer,
                     set_review, summary, view_extent)

ACTION_TEXT = "Anomaly triage"
TITLE = "Anomaly Detector"
ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "triage.svg")

COLUMNS = (("Rank", "rank", "{}"), ("Score", "score_max", "{:.4g}"),
           ("Area (m²)", "area_m2", "{:.3g}"), ("Lon", "lon", "{:.6f}"),
           ("Lat", "lat", "{:.6f}"), ("Review", REVIEW_FIELD, "{}"))
"""Table columns: header, attribute, format."""

REVIEW_COLORS = {"confirmed": QColor(0, 140, 60), "dismissed": QColor(130, 130, 130),
                 "unsure": QColor(210, 120, 0)}

KEYS = (("Confirm", ("C",), "confirmed"), ("Dismiss", ("D",), "dismissed"),
        ("Unsure", ("U",), "unsure"), ("Clear", ("Backspace",), ""),
        ("Previous", ("K", "P"), -1), ("Next", ("J", "N"), 1))
"""Buttons and their keys: a review to write, or a step through the list."""


class TriageDock(QgsDockWidget):
    """Lists one anomaly layer's candidates; writes decisions; exports the list."""

    def __init__(self, iface, parent=None):
        super().__init__(ACTION_TEXT, parent)
        self.setObjectName("anomalyDetectorTriageDock")
        self.iface = iface
        self.layer = None
        self.found = []
        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.layer_box = QgsMapLayerComboBox(body)
        self.layer_box.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.layer_box.setToolTip("Anomaly polygons written by anomaly:detect or "
                                  "anomaly:polygonize (layers with a rank field)")
        layout.addWidget(self.layer_box)
        self.table = QTableWidget(0, len(COLUMNS), body)
        self.table.setHorizontalHeaderLabels([c[0] for c in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        layout.addWidget(self.table)
        layout.addLayout(self._key_buttons(body))
        keys = QLabel("Keys: " + ", ".join(f"{'/'.join(k)} {t.lower()}" for t, k, _ in KEYS), body)
        keys.setWordWrap(True)
        layout.addWidget(keys)
        self.summary_label = QLabel(body)
        layout.addWidget(self.summary_label)
        export_row = QHBoxLayout()
        self.export_button = QPushButton("Export CSV…", body)
        self.export_button.clicked.connect(self.export_dialog)
        self.skip_dismissed = QCheckBox("Leave out dismissed", body)
        export_row.addWidget(self.export_button)
        export_row.addWidget(self.skip_dismissed)
        export_row.addStretch()
        layout.addLayout(export_row)
        self.setWidget(body)

        self.table.currentCellChanged.connect(self._current_cell_changed)
        self.layer_box.layerChanged.connect(self.set_layer)
        QgsProject.instance().layersAdded.connect(self.list_anomaly_layers)
        self.list_anomaly_layers()
        active = iface.activeLayer()
        if is_anomaly_layer(active):
            self.layer_box.setLayer(active)
        self.set_layer(self.layer_box.currentLayer())

    def _key_buttons(self, parent):
        """One button per :data:`KEYS` entry; its keys work anywhere in the dock."""
        row = QHBoxLayout()
        for text, keys, effect in KEYS:
            action = QAction(text, self)
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
            action.setToolTip(f"{text} ({' or '.join(keys)})")
            if isinstance(effect, int):
                action.triggered.connect(lambda _=False, step=effect: self.step(step))
            else:
                action.triggered.connect(lambda _=False, status=effect: self.mark(status))
            self.addAction(action)
            button = QToolButton(parent)
            button.setDefaultAction(action)
            row.addWidget(button)
        return row

    def _current_cell_changed(self, row, _column, previous_row, _previous_column):
        if row != previous_row:
            self.show_candidate(row)

    def list_anomaly_layers(self, *_):
        """Offer only anomaly layers (polygons with a rank field)."""
        others = [layer for layer in QgsProject.instance().mapLayers().values()
                  if isinstance(layer, QgsVectorLayer) and not is_anomaly_layer(layer)]
        self.layer_box.setExceptedLayerList(others)

    def message(self, text, level=Qgis.Warning):
        self.iface.messageBar().pushMessage(TITLE, text, level=level, duration=8)

    # -- list ------------------------------------------------------------

    def set_layer(self, layer):
        """List the candidates of ``layer`` (nothing for another kind of layer); no
        candidate of a newly chosen layer is current until one is clicked or stepped to."""
        layer = layer if is_anomaly_layer(layer) else None
        changed, self.layer = layer is not self.layer, layer
        self.found = candidates(layer) if layer is not None else []
        self.table.blockSignals(True)
        if changed:
            self.table.setCurrentCell(-1, -1)
            self.table.clearSelection()
        self.table.setRowCount(len(self.found))
        for row in range(len(self.found)):
            self._fill_row(row)
        self.table.blockSignals(False)
        self.table.resizeColumnsToContents()
        self._update_summary()

    def _fill_row(self, row: int):
        candidate: Candidate = self.found[row]
        for column, (_, name, form) in enumerate(COLUMNS):
            value = candidate.values.get(name)
            item = QTableWidgetItem("" if value is None else form.format(value))
            item.setData(Qt.UserRole, candidate.fid)
            if name == REVIEW_FIELD and candidate.review in REVIEW_COLORS:
                item.setForeground(REVIEW_COLORS[candidate.review])
            self.table.setItem(row, column, item)

    def _update_summary(self):
        self.summary_label.setText(summary(self.found) if self.layer is not None else
                                   "Choose a layer of anomaly polygons (with a rank field).")

    # -- map -------------------------------------------------------------

    def show_candidate(self, row: int):
        """Select candidate ``row`` on its layer, zoom the map to it and flash it."""
        if self.layer is None or not 0 <= row < len(self.found):
            return
        fid = self.found[row].fid
        self.layer.selectByIds([fid])
        canvas = self.iface.mapCanvas()
        transform = QgsCoordinateTransform(self.layer.crs(), canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        try:
            canvas.setExtent(transform.transformBoundingBox(view_extent(self.layer, fid)))
        except QgsCsException as error:
            self.message(f"Candidate {self.found[row].values.get('rank')} cannot be shown in "
                         f"the map's CRS ({error}).")
            return
        canvas.refresh()
        canvas.flashGeometries([self.layer.getFeature(fid).geometry()], self.layer.crs())

    def step(self, delta: int):
        """Move the current candidate by ``delta`` rows (from none: to the first)."""
        if not self.found:
            return
        row = self.table.currentRow()
        row = 0 if row < 0 else min(max(row + delta, 0), len(self.found) - 1)
        self.table.setCurrentCell(row, 0)

    def mark(self, status: str):
        """Write ``status`` for the current candidate, then move on to the next one."""
        row = self.table.currentRow()
        if self.layer is None or row < 0:
            self.message("Select a candidate in the list first.")
            return
        try:
            set_review(self.layer, self.found[row].fid, status)
        except ValueError as error:
            self.message(str(error))
            return
        self.found[row].values[REVIEW_FIELD] = status or None
        self._fill_row(row)
        self._update_summary()
        self.step(1)

    # -- export ----------------------------------------------------------

    def export_dialog(self):
        """Ask for a CSV file name, then export the list."""
        if self.layer is None:
            self.message("Choose a layer of anomaly polygons first.")
            return
        source = QgsProviderRegistry.instance().decodeUri(
            self.layer.providerType(), self.layer.source()).get("path") or ""
        name = self.layer.name().replace(os.sep, "_") + " review.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export the reviewed candidates",
                                              os.path.join(os.path.dirname(source), name),
                                              "CSV files (*.csv)")
        if not path:
            return
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:
            count = export_csv(self.layer, path, skip_dismissed=self.skip_dismissed.isChecked())
        except ValueError as error:
            self.message(str(error))
            return
        self.message(f"Wrote {count} candidates to {path}.", Qgis.Success)


class TriageEntry:
    """The checkable "Anomaly triage" action (toolbar and plugin menu) that shows the dock."""

    def __init__(self, iface, menu: str):
        self.iface, self.menu, self.dock = iface, menu, None
        self.action = QAction(QIcon(ICON_PATH), ACTION_TEXT, iface.mainWindow())
        self.action.setObjectName("anomalyDetectorTriage")
        self.action.setToolTip(f"{ACTION_TEXT}: review the anomaly candidates one by one")
        self.action.setCheckable(True)
        self.action.toggled.connect(self.show)
        iface.addToolBarIcon(self.action)
        iface.addPluginToRasterMenu(menu, self.action)

    def show(self, visible: bool):
        if visible and self.dock is None:
            self.dock = TriageDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.closedStateChanged.connect(lambda closed: self.action.setChecked(not closed))
        if self.dock is not None:
            self.dock.setUserVisible(visible)
        if visible:
            self.dock.table.setFocus()  # the keys work at once

    def unload(self):
        self.iface.removeToolBarIcon(self.action)
        self.iface.removePluginRasterMenu(self.menu, self.action)
        self.action.deleteLater()
        if self.dock is not None:
            QgsProject.instance().layersAdded.disconnect(self.dock.list_anomaly_layers)
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
