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
from pathlib import Path
import pytest

from conftest import BUILD, DESKTOP_SCRIPT_HEAD, PYPATH, REPO, rgb_array, run_qgis_desktop

ARTIFACTS = BUILD / "test-artifacts"
SAMPLE = REPO / "resources" / "sample_thermal_baboons.tif"
TIMEOUT = 150

SCRIPT = DESKTOP_SCRIPT_HEAD + r'''
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

        # what a user without PyTorch sees: a message with an install button
        result["stage"] = "torch offer"
        plugin.offer_torch_install()
        settle()
        from qgis.PyQt.QtWidgets import QPushButton
        items = iface.messageBar().items()
        result["torch_offer"] = [i.text() for i in items]
        result["torch_button"] = [b.text() for i in items for b in i.findChildren(QPushButton)
                                  if b.objectName() == "anomalyDetectorInstallTorch"]
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

        result["stage"] = "dialog run"
        # click Run in the dialog: the algorithm runs in a background task
        plugin.action.trigger()
        settle()
        dialog = plugin.dialog
        dialog.setParameters({"INPUT": layer, "TILE_SIZE": 256, "TOP_N": 5,
                              "OUTPUT_SCORE": os.path.join(OUT, "dialog_score.tif"),
                              "OUTPUT_POLYGONS": os.path.join(OUT, "dialog_anomalies.gpkg")})
        before = set(QgsProject.instance().mapLayers())
        dialog.runAlgorithm()
        for _ in range(600):  # up to 60 s
            settle(100)
            if len(set(QgsProject.instance().mapLayers()) - before) >= 2:
                break
        added = [QgsProject.instance().mapLayer(i)
                 for i in set(QgsProject.instance().mapLayers()) - before]
        result["dialog_layers"] = sorted(l.name() for l in added)
        result["dialog_styles"] = sorted(
            l.renderer().type() + (":labels" if getattr(l, "labelsEnabled", lambda: False)() else "")
            for l in added)
        dialog.close()
        plugin.dialog = None
        QgsProject.instance().removeMapLayers([l.id() for l in added])
        settle()

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


def _colour_fraction(image, predicate):
    return float(predicate(image[..., 0].astype(int), image[..., 1].astype(int),
                           image[..., 2].astype(int)).mean())


def test_plugin_in_qgis_desktop(tmp_path):
    sample = tmp_path / "sample_thermal_baboons.tif"  # no sidecar next to resources/
    shutil.copy(SAMPLE, sample)
    result, out_dir = run_qgis_desktop(tmp_path, SCRIPT, {"ANOMALY_DESKTOP_INPUT": str(sample)},
                                       timeout=TIMEOUT)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in ("desktop.png", "window.png"):
        if (out_dir / name).exists():
            shutil.copy(out_dir / name, ARTIFACTS / name)

    # the plugin, its toolbar button and Raster-menu entry
    assert result["loaded"] and result["toolbar"]
    assert "Detect anomalies in active layer" in result["menu"]
    assert any("not a raster" in m for m in result["not_raster_message"])
    assert any("needs PyTorch" in m and "anomaly_detector_deps" in m for m in result["torch_offer"])
    assert result["torch_button"] == ["Install PyTorch"]
    # the action opens the detect dialog with the active raster preselected
    assert result["dialog_visible"]
    assert result["dialog_input"] == result["layer_id"]
    # Run in the dialog (background task): two named, styled layers
    assert result["dialog_layers"] == ["baboons - anomalies", "baboons - anomaly score"]
    assert result["dialog_styles"] == ["singleSymbol:labels", "singlebandpseudocolor"]
    # the same through the plugin's run_detect (screenshot below)
    assert result["count"] >= 1
    assert "baboons - anomaly score" in result["layers"]
    assert "baboons - anomalies" in result["layers"]
    # polygons drawn over the score, the score over the input
    assert result["tree_order"] == ["baboons - anomalies", "baboons - anomaly score", "baboons"]
    assert result["score_renderer"] == "singlebandpseudocolor"
    assert result["ramp_alpha"][0] == 0 and result["ramp_alpha"][-1] == 255
    assert result["labels"] and "centroid_x" in result["fields"]

    # a non-trivial screenshot: the anomaly colours are on the map
    arr = rgb_array(ARTIFACTS / "desktop.png")
    assert arr.shape[0] > 200 and arr.shape[1] > 200
    assert arr.std() > 10  # not a blank canvas
    # the score ramp (red to yellow) is the only strongly warm colour on a grey thermal image
    hot = _colour_fraction(arr, lambda r, g, b: (r > 150) & (r - b > 100))
    cyan = _colour_fraction(arr, lambda r, g, b: (r < 90) & (g > 200) & (b > 200))
    assert hot > 1e-4, f"no anomaly colour in the screenshot ({hot:.2e})"
    assert cyan > 1e-5, f"no polygon outline in the screenshot ({cyan:.2e})"


# --------------------------------------------------------------------------
# The same experience without a window (offscreen QgsApplication)

ALGS = ["anomaly:detect", "anomaly:rx", "anomaly:polygonize"]


@pytest.mark.parametrize("alg_id", ALGS)
def test_help_text(provider, alg_id):
    from qgis.core import QgsApplication
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    text = alg.shortHelpString()
    for pdef in alg.parameterDefinitions():
        assert f"<b>{pdef.name()}</b>" in text, pdef.name()
    assert "What to expect" in text and "Method" in text
    if alg_id == "anomaly:detect":
        assert "arXiv:2310.07511" in text and "IEEE Transactions on Image Processing" in text
    assert alg.helpUrl().startswith("file://") and "README.md" in alg.helpUrl()


def test_qgis_process_help_shows_the_help_text():
    from conftest import run_qgis_process
    run = run_qgis_process(["help", "anomaly:detect"])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for words in ("What to expect", "arXiv:2310.07511", "TOP_N", "centroid_x", "[input] - anomalies"):
        assert words in run.stdout, words


def _loaded(project, before):
    return {lid: project.mapLayer(lid) for lid in set(project.mapLayers()) - before}


def test_outputs_are_named_and_styled_when_loaded(tmp_path, provider):
    import processing
    from qgis.core import QgsProject, QgsRasterLayer
    from anomaly_detector.algorithms.styles import score_stretch
    from conftest import write_raster
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (3, 40, 36)).astype(np.float32)
    image[:, 20:22, 10:12] += 80
    src = write_raster(tmp_path / "field.tif", image)
    project = QgsProject.instance()
    before = set(project.mapLayers())
    try:
        # as the dialog runs it: the input is a layer of the project
        layer = QgsRasterLayer(src, "field scene")
        project.addMapLayer(layer)
        before.add(layer.id())
        processing.runAndLoadResults("anomaly:detect", {
            "INPUT": layer, "DEVICE": 1, "THRESHOLD": 0.01,
            "OUTPUT_SCORE": "TEMPORARY_OUTPUT", "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
        added = {l.name(): l for l in _loaded(project, before).values()}
        assert set(added) == {"field scene - anomaly score", "field scene - anomalies"}
        score, polygons = added["field scene - anomaly score"], added["field scene - anomalies"]
        renderer = score.renderer()
        assert renderer.type() == "singlebandpseudocolor"
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        assert items[0].color.alpha() == 0 and items[-1].color.alpha() == 255
        assert items[0].value < items[-1].value
        # gathered while the scores were written: what a pass over the file finds
        assert (items[0].value, items[-1].value) == pytest.approx(
            score_stretch(score.source()), rel=1e-12)
        assert polygons.labelsEnabled() and polygons.labeling().settings().fieldName == "rank"
        assert polygons.renderer().symbol().symbolLayer(0).brushStyle() == 0  # no fill
        order = [n.name() for n in project.layerTreeRoot().findLayers()]
        assert order.index("field scene - anomalies") < order.index("field scene - anomaly score")

        # RX: score style; polygonize on it: polygon style
        before = set(project.mapLayers())
        rx = processing.runAndLoadResults("anomaly:rx", {"INPUT": src, "OUTPUT": str(tmp_path / "rx.tif")})
        rx_layer = list(_loaded(project, before).values())
        # the input path is the project's layer "field scene": its name is used
        assert [l.name() for l in rx_layer] == ["field scene - RX score"]
        assert rx_layer[0].renderer().type() == "singlebandpseudocolor"
        items = rx_layer[0].renderer().shader().rasterShaderFunction().colorRampItemList()
        assert (items[0].value, items[-1].value) == pytest.approx(
            score_stretch(str(tmp_path / "rx.tif")), rel=1e-12)
        before = set(project.mapLayers())
        processing.runAndLoadResults("anomaly:polygonize", {
            "INPUT": rx_layer[0], "OUTPUT": str(tmp_path / "p.gpkg"), "TOP_N": 3})
        poly = list(_loaded(project, before).values())
        assert [l.name() for l in poly] == ["field scene - anomalies"]
        assert poly[0].labelsEnabled() and poly[0].featureCount() <= 3
        assert rx["OUTPUT"] == str(tmp_path / "rx.tif")
    finally:
        project.removeAllMapLayers()


def test_styles_apply_in_a_model(tmp_path, provider):
    """The post-processors travel with the outputs of a model (and of batch runs)."""
    import processing
    from qgis.core import QgsProcessingModelAlgorithm, QgsProject
    from conftest import write_raster
    image = np.random.default_rng(2).normal(0, 1, (2, 30, 30)).astype(np.float32)
    image[:, 5, 5] = 25
    src = write_raster(tmp_path / "scene.tif", image)
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(Path(__file__).parent / "data" / "rx_polygons.model3"))
    outputs = {p.name(): p for p in model.destinationParameterDefinitions()}
    params = {"input_raster": src}
    for name in outputs:
        params[name] = str(tmp_path / ("rx.tif" if "rx" in name else "p.gpkg"))
    project = QgsProject.instance()
    try:
        processing.runAndLoadResults(model, params)
        layers = list(project.mapLayers().values())
        rasters = [l for l in layers if l.type() == l.RasterLayer]
        vectors = [l for l in layers if l.type() == l.VectorLayer]
        assert rasters and rasters[0].renderer().type() == "singlebandpseudocolor"
        assert vectors and vectors[0].labelsEnabled()
    finally:
        project.removeAllMapLayers()


# --------------------------------------------------------------------------
# PyTorch: the dependency folder and the missing-torch sentence

def test_dependency_folder_is_added_to_sys_path(tmp_path, monkeypatch, qgis_app):
    import sys
    from qgis.core import QgsApplication
    import anomaly_detector
    from anomaly_detector import deps
    monkeypatch.delenv(deps.ENV_FOLDER, raising=False)
    default = deps.deps_folder()
    assert default == os.path.join(os.path.normpath(QgsApplication.qgisSettingsDirPath()),
                                   "python", "anomaly_detector_deps")
    folder = tmp_path / "deps"
    folder.mkdir()
    (folder / "anomaly_deps_probe.py").write_text("VALUE = 42\n")
    monkeypatch.setenv(deps.ENV_FOLDER, str(folder))
    monkeypatch.setattr(sys, "path", list(sys.path))
    anomaly_detector.classFactory(None)  # what QGIS and qgis_process call first
    assert sys.path[-1] == str(folder)
    import anomaly_deps_probe
    assert anomaly_deps_probe.VALUE == 42
    sys.modules.pop("anomaly_deps_probe", None)
    assert "--target" in deps.install_command() and deps.TORCH_INDEX in deps.install_command()


MISSING_TORCH = r'''
import json, os, sys, importlib.abc

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None

