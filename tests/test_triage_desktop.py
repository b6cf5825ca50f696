"""The triage dock in the real QGIS desktop window (under Xvfb).

QGIS desktop runs anomaly:detect on the sample raster (the demo's settings), opens the
dock with the "Anomaly triage" toolbar action, and the analyst's steps are played
through the widgets: clicks on the list, keys to mark and to step, the read-only case,
the CSV export through its file dialog. The test then reads the GeoPackage and the CSV
files and checks the map view after every step; the window with the dock is saved as
build/test-artifacts/triage.png.
"""

import csv
import shutil

from conftest import BUILD, DESKTOP_SCRIPT_HEAD, REPO, rgb_array, run_qgis_desktop, vector_rows

ARTIFACTS = BUILD / "test-artifacts"
SAMPLE = REPO / "resources" / "sample_thermal_baboons.tif"

# (what the analyst does, the row that is current afterwards); rows are ranks - 1
STEPS = [("click 0", 0), ("C", 1), ("D", 2), ("U", 3), ("K", 2), ("P", 1), ("J", 2), ("N", 3),
         ("click 2", 2), ("C", 3), ("D", 4), ("click 3", 3), ("Backspace", 4), ("click 5", 5),
         ("D", 6), ("click 0", 0)]
REVIEWS = {1: "confirmed", 2: "dismissed", 3: "confirmed", 6: "dismissed"}
"""The reviews by rank that these steps leave (rank 4 was dismissed, then cleared)."""

