"""The algorithms inside a real QgsApplication, through processing.run."""

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from anomaly_detector.model.raster.memory import memory_budget
from anomaly_detector.model.raster.output import NODATA
from conftest import make_bad_input, read_raster, write_raster
from scenes import ND, ORDER, check_features, numpy_rx, rx_scene, synthetic_scores


def test_provider_registered(provider):
    from qgis.core import QgsApplication
    assert provider.id() == "anomaly"
    assert provider.name() == "Anomaly detection"
    assert not provider.icon().isNull()
    ids = {a.id() for a in provider.algorithms()}
    assert {"anomaly:rx", "anomaly:polygonize"} <= ids
    reg = QgsApplication.processingRegistry()
    rx = reg.algorithmById("anomaly:rx")
    assert rx.displayName() == "RX anomaly score"
    assert reg.algorithmById("anomaly:polygonize").displayName() == \
        "Anomaly polygons from a score raster"
    for alg in (rx, reg.algorithmById("anomaly:polygonize")):
        names = [p.name() for p in alg.parameterDefinitions()]
        assert all(n == n.upper() for n in names)
        assert alg.shortHelpString()
        assert alg.createInstance().name() == alg.name()


def test_tiling_and_arithmetic_parameters_are_advanced(provider):
    # they change speed and memory, not the result (the arithmetic: within rounding):
    # out of the way in the dialog
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition
    detect = QgsApplication.processingRegistry().algorithmById("anomaly:detect")
    advanced = {p.name() for p in detect.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == {"TILE_SIZE", "OVERLAP", "PRECISION"}


def test_provider_does_not_import_torch(provider):
    import subprocess
    import sys
    code = ("import sys; from qgis.core import QgsApplication; "
            "app = QgsApplication([], False); app.initQgis(); "
            "import anomaly_detector.provider as p; prov = p.AnomalyProvider(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    import os
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                            "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_plugin_unload_and_reload(plugin):
    from qgis.core import QgsApplication
    reg = QgsApplication.processingRegistry()
    assert reg.providerById("anomaly") is not None
    plugin.unload()
    assert reg.providerById("anomaly") is None
    assert reg.algorithmById("anomaly:rx") is None
    plugin.initProcessing()
    assert reg.algorithmById("anomaly:rx") is not None


def test_rx_algorithm_grid_and_values(tmp_path, run_alg):
    nd = -1.0
    a = rx_scene((3, 45, 38))
    a[:, 0:6, 0:4] = nd
    a[0, 40, 30] = nd
    gt = (420000.0, 2.5, 0.0, 5400000.0, 0.0, -2.5)
    src = write_raster(tmp_path / "in.tif", a, nodata=nd, geotransform=gt, epsg=32632)
    out = str(tmp_path / "rx.tif")
    res = run_alg("anomaly:rx", {"INPUT": src, "BANDS": None, "OUTPUT": out})
    assert res["OUTPUT"] == out
    arr, ogt, wkt, ond, size = read_raster(out)
    ds = gdal.Open(src)
    assert size == (38, 45) and ogt == gt and wkt == ds.GetProjection() and ond == NODATA
    valid = np.all(a != nd, axis=0)
    assert np.all(arr[~valid] == NODATA)
    np.testing.assert_allclose(arr[valid], numpy_rx(a, valid)[valid], rtol=1e-5, atol=1e-5)


def test_rx_algorithm_band_subset(tmp_path, run_alg):
    a = rx_scene((4, 30, 20))
    src = write_raster(tmp_path / "in.tif", a)
    out = str(tmp_path / "rx.tif")
    run_alg("anomaly:rx", {"INPUT": src, "BANDS": [2, 4], "OUTPUT": out})
    valid = np.ones(a.shape[1:], bool)
    np.testing.assert_allclose(read_raster(out)[0], numpy_rx(a, valid, [2, 4]),
                               rtol=1e-5, atol=1e-5)


def test_polygonize_algorithm(tmp_path, run_alg):
    from qgis.core import QgsVectorLayer
    src, _ = synthetic_scores(tmp_path)
    out = str(tmp_path / "poly.gpkg")
    res = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 5.0,
                                         "MIN_AREA": 1, "OUTPUT": out})
    assert res["COUNT"] == 4 and res["THRESHOLD_VALUE"] == 5.0
    scores = read_raster(src)[0]
    valid = scores != ND
    assert res["VALID_PIXELS"] == int(valid.sum())
    assert res["FLAGGED_PIXELS"] == int((valid & (scores >= 5.0)).sum())
    layer = QgsVectorLayer(res["OUTPUT"], "poly", "ogr")
    assert layer.isValid() and layer.featureCount() == 4
    assert layer.crs().authid() == "EPSG:32633"
    assert [f.name() for f in layer.fields()][-13:] == [
        "rank", "score_max", "score_mean", "pixels", "area", "centroid_x", "centroid_y",
        "peak_x", "peak_y", "lon", "lat", "area_m2", "top_share"]
    feats = [({k: f[k] for k in ("rank", "score_max", "score_mean", "pixels", "area")},
              (f.geometry().boundingBox().xMinimum(), f.geometry().boundingBox().xMaximum(),
               f.geometry().boundingBox().yMinimum(), f.geometry().boundingBox().yMaximum()))
             for f in layer.getFeatures()]
    check_features(feats, ORDER)
    # default parameters: top fraction 0.005 of valid pixels
    res = run_alg("anomaly:polygonize", {"INPUT": src, "OUTPUT": str(tmp_path / "d.gpkg")})
    assert res["COUNT"] >= 1


