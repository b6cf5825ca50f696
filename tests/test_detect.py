"""The bundled detector end to end: core, tiling, processing.run, qgis_process, weights."""

import json
import shutil

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from anomaly_detector.model import weights as weights_module
from anomaly_detector.model.detector import TileScorer, detect_raster, resolve_device
from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.features import fit_from_array
from anomaly_detector.model.weights import WeightsError, load_detector
from conftest import read_raster, run_qgis_process, write_raster


def _targets_scene(bands=3, height=90, width=110, seed=0):
    """Textured background with three small bright targets (rows, cols listed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 100 + 10 * np.sin(xx / 9.0) + 8 * np.cos(yy / 13.0)
    image = base[None] * rng.uniform(0.8, 1.2, (bands, 1, 1)) + rng.normal(0, 2, (bands, height, width))
    targets = [(20, 30), (60, 80), (45, 15)]
    for row, col in targets:
        image[:, row - 1:row + 2, col - 1:col + 2] += 60
    return image, targets


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "float64"])
def test_detect_accepts_every_common_data_type(tmp_path, dtype):
    image, targets = _targets_scene()
    src = write_raster(tmp_path / "in.tif", np.clip(image, 0, 255).astype(dtype))
    detect_raster(src, str(tmp_path / "out.tif"), device="cpu")
    scores, gt, wkt, nodata, size = read_raster(tmp_path / "out.tif")
    assert size == (110, 90) and scores.dtype == np.float32
    assert np.isfinite(scores).all() and 0 <= scores.min() and scores.max() <= 1
    for row, col in targets:  # every target is in the top 2 % of the map
        assert scores[row, col] > np.quantile(scores, 0.98)


@pytest.mark.parametrize("bands", [1, 3, 4, 13, 200, 500])
def test_detect_accepts_any_band_count(tmp_path, bands):
    image, _ = _targets_scene(bands=bands, height=40, width=36)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    detect_raster(src, str(tmp_path / "out.tif"), device="cpu")
    scores = read_raster(tmp_path / "out.tif")[0]
    assert scores.shape == (40, 36) and np.isfinite(scores).all()


def test_single_tile_equals_direct_network_run(tmp_path):
    image, _ = _targets_scene()
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    detect_raster(src, str(tmp_path / "out.tif"), tile_size=512, overlap=64)
    tiled = read_raster(tmp_path / "out.tif")[0]
    image = image.astype(np.float32)
    direct = TileScorer(load_detector(), fit_from_array(image))(image)
    np.testing.assert_allclose(tiled, direct, atol=1e-5)


@pytest.mark.parametrize("tile_size", [48, 64, 100])
def test_tiles_are_seam_free(tmp_path, tile_size):
    image, _ = _targets_scene(height=150, width=131)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    overlap = load_detector().receptive_radius + 2
    detect_raster(src, str(tmp_path / "one.tif"), tile_size=1024, overlap=overlap)
    detect_raster(src, str(tmp_path / "many.tif"), tile_size=tile_size, overlap=overlap)
    one, many = read_raster(tmp_path / "one.tif")[0], read_raster(tmp_path / "many.tif")[0]
    assert np.abs(one - many).max() < 1e-5


@pytest.mark.parametrize("scale", [2, 4])
def test_coarser_analysis_is_seam_free_on_the_input_grid(tmp_path, scale):
    image, targets = _targets_scene(height=150, width=131)
    for row, col in targets:  # targets of a few pixels, as the coarser scales need
        image[:, row - 3:row + 4, col - 3:col + 4] += 60
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    one = detect_raster(src, str(tmp_path / "one.tif"), tile_size=1024, scale=scale)
    detect_raster(src, str(tmp_path / "many.tif"), tile_size=32, scale=scale)  # 2+ tiles
    assert one.scale == scale and one.overlap == 64 * scale
    one, many = read_raster(tmp_path / "one.tif"), read_raster(tmp_path / "many.tif")
    assert one[4] == (131, 150) and one[1] == gdal.Open(src).GetGeoTransform()
    assert np.abs(one[0] - many[0]).max() < 1e-5
    for row, col in targets:
        assert one[0][row, col] > np.quantile(one[0], 0.97)


def test_unknown_analysis_scale_is_refused(tmp_path):
    src = write_raster(tmp_path / "in.tif", _targets_scene()[0].astype(np.float32))
    with pytest.raises(ValueError, match="analysis scale must be one of 1, 2, 4"):
        detect_raster(src, str(tmp_path / "out.tif"), scale=3)
    assert not (tmp_path / "out.tif").exists()


def test_nodata_and_grid_are_kept(tmp_path):
    image, _ = _targets_scene(bands=4)
    image[:, :10, :12] = -1
    image[2, 50, 50] = np.nan
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32), nodata=-1)
    detect_raster(src, str(tmp_path / "out.tif"))
    scores, gt, wkt, nodata, size = read_raster(tmp_path / "out.tif")
    source = gdal.Open(src)
    assert gt == source.GetGeoTransform() and wkt == source.GetProjection() and nodata == NODATA
    expected_invalid = np.zeros(scores.shape, bool)
    expected_invalid[:10, :12] = expected_invalid[50, 50] = True
    np.testing.assert_array_equal(scores == NODATA, expected_invalid)
    assert np.isfinite(scores).all() and (scores[~expected_invalid] >= 0).all()


def test_negligible_weights_are_zeroed_on_load_without_changing_scores(tmp_path):
    import torch
    from anomaly_detector.model.network import DeviationNet
    from anomaly_detector.model.weights import save_weights
    torch.manual_seed(0)
    model = DeviationNet(width=4).eval()
    with torch.no_grad():
        model.coarse[2].weight[0, 0] = 1e-30  # a decayed unit: 9 tiny weights
        model.coarse[2].weight[1, 0, 0, 0] = 1e-3
    save_weights(model, tmp_path / "w.pt")
    loaded = load_detector(tmp_path / "w.pt")
    assert (loaded.coarse[2].weight[0, 0] == 0).all()
    assert loaded.coarse[2].weight[1, 0, 0, 0].item() == pytest.approx(1e-3)
    x = torch.randn(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.score(x), model.score(x))


def test_device_choice():
    assert resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.fixture
def tampered_weights(tmp_path):
    target = tmp_path / "detector.pt"
    shutil.copy(weights_module.DEFAULT_WEIGHTS, target)
    shutil.copy(weights_module.card_path(weights_module.DEFAULT_WEIGHTS), tmp_path / "detector.json")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_bundled_weights_load_and_verify():
    card = json.loads(weights_module.card_path(weights_module.DEFAULT_WEIGHTS).read_text())
    assert weights_module.sha256_of(weights_module.DEFAULT_WEIGHTS) == card["sha256"]
    assert weights_module.DEFAULT_WEIGHTS.stat().st_size < 20 * 1024 * 1024
    load_detector()


def test_tampered_or_missing_weights_give_a_clear_error(tmp_path, tampered_weights):
    with pytest.raises(WeightsError, match="corrupt or was modified"):
        load_detector(tampered_weights)
    with pytest.raises(WeightsError, match="not found"):
        load_detector(tmp_path / "absent.pt")


def test_detect_algorithm_scores_and_polygons(tmp_path, run_alg):
    image, targets = _targets_scene()
    src = write_raster(tmp_path / "in.tif", image.astype(np.uint16))
    result = run_alg("anomaly:detect", {
        "INPUT": src, "TILE_SIZE": 64, "OVERLAP": 48, "SCALE": 0, "DEVICE": 1, "THRESHOLD_METHOD": 0,
        "THRESHOLD": 0.003, "MIN_AREA": 1, "OUTPUT_SCORE": str(tmp_path / "score.tif"),
        "OUTPUT_POLYGONS": str(tmp_path / "anomalies.gpkg")})
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


def test_detect_algorithm_reports_tampered_weights(tmp_path, run_alg, monkeypatch, tampered_weights):
    from qgis.core import QgsProcessingException
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", tampered_weights)
    src = write_raster(tmp_path / "in.tif", _targets_scene()[0].astype(np.float32))
    with pytest.raises(QgsProcessingException, match="corrupt or was modified"):
        run_alg("anomaly:detect", {"INPUT": src, "OUTPUT_SCORE": str(tmp_path / "s.tif"),
                                   "OUTPUT_POLYGONS": str(tmp_path / "p.gpkg")})
    assert not (tmp_path / "s.tif").exists()


def test_detect_through_qgis_process(tmp_path):
    image, _ = _targets_scene(bands=1)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    score, polygons = tmp_path / "score.tif", tmp_path / "anomalies.gpkg"
    run = run_qgis_process(["--json", "run", "anomaly:detect", f"--INPUT={src}",
                            f"--OUTPUT_SCORE={score}", f"--OUTPUT_POLYGONS={polygons}"])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert results["DEVICE_USED"] in ("cpu", "cuda") and results["COUNT"] >= 1
    assert score.exists() and polygons.exists()
    assert read_raster(score)[1] == gdal.Open(src).GetGeoTransform()