SCRIPT = DESKTOP_SCRIPT_HEAD + r'''
STEPS = json.loads(os.environ["TRIAGE_STEPS"])

def main():
    try:
        import processing
        from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
        from qgis.PyQt.QtCore import QCoreApplication, QEvent, Qt
        from qgis.PyQt.QtTest import QTest
        from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox, QLineEdit
        from qgis.utils import iface, plugins
        project = QgsProject.instance()
        window = iface.mainWindow()
        window.resize(1280, 800)
        window.showMaximized()
        result["stage"] = "detect"
        raster = QgsRasterLayer(os.environ["TRIAGE_INPUT"], "baboons")
        project.addMapLayer(raster)
        gpkg = os.path.join(OUT, "anomalies.gpkg")
        processing.runAndLoadResults("anomaly:detect", {
            "INPUT": raster, "THRESHOLD_METHOD": 0, "THRESHOLD": 0.002, "MIN_AREA": 4,
            "OUTPUT_SCORE": os.path.join(OUT, "score.tif"), "OUTPUT_POLYGONS": gpkg})
        polygons = project.mapLayersByName("baboons - anomalies")[0]
        project.addMapLayer(QgsVectorLayer("Polygon?crs=EPSG:32736&field=id:integer",
                                           "plain polygons", "memory"))
        iface.setActiveLayer(raster)
        canvas = iface.mapCanvas()
        canvas.setExtent(raster.extent())
        canvas.refresh()
        settle()
        result["full_extent"] = canvas.extent().toRectF().getCoords()
        result["boxes"] = {f.id(): f.geometry().boundingBox().toRectF().getCoords()
                           for f in polygons.getFeatures()}

        result["stage"] = "open"
        plugin = plugins["anomaly_detector"]
        action = plugin.triage.action
        result["toolbar"] = action in iface.pluginToolBar().actions()
        result["menu"] = [a.text() for m in iface.rasterMenu().actions() if m.menu()
                          for a in m.menu().actions()]
        action.trigger()
        settle()
        dock = plugin.triage.dock
        result["opened"] = [dock.isVisible(), action.isChecked()]
        action.trigger()
        settle()
        result["closed"] = [dock.isVisible(), action.isChecked()]
        action.trigger()
        settle()
        window.activateWindow()
        settle()
        table = dock.table
        result["offered"] = [dock.layer_box.itemText(i) for i in range(dock.layer_box.count())]
        result["headers"] = [table.horizontalHeaderItem(c).text()
                             for c in range(table.columnCount())]

        def column(c):
            return [table.item(r, c).text() for r in range(table.rowCount())]

        def click_row(row):
            table.scrollToItem(table.item(row, 1))
            QTest.mouseClick(table.viewport(), Qt.LeftButton, Qt.NoModifier,
                             table.visualItemRect(table.item(row, 1)).center())

        result["stage"] = "steps"
        result["ranks"] = column(0)
        result["fids"] = [table.item(r, 0).data(Qt.UserRole) for r in range(table.rowCount())]
        result["views"] = []
        for step in STEPS:
            if step.startswith("click"):
                click_row(int(step.split()[1]))
            else:
                QTest.keyClick(QApplication.focusWidget(), getattr(Qt, "Key_" + step))
            settle(150)
            result["views"].append({"row": table.currentRow(),
                                    "selected": polygons.selectedFeatureIds(),
                                    "extent": canvas.extent().toRectF().getCoords()})
        result["review_column"] = column(5)
        result["summary"] = dock.summary_label.text()

        result["stage"] = "read-only"
        copy = QgsVectorLayer(gpkg, "read-only copy")
        copy.setReadOnly(True)
        project.addMapLayer(copy)
        dock.layer_box.setLayer(copy)
        settle()
        result["copy_reviews"] = column(5)
        iface.messageBar().clearWidgets()
        click_row(1)
        QTest.keyClick(table, Qt.Key_C)
        settle()
        result["read_only_message"] = [i.text() for i in iface.messageBar().items()]
        iface.messageBar().clearWidgets()
        dock.layer_box.setLayer(polygons)
        settle()

        result["stage"] = "export"
        dialogs = []

        def save_as(path):  # runs in the file dialog's event loop
            try:
                dialog = QApplication.activeModalWidget()
                dialogs.append([type(dialog).__name__, dialog.windowTitle(),
                                dialog.selectedFiles()[0]])
                name = dialog.findChild(QLineEdit, "fileNameEdit")
                name.clear()
                QTest.keyClicks(name, path)
                dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Save).click()
            except Exception:
                result["error"] = traceback.format_exc()
                finish()

        for name in ("all", "handed_on"):
            if name == "handed_on":
                QTest.mouseClick(dock.skip_dismissed, Qt.LeftButton)
            QTimer.singleShot(700, lambda name=name: save_as(os.path.join(OUT, name)))
            QTest.mouseClick(dock.export_button, Qt.LeftButton)
            settle()
            result[name] = [i.text() for i in iface.messageBar().items()]
            iface.messageBar().clearWidgets()
        result["dialogs"] = dialogs

        result["stage"] = "screenshot"
        project.removeMapLayers([copy.id(), project.mapLayersByName("plain polygons")[0].id()])
        iface.setActiveLayer(polygons)
        click_row(0)
        window.resizeDocks([dock], [470], Qt.Horizontal)
        settle(1500)  # the flash is over, the map is drawn
        canvas.waitWhileRendering()
        window.grab().save(os.path.join(OUT, "triage.png"))
        geometry = dock.geometry()
        result["dock_box"] = [geometry.x(), geometry.y(), geometry.width(), geometry.height()]
        project.removeAllMapLayers()  # closes the GeoPackage
        result["stage"] = "unload"
        plugin.triage.unload()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        result["after_unload"] = [bool(window.findChildren(type(dock))),
                                  action in iface.pluginToolBar().actions()]
        result["stage"] = "done"
    except Exception:
        result["error"] = traceback.format_exc()
    finish()

QTimer.singleShot(1500, main)
'''