def test_polygonize_writes_top_n_polygons_by_default_and_counts_every_group(tmp_path, run_alg):
    from qgis.core import QgsProcessingFeedback, QgsVectorLayer

    class Log(QgsProcessingFeedback):
        lines = []

        def pushInfo(self, text):  # noqa: N802
            self.lines.append(text)
    scores = np.random.default_rng(4).random((200, 300), dtype=np.float32)  # pure noise
    src = write_raster(tmp_path / "noise.tif", scores)
    log = Log()
    res = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD": 0.05,
                                         "OUTPUT": str(tmp_path / "p.gpkg")}, log)
    groups = ndimage.label(scores >= res["THRESHOLD_VALUE"], np.ones((3, 3), bool))[1]
    assert groups > 2000
    assert res["GROUP_COUNT"] == groups
    assert res["POLYGON_COUNT"] == res["COUNT"] == 500
    layer = QgsVectorLayer(res["OUTPUT"], "p", "ogr")
    assert layer.featureCount() == 500
    assert sorted(f["rank"] for f in layer.getFeatures()) == list(range(1, 501))
    assert f"3000 of 60000 valid pixels flagged, {groups} group(s) found, the 500 most " \
        "anomalous written as polygons (TOP_N)." in "\n".join(log.lines)


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("text", "not a raster"),
    ("empty", "is empty"),
    ("nodata", "no valid pixels"),
])
def test_bad_inputs_raise_clear_error(tmp_path, run_alg, case, words):
    from qgis.core import QgsProcessingException
    p = make_bad_input(tmp_path / "bad.tif", case, bands=2, size=8, nodata=ND)
    with pytest.raises(QgsProcessingException, match=words):
        run_alg("anomaly:rx", {"INPUT": p, "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_outputs_record_how_they_were_made(tmp_path, run_alg):
    import json
    import subprocess
    from anomaly_detector.model.nn.weights import DEFAULT_WEIGHTS, card_path
    src = write_raster(tmp_path / "in.tif", rx_scene((3, 40, 36)))
    score, polygons = str(tmp_path / "score.tif"), str(tmp_path / "anomalies.gpkg")
    run_alg("anomaly:detect", {"INPUT": src, "DEVICE": 1, "THRESHOLD": 0.01,
                               "OUTPUT_SCORE": score, "OUTPUT_POLYGONS": polygons})
    sha = json.loads(card_path(DEFAULT_WEIGHTS).read_text())["sha256"]
    raster = subprocess.run(["gdalinfo", score], capture_output=True, text=True).stdout
    vector = subprocess.run(["ogrinfo", "-so", "-al", polygons], capture_output=True,
                            text=True).stdout
    for text in (raster, vector):
        assert "ALGORITHM=anomaly:detect" in text and f"WEIGHTS_SHA256={sha}" in text
        assert "DEVICE=cpu" in text and "ANOMALY_DETECTOR_VERSION=" in text
        assert "CREATED=20" in text and '"THRESHOLD": "0.01"' in text
    assert f"Description = Anomaly score (anomaly:detect, weights {sha[:12]})" in raster
    rx_out = str(tmp_path / "rx.tif")
    run_alg("anomaly:rx", {"INPUT": src, "OUTPUT": rx_out})
    rx_info = subprocess.run(["gdalinfo", rx_out], capture_output=True, text=True).stdout
    assert "ALGORITHM=anomaly:rx" in rx_info and "VALID_PIXELS=1440" in rx_info


def test_algorithms_run_with_the_cache_capped(tmp_path, run_alg, monkeypatch):
    """anomaly:rx inside QGIS: GDAL's cache is capped during the run, restored after."""
    seen = []
    from anomaly_detector.algorithms import rx
    original = rx.rx_score_raster

    def spy(*args, **kwargs):
        seen.append(gdal.GetCacheMax())
        return original(*args, **kwargs)

    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(3 * 2 ** 30)
    try:
        rng = np.random.default_rng(0)
        src = write_raster(tmp_path / "in.tif", rng.normal(size=(3, 40, 50)).astype(np.float32))
        monkeypatch.setattr(rx, "rx_score_raster", spy)
        run_alg("anomaly:rx", {"INPUT": src, "OUTPUT": str(tmp_path / "rx.tif")})
        assert seen and seen[0] <= memory_budget() // 4 + 1
        assert gdal.GetCacheMax() == 3 * 2 ** 30
    finally:
        gdal.SetCacheMax(previous)
