"""The plugin in the real QGIS desktop window (under Xvfb).

QGIS desktop starts with a private profile in which the plugin is enabled,
loads the sample raster, triggers the toolbar action (the anomaly:detect
dialog opens with the raster preselected), then runs anomaly:detect through
the plugin's own code path (the same algorithm and post-processors as the
dialog), checks the two named and styled layers, and saves a screenshot of the
map canvas to build/test-artifacts/desktop.png.
"""

import json
import os
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

from conftest import BUILD, PYPATH, REPO

ARTIFACTS = BUILD / "test-artifacts"
SAMPLE = REPO / "resources" / "sample_thermal_baboons.tif"
TIMEOUT = 150

SCRIPT = r'''
import json, os, sys, traceback
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication

OUT = os.environ["ANOMALY_DESKTOP_OUT"]
result = {"stage": "start"}

def finish():
    with open(os.path.join(OUT, "result.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    sys.stdout.flush()
    os._exit(0)

def settle(ms=300):
    from qgis.PyQt.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()

def main():
    try:
        from qgis.core import QgsProject, QgsRasterLayer, QgsProcessingFeedback
        from qgis.utils import iface, plugins
        import qgis.utils
        result["stage"] = "plugin"
        result["loaded"] = "anomaly_detector" in plugins
        plugin = plugins["anomaly_detector"]
        window = iface.mainWindow()
        window.resize(1280, 800)
        window.showMaximized()
        toolbar = iface.pluginToolBar()
        result["toolbar"] = bool(plugin.action in toolbar.actions() and toolbar.isVisible())
        menu_texts = []
        for act in iface.rasterMenu().actions():
            if act.menu() is not None:
                menu_texts += [a.text() for a in act.menu().actions()]
        result["menu"] = menu_texts

        # the action with a vector-free, empty project: says so in the message bar
        result["stage"] = "no layer"
        plugin.action.trigger()
        settle()
        items = iface.messageBar().items()
        result["not_raster_message"] = [i.text() for i in items]
        iface.messageBar().clearWidgets()

        result["stage"] = "layer"
        layer = QgsRasterLayer(os.environ["ANOMALY_DESKTOP_INPUT"], "baboons")
        QgsProject.instance().addMapLayer(layer)
        iface.setActiveLayer(layer)
        result["stage"] = "dialog"
        plugin.action.trigger()
        settle()
        dialog = plugin.dialog
        result["dialog_visible"] = bool(dialog is not None and dialog.isVisible())
        if dialog is not None:
            params = dialog.mainWidget().createProcessingParameters()
            value = params.get("INPUT")
            result["dialog_input"] = value.id() if hasattr(value, "id") else str(value)
            result["layer_id"] = layer.id()
            result["dialog_title"] = dialog.windowTitle()
            dialog.close()
            plugin.dialog = None

        result["stage"] = "run"
        feedback = QgsProcessingFeedback()
        out = plugin.run_detect(layer, feedback=feedback, TILE_SIZE=256,
                                OUTPUT_SCORE=os.path.join(OUT, "score.tif"),
                                OUTPUT_POLYGONS=os.path.join(OUT, "anomalies.gpkg"))
        result["count"] = out["COUNT"] if out else None
        layers = QgsProject.instance().mapLayers().values()
        result["layers"] = sorted(l.name() for l in layers)
        result["tree_order"] = [n.name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
        for l in layers:
            if l.name().endswith("anomaly score"):
                result["score_renderer"] = l.renderer().type()
                shader = l.renderer().shader().rasterShaderFunction()
                result["ramp_alpha"] = [i.color.alpha() for i in shader.colorRampItemList()]
            if l.name().endswith("anomalies"):
                result["labels"] = bool(l.labelsEnabled())
                result["fields"] = [f.name() for f in l.fields()]
                result["fill"] = l.renderer().symbol().symbolLayer(0).brushStyle()

        result["stage"] = "render"
        canvas = iface.mapCanvas()
        canvas.setExtent(layer.extent())
        canvas.refreshAllLayers()
        settle(500)
        canvas.waitWhileRendering()
        settle(500)
        canvas.saveAsImage(os.path.join(OUT, "desktop.png"))
        window.grab().save(os.path.join(OUT, "window.png"))
        result["stage"] = "done"
    except Exception:
        result["error"] = traceback.format_exc()
    finish()

QTimer.singleShot(1500, main)
'''


