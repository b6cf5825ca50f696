"""anomaly:detect end to end: processing.run, tampered weights, qgis_process."""

import json

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from anomaly_detector.model.nn import weights as weights_module
from conftest import read_raster, run_qgis_process, targets_scene, write_raster


def test_detect_algorithm_scores_and_polygons(tmp_path, run_alg):
    image, targets = targets_scene()
    src = write_raster(tmp_path / "in.tif", image.astype(np.uint16))
    result = run_alg("anomaly:detect", {
        "INPUT": src, "TILE_SIZE": 64, "OVERLAP": 48, "SCALE": 0, "DEVICE": 1, "THRESHOLD_METHOD": 0,
        "THRESHOLD": 0.003, "MIN_AREA": 1, "OUTPUT_SCORE": str(tmp_path / "score.tif"),
        "OUTPUT_POLYGONS": str(tmp_path / "anomalies.gpkg"),
        "OUTPUT_POINTS": str(tmp_path / "peaks.gpkg")})
    assert result["DEVICE_USED"] == "cpu" and result["COUNT"] >= 1
    scores, gt, wkt, nodata, size = read_raster(tmp_path / "score.tif")
    # the same numbers as anomaly:polygonize returns, from the written map
    assert result["VALID_PIXELS"] == 110 * 90
    assert result["FLAGGED_PIXELS"] == int((scores >= result["THRESHOLD_VALUE"]).sum()) >= 1
    flagged_groups = ndimage.label(scores >= result["THRESHOLD_VALUE"], np.ones((3, 3), bool))[1]
    assert result["GROUP_COUNT"] == flagged_groups  # fewer than TOP_N (500): all written
    assert result["POLYGON_COUNT"] == result["COUNT"] == flagged_groups
    assert size == (110, 90) and gt == gdal.Open(src).GetGeoTransform()
    from qgis.core import QgsVectorLayer
    layer = QgsVectorLayer(str(tmp_path / "anomalies.gpkg"), "anomalies", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32633"
    features = sorted(layer.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == list(range(1, len(features) + 1))
    maxima = [f["score_max"] for f in features]
    assert maxima == sorted(maxima, reverse=True)
    top = features[0].geometry().centroid().asPoint()
    col, row = (top.x() - gt[0]) / gt[1], (top.y() - gt[3]) / gt[5]
    assert min(abs(row - r) + abs(col - c) for r, c in targets) < 4
    # the peak points: one per polygon, at its peak, with its rank and provenance
    assert result["OUTPUT_POINTS"] == str(tmp_path / "peaks.gpkg")
    points = QgsVectorLayer(result["OUTPUT_POINTS"], "peaks", "ogr")
    assert points.isValid() and points.crs().authid() == "EPSG:32633"
    peaks = sorted(points.getFeatures(), key=lambda f: f["rank"])
    assert [(p["rank"], p["score_max"]) for p in peaks] == \
        [(f["rank"], f["score_max"]) for f in features]
    assert all(p.geometry().asPoint().x() == f["peak_x"] and p.geometry().asPoint().y() == f["peak_y"]
               for p, f in zip(peaks, features))
    assert gdal.OpenEx(result["OUTPUT_POINTS"]).GetMetadataItem("ALGORITHM") == "anomaly:detect"


def test_detect_algorithm_reports_tampered_weights(tmp_path, run_alg, monkeypatch, tampered_weights):
    from qgis.core import QgsProcessingException
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", tampered_weights)
    src = write_raster(tmp_path / "in.tif", targets_scene()[0].astype(np.float32))
    with pytest.raises(QgsProcessingException, match="corrupt or was modified"):
        run_alg("anomaly:detect", {"INPUT": src, "OUTPUT_SCORE": str(tmp_path / "s.tif"),
                                   "OUTPUT_POLYGONS": str(tmp_path / "p.gpkg")})
    assert not (tmp_path / "s.tif").exists()


def test_detect_through_qgis_process(tmp_path):
    image, _ = targets_scene(bands=1)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    score, polygons = tmp_path / "score.tif", tmp_path / "anomalies.gpkg"
    run = run_qgis_process(["--json", "run", "anomaly:detect", f"--INPUT={src}",
                            f"--OUTPUT_SCORE={score}", f"--OUTPUT_POLYGONS={polygons}"])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert results["DEVICE_USED"] in ("cpu", "cuda") and results["COUNT"] >= 1
    assert score.exists() and polygons.exists()
    assert read_raster(score)[1] == gdal.Open(src).GetGeoTransform()


def test_detect_precision_option(tmp_path, run_alg):
    from anomaly_detector.model.nn.fused import native_bfloat16
    from anomaly_detector.model.nn.detector import detect_raster
    image, _ = targets_scene()
    src = write_raster(tmp_path / "in.tif", image.astype(np.uint16))
    maps = {}
    for option, name in ((0, "auto"), (1, "float32")):
        score = tmp_path / f"{name}.tif"
        result = run_alg("anomaly:detect", {"INPUT": src, "DEVICE": 1, "PRECISION": option,
                                            "OUTPUT_SCORE": str(score),
                                            "OUTPUT_POLYGONS": str(tmp_path / f"{name}.gpkg")})
        maps[name] = read_raster(score)[0]
        provenance = gdal.OpenEx(result["OUTPUT_POLYGONS"]).GetMetadataItem("PRECISION")
        assert provenance == ("bfloat16" if option == 0 and native_bfloat16() else "float32")
    # float32 through the algorithm is what the API computes in float32
    detect_raster(src, str(tmp_path / "api.tif"), device="cpu", precision="float32")
    np.testing.assert_array_equal(maps["float32"], read_raster(tmp_path / "api.tif")[0])
    difference = np.abs(maps["auto"] - maps["float32"]).max()
    assert (0 < difference < 0.05) if native_bfloat16() else difference == 0