sys.meta_path.insert(0, BlockTorch())
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False)
app.initQgis()
sys.path.insert(0, "/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
import processing
import anomaly_detector
from anomaly_detector import deps
plugin = anomaly_detector.classFactory(None)
plugin.initProcessing()
src, out = sys.argv[1], sys.argv[2]
result = {"torch_available": deps.torch_available(),
          "algorithms": sorted(a.id() for a in QgsApplication.processingRegistry().providerById("anomaly").algorithms())}
try:
    processing.run("anomaly:detect", {"INPUT": src, "OUTPUT_SCORE": os.path.join(out, "s.tif"),
                                      "OUTPUT_POLYGONS": os.path.join(out, "p.gpkg")})
    result["detect"] = "ran"
except QgsProcessingException as error:
    result["detect"] = str(error)
rx = processing.run("anomaly:rx", {"INPUT": src, "OUTPUT": os.path.join(out, "rx.tif")})
result["rx"] = os.path.exists(rx["OUTPUT"])
result["torch_imported"] = "torch" in sys.modules
result["left"] = sorted(os.listdir(out))
print("RESULT" + json.dumps(result))
plugin.unload()
app.exitQgis()
'''


def test_missing_torch_gives_install_sentence_and_rx_still_works(tmp_path):
    import sys
    from conftest import write_raster
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(0).normal(size=(2, 12, 12)))
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "missing_torch.py"
    script.write_text(MISSING_TORCH)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join([str(PYPATH), sysconfig.get_paths()["purelib"]]))
    run = subprocess.run([sys.executable, str(script), src, str(out)], env=env,
                         capture_output=True, text=True, timeout=120)
    lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT")]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert result["torch_available"] is False and result["torch_imported"] is False
    assert "anomaly:detect" in result["algorithms"]  # still listed, explains itself
    message = result["detect"]
    assert "needs PyTorch" in message and "-m pip install" in message and "--target" in message
    assert "download.pytorch.org/whl/cpu" in message and "anomaly_detector_deps" in message
    assert "RX and polygonize work without it" in message
    assert result["rx"] is True
    assert result["left"] == ["rx.tif"]