def _desktop_env(tmp_path, out_dir):
    config = tmp_path / "qgis-config"
    ini = config / "profiles" / "default" / "QGIS"
    ini.mkdir(parents=True)
    (ini / "QGIS3.ini").write_text(
        "[PythonPlugins]\nanomaly_detector=true\n\n"
        "[qgis]\nshowTips322=false\ncheckVersion=false\n"
        "allowCrashReporting=false\n\n"
        "[core]\nLayers\\\\AutoUpdateRecentProjects=false\n")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # the desktop needs a (virtual) display
    env.update({
        "QGIS_PLUGINPATH": str(PYPATH),
        "QGIS_CUSTOM_CONFIG_PATH": str(config),
        "XDG_RUNTIME_DIR": str(runtime),
        "PYTHONPATH": os.pathsep.join([str(PYPATH), sysconfig.get_paths()["purelib"]]),
        "ANOMALY_DESKTOP_OUT": str(out_dir),
    })
    return env


def _colour_fraction(image, predicate):
    return float(predicate(image[..., 0].astype(int), image[..., 1].astype(int),
                           image[..., 2].astype(int)).mean())


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="QGIS desktop (qgis) or Xvfb (xvfb-run) is not installed")
def test_plugin_in_qgis_desktop(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sample = tmp_path / "sample_thermal_baboons.tif"  # no sidecar next to resources/
    shutil.copy(SAMPLE, sample)
    script = tmp_path / "desktop_script.py"
    script.write_text(SCRIPT)
    env = _desktop_env(tmp_path, out_dir)
    env["ANOMALY_DESKTOP_INPUT"] = str(sample)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo",
           "--noversioncheck", "--code", str(script)]
    try:
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                             start_new_session=True)
        log = run.stdout[-3000:] + run.stderr[-3000:]
    except subprocess.TimeoutExpired as err:
        log = f"timed out after {TIMEOUT} s: {err}"
    result_file = out_dir / "result.json"
    assert result_file.exists(), log
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    assert result["stage"] == "done", result

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in ("desktop.png", "window.png"):
        if (out_dir / name).exists():
            shutil.copy(out_dir / name, ARTIFACTS / name)

    # the plugin, its toolbar button and Raster-menu entry
    assert result["loaded"] and result["toolbar"]
    assert "Detect anomalies in active layer" in result["menu"]
    assert any("not a raster" in m for m in result["not_raster_message"])
    # the action opens the detect dialog with the active raster preselected
    assert result["dialog_visible"]
    assert result["dialog_input"] == result["layer_id"]
    # two named, styled layers
    assert result["count"] >= 1
    assert "baboons - anomaly score" in result["layers"]
    assert "baboons - anomalies" in result["layers"]
    # polygons drawn over the score, the score over the input
    assert result["tree_order"] == ["baboons - anomalies", "baboons - anomaly score", "baboons"]
    assert result["score_renderer"] == "singlebandpseudocolor"
    assert result["ramp_alpha"][0] == 0 and result["ramp_alpha"][-1] == 255
    assert result["labels"] and "centroid_x" in result["fields"]

    # a non-trivial screenshot: the anomaly colours are on the map
    from qgis.PyQt.QtGui import QImage
    image = QImage(str(ARTIFACTS / "desktop.png")).convertToFormat(QImage.Format_RGB888)
    assert image.width() > 200 and image.height() > 200
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    arr = arr[:, :image.width() * 3].reshape(image.height(), image.width(), 3)
    assert arr.std() > 10  # not a blank canvas
    # the score ramp (red to yellow) is the only strongly warm colour on a grey thermal image
    hot = _colour_fraction(arr, lambda r, g, b: (r > 150) & (r - b > 100))
    cyan = _colour_fraction(arr, lambda r, g, b: (r < 90) & (g > 200) & (b > 200))
    assert hot > 1e-4, f"no anomaly colour in the screenshot ({hot:.2e})"
    assert cyan > 1e-5, f"no polygon outline in the screenshot ({cyan:.2e})"