def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_triage_dock_in_qgis_desktop(tmp_path):
    import json
    sample = tmp_path / "sample_thermal_baboons.tif"  # no sidecar next to resources/
    shutil.copy(SAMPLE, sample)
    result, out = run_qgis_desktop(tmp_path, SCRIPT, {
        "TRIAGE_INPUT": str(sample), "TRIAGE_STEPS": json.dumps([s for s, _ in STEPS])})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "triage.png", ARTIFACTS / "triage.png")

    # the action and the dock
    assert result["toolbar"] and "Anomaly triage" in result["menu"]
    assert result["opened"] == [True, True] and result["closed"] == [False, False]
    assert result["after_unload"] == [False, False]
    assert result["offered"] == ["baboons - anomalies"]  # not the raster, not plain polygons
    assert result["headers"] == ["Rank", "Score", "Area (m²)", "Lon", "Lat", "Review"]
    rows = vector_rows(out / "anomalies.gpkg")
    count = len(rows)
    assert count >= 7
    assert result["ranks"] == [str(r) for r in range(1, count + 1)]
    fids = result["fids"]
    assert [rows[fid]["rank"] for fid in fids] == list(range(1, count + 1))

    # every step: the expected candidate is current, selected, and the map shows it up close
    full_width = result["full_extent"][2] - result["full_extent"][0]
    previous = None
    for (step, row), view in zip(STEPS, result["views"]):
        assert view["row"] == row, step
        fid = fids[row]
        assert view["selected"] == [fid], step
        x0, y0, x1, y1 = view["extent"]
        peak = rows[fid]["peak_x"], rows[fid]["peak_y"]
        assert x0 < peak[0] < x1 and y0 < peak[1] < y1, step
        bx0, by0, bx1, by1 = result["boxes"][str(fid)]
        assert abs((x0 + x1) / 2 - (bx0 + bx1) / 2) < 0.01 * (x1 - x0), step
        assert abs((y0 + y1) / 2 - (by0 + by1) / 2) < 0.01 * (y1 - y0), step
        assert x1 - x0 < full_width / 3, step
        if previous is not None and previous[0] != row:
            assert view["extent"] != previous[1], step  # the map moved
        previous = row, view["extent"]

    # the decisions are in the GeoPackage, the list and the summary
    expected = [REVIEWS.get(rank) for rank in range(1, count + 1)]
    assert [rows[fid]["review"] for fid in fids] == expected
    assert result["review_column"] == [r or "" for r in expected]
    assert result["summary"] == (f"{count} candidates: 2 confirmed, 2 dismissed, 0 unsure, "
                                 f"{count - 4} to review")
    # another layer of the same file lists them too, and being read-only, says so
    assert result["copy_reviews"] == result["review_column"]
    assert any("'read-only copy' is read-only in this project" in m
               for m in result["read_only_message"])

    # the CSV files written through the file dialog: the layer's numbers, every digit
    assert [d[0] for d in result["dialogs"]] == ["QFileDialog", "QFileDialog"]
    assert result["dialogs"][0][2].endswith("baboons - anomalies review.csv")
    assert any(f"Wrote {count} candidates" in m for m in result["all"])
    assert any(f"Wrote {count - 2} candidates" in m for m in result["handed_on"])
    table = read_csv(out / "all.csv")
    assert [int(line["rank"]) for line in table] == list(range(1, count + 1))
    for line, fid in zip(table, fids):
        for name in ("lon", "lat", "score_max", "area_m2"):
            assert float(line[name]) == rows[fid][name], name
        assert line["review"] == (rows[fid]["review"] or "")
    handed_on = read_csv(out / "handed_on.csv")
    assert [line["rank"] for line in handed_on] == \
        [line["rank"] for line in table if line["review"] != "dismissed"]

    # the screenshot: the whole window, the dock filled, the map drawn
    image = rgb_array(ARTIFACTS / "triage.png")
    assert image.shape[0] >= 600 and image.shape[1] >= 1000
    assert image.std() > 10
    x, y, w, h = result["dock_box"]
    assert w >= 300 and h >= 300
    assert image[y:y + h, x:x + w].std() > 5  # text and rows, not an empty panel
