"""`make package` builds a ZIP that loads as a plugin from a temporary plugin path."""

import configparser
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO, qgis_process_env, read_raster, run_qgis_process, write_raster

REQUIRED = ["name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
            "repository", "tracker", "homepage", "category", "icon", "tags", "experimental",
            "deprecated", "changelog", "hasProcessingProvider"]

LOAD_SCRIPT = r"""
import json, sys
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
sys.path.insert(0, sys.argv[1])
import anomaly_detector
plugin = anomaly_detector.classFactory(None)
plugin.initProcessing()
reg = QgsApplication.processingRegistry()
prov = reg.providerById("anomaly")
out = {"file": anomaly_detector.__file__, "name": prov.name(),
       "algs": sorted(a.id() for a in prov.algorithms()), "torch": "torch" in sys.modules}
import anomaly_detector.triage.dock, anomaly_detector.triage.review  # the desktop's triage
plugin.unload()
out["after_unload"] = reg.providerById("anomaly") is not None
print("RESULT" + json.dumps(out))
app.exitQgis()
"""


@pytest.fixture(scope="module")
def plugin_zip():
    r = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    zips = sorted((REPO / "build").glob("anomaly_detector-*.zip"))
    assert zips
    return zips[-1]


def test_zip_layout(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as z:
        names = z.namelist()
        meta = z.read("anomaly_detector/metadata.txt").decode()
    assert {n.split("/")[0] for n in names} == {"anomaly_detector"}
    for must in ("__init__.py", "plugin.py", "metadata.txt", "LICENSE", "resources/icon.svg",
                 "model/raster/pipeline.py", "algorithms/rx.py", "triage/dock.py",
                 "resources/triage.svg"):
        assert f"anomaly_detector/{must}" in names
    for bad in ("tests/", "Makefile", ".ci/", ".git", "__pycache__", ".venv", "build/",
                "model/training/"):
        assert not any(bad in n for n in names), bad
    cp = configparser.ConfigParser()
    cp.read_string(meta)
    for key in REQUIRED:
        assert cp.get("general", key, fallback="").strip(), key
    assert cp["general"]["hasProcessingProvider"] == "yes"
    assert cp["general"]["qgisMinimumVersion"] == "3.22"


def test_zip_loads_in_temp_plugin_path(plugin_zip, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(plugin_zip) as z:
        z.extractall(plugins)
    env = qgis_process_env(plugin_path=plugins, config_dir=tmp_path / "config",
                           extra_pythonpath=())
    r = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(plugins)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT", 1)[1])
    assert out["file"].startswith(str(plugins))
    assert out["name"] == "Anomaly detection"
    assert {"anomaly:rx", "anomaly:polygonize"} <= set(out["algs"])
    assert out["after_unload"] is False and out["torch"] is False
    # and through qgis_process, with the unpacked plugin as the only copy on the path
    r = run_qgis_process(["list"], env=env)
    assert r.returncode == 0 and "anomaly:rx" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture
def unpacked(plugin_zip, tmp_path):
    """The ZIP extracted into a plugin folder, and the environment that uses only that copy."""
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(plugin_zip) as z:
        z.extractall(plugins)
    env = qgis_process_env(plugin_path=plugins, config_dir=tmp_path / "config",
                           extra_pythonpath=(str(plugins),))
    return plugins, env


def test_zip_detects_and_batches_without_the_training_package(unpacked, tmp_path):
    plugins, env = unpacked
    assert not (plugins / "anomaly_detector" / "model" / "training").exists()
    image = np.random.default_rng(3).normal(100, 5, (3, 48, 40)).astype(np.float32)
    image[:, 20:23, 18:21] += 80
    src = write_raster(tmp_path / "scene.tif", image)
    score = tmp_path / "score.tif"
    r = run_qgis_process(["run", "anomaly:detect", f"--INPUT={src}", f"--OUTPUT_SCORE={score}",
                          f"--OUTPUT_POLYGONS={tmp_path / 'poly.gpkg'}"], env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    scores = read_raster(score)[0]
    assert np.unravel_index(np.argmax(scores), scores.shape) in \
        [(row, col) for row in range(20, 23) for col in range(18, 21)]
    r = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch", src,
                        "--out", str(tmp_path / "batch"), "--workers", "1"],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "1 scene(s) scored, 0 failed" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "batch" / "scene_score.tif").exists()
