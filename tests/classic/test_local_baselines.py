"""anomaly:local_rx and anomaly:local_contrast: the scores of model/classic/baselines.py, streamed
tile by tile (tiled = whole raster), nodata left out of every window, bad parameters,
georeference, metadata, styles and qgis_process."""

import inspect
import json
import subprocess

import numpy as np
import pytest

from anomaly_detector.model.classic import baselines
from anomaly_detector.model.classic.local_baselines import (local_contrast_score_raster,
                                                            local_rx_score_raster)
from anomaly_detector.model.classic.rx import rx_score_raster
from anomaly_detector.model.raster.output import NODATA
from conftest import DEFAULT_GT, read_raster, run_qgis_process, write_raster
from scenes import read_features
from test_inputs import TYPES, _crs_cases, check_scores, scene

TARGET = (slice(20, 22), slice(30, 32))  # rows, columns of the planted 2 x 2 target


def textured_scene(bands, height, width, seed=0):
    """Float32 bands mixing three smooth spatial patterns, plus noise, and a planted
    2 x 2 target at :data:`TARGET` (brighter, with a spectrum unlike the background)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    patterns = np.stack([np.sin(cols / 7.0), np.cos(rows / 5.0), np.sin((rows + cols) / 11.0)])
    mixing = rng.uniform(0.5, 1.5, (bands, 3))
    image = 100 + 10 * np.einsum("bk,khw->bhw", mixing, patterns) + \
        rng.normal(0, 1, (bands, height, width))
    image[:, TARGET[0], TARGET[1]] += np.where(np.arange(bands) % 2, 40.0, 20.0)[:, None, None]
    return image.astype(np.float32)


def read_scores(path):
    scores, gt, wkt, nodata, size = read_raster(path)
    return np.asarray(scores, np.float64), gt, wkt, nodata, size


def assert_close(got, expected):
    """Float32 storage of float64 scores: relative 1e-5 of each value, or of the largest."""
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


# --------------------------------------------------------------------------
# the core: tiles equal the whole raster, values equal the baselines

@pytest.mark.parametrize("method", ["local_rx", "local_contrast"])
def test_tiled_output_equals_the_whole_raster_baseline(tmp_path, method):
    image = textured_scene(12, 130, 110)  # 12 bands: local RX keeps the top 10 components
    src = write_raster(tmp_path / "in.tif", image)
    score, baseline = {"local_rx": (local_rx_score_raster, baselines.local_rx),
                       "local_contrast": (local_contrast_score_raster,
                                          baselines.local_contrast)}[method]
    expected = baseline(image.astype(np.float64))
    for tile in (40, 4096):  # 4 x 3 tiles of 40 px (margins 10 and 31 px), then one tile
        out = tmp_path / f"{tile}.tif"
        result = score(src, str(out), tile_size=tile)
        assert result.valid_pixels == 130 * 110
        assert_close(read_scores(out)[0], expected)
    if method == "local_rx":
        assert result.components == 10


def test_constant_raster_scores_zero(tmp_path):
    src = write_raster(tmp_path / "flat.tif", np.full((3, 30, 30), 0.1, np.float32))
    for score in (local_rx_score_raster, local_contrast_score_raster):
        score(src, str(tmp_path / "out.tif"), tile_size=16)
        assert not read_scores(tmp_path / "out.tif")[0].any()


def test_local_rx_solves_with_openblas_on_one_thread(monkeypatch):
    # a pixel's 10 x 10 system is tiny: OpenBLAS's threads made the solves several times slower
    from anomaly_detector.model.linalg import _openblas_libraries
    libraries = _openblas_libraries()
    if not libraries or max(lib.openblas_get_num_threads() for lib in libraries) < 2:
        pytest.skip("no multi-threaded OpenBLAS in this process")
    threads, solve = [], np.linalg.solve

    def counting_solve(*args):
        threads.append(max(lib.openblas_get_num_threads() for lib in libraries))
        return solve(*args)
    monkeypatch.setattr(np.linalg, "solve", counting_solve)
    baselines.local_rx(np.random.default_rng(5).normal(0, 1, (12, 30, 30)))
    assert threads and set(threads) == {1}


def test_rx_root_mean_square_is_the_square_root_of_the_band_count(tmp_path):
    # the scale that anomaly:rx's help gives: sqrt(rank (n - 1) / n)
    image = np.random.default_rng(4).normal(0, 1, (6, 40, 30))
    n = 40 * 30
    for bands, rank in ((image, 6), (np.concatenate([image, image[:2].sum(0)[None]]), 6)):
        rx_score_raster(write_raster(tmp_path / "in.tif", bands), str(tmp_path / "rx.tif"))
        rms = np.sqrt(np.mean(read_scores(tmp_path / "rx.tif")[0] ** 2))
        assert rms == pytest.approx(np.sqrt(rank * (n - 1) / n), rel=1e-5)


@pytest.mark.parametrize("alg, params, baseline", [
    ("anomaly:local_rx", {"GUARD_WINDOW": 5, "OUTER_WINDOW": 15},
     lambda image: baselines.local_rx(image, inner=5, outer=15)),
    ("anomaly:local_contrast", {"SCALES": "3, 1"},
     lambda image: baselines.local_contrast(image, scales=(1, 3))),
])
def test_algorithm_equals_the_baseline_and_ranks_the_target_first(tmp_path, run_alg, alg,
                                                                   params, baseline):
    image = textured_scene(5, 60, 70, seed=1)
    src = write_raster(tmp_path / "in.tif", image)
    score, polygons = tmp_path / "score.tif", tmp_path / "anomalies.gpkg"
    result = run_alg(alg, {"INPUT": src, "OUTPUT": str(score), "OUTPUT_POLYGONS": str(polygons),
                           "THRESHOLD": 0.002, **params})
    got, gt, wkt, nodata, size = read_scores(score)
    assert size == (70, 60) and gt == pytest.approx(DEFAULT_GT) and "32633" in wkt
    assert nodata == NODATA
    expected = baseline(image.astype(np.float64))
    assert_close(got, expected)
    row, col = np.unravel_index(np.argmax(got), got.shape)
    assert TARGET[0].start <= row < TARGET[0].stop and TARGET[1].start <= col < TARGET[1].stop
    assert result["VALID_PIXELS"] == 60 * 70 and result["COUNT"] >= 1
    assert result["FLAGGED_PIXELS"] == 9 and result["OUTPUT_POLYGONS"] == str(polygons)
    first = read_features(polygons)[0][0][0]  # attributes of the first feature
    assert first["rank"] == 1
    peak = ((first["peak_x"] - gt[0]) // gt[1], (first["peak_y"] - gt[3]) // gt[5])
    assert peak == (col, row)
    info = subprocess.run(["gdalinfo", str(score)], capture_output=True, text=True).stdout
    layers = subprocess.run(["ogrinfo", "-so", "-al", str(polygons)], capture_output=True,
                            text=True).stdout
    for text in (info, layers):
        assert f"ALGORITHM={alg}" in text and "VALID_PIXELS=4200" in text
        assert "THRESHOLD=" in text and "FLAGGED_PIXELS=9" in text
    assert ("COMPONENTS=5" in info) == (alg == "anomaly:local_rx")
    assert f"({alg})" in info  # the band is named after the algorithm


def test_defaults_are_the_baselines(provider):
    from qgis.core import QgsApplication
    registry = QgsApplication.processingRegistry()
    local_rx, local_contrast = (registry.algorithmById(f"anomaly:{name}")
                                for name in ("local_rx", "local_contrast"))
    rx_defaults = inspect.signature(baselines.local_rx).parameters
    assert local_rx.parameterDefinition("GUARD_WINDOW").defaultValue() == \
        rx_defaults["inner"].default
    assert local_rx.parameterDefinition("OUTER_WINDOW").defaultValue() == \
        rx_defaults["outer"].default
    scales = inspect.signature(baselines.local_contrast).parameters["scales"].default
    assert local_contrast.parameterDefinition("SCALES").defaultValue() == \
        ",".join(map(str, scales))
    for alg in (local_rx, local_contrast):
        assert alg.parameterDefinition("OUTPUT_POLYGONS").flags() & \
            alg.parameterDefinition("OUTPUT_POLYGONS").FlagOptional
    rx_help = registry.algorithmById("anomaly:rx").shortHelpString()
    assert "10 very unusual" not in rx_help and "square root of the number of bands" in rx_help


# --------------------------------------------------------------------------
# nodata

def _ring_values(values, valid, row, col, inner, outer):
    """Valid ``values[..., y, x]`` at Chebyshev distance ``inner`` < d <= ``outer``."""
    rows, cols = np.mgrid[0:valid.shape[0], 0:valid.shape[1]]
    distance = np.maximum(abs(rows - row), abs(cols - col))
    return values[..., (distance > inner) & (distance <= outer) & valid]


def local_rx_by_definition(image, valid, row, col, guard=7, outer=21, ridge=1e-3):
    """Squared distance of a pixel to its ring of valid pixels, with 3 bands (all whitened)."""
    mean = image[:, valid].mean(axis=1)
    values, vectors = np.linalg.eigh(np.cov(image[:, valid]))
    whitened = np.einsum("bhw,bk->khw", image - mean[:, None, None], vectors / np.sqrt(values))
    ring = _ring_values(whitened, valid, row, col, guard // 2, outer // 2)
    deviation = whitened[:, row, col] - ring.mean(axis=1)
    covariance = np.cov(ring, bias=True) + ridge * np.eye(len(ring))
    return deviation @ np.linalg.solve(covariance, deviation)


def local_contrast_by_definition(image, valid, row, col, scales=(1, 3, 5, 9, 15), eps=0.01):
    grey = image.mean(axis=0)
    grey = (grey - grey[valid].mean()) / grey[valid].std()
    best = 0.0
    for side in scales:
        centre = _ring_values(grey, valid, row, col, -1, (side - 1) // 2)
        ring = _ring_values(grey, valid, row, col, side, 2 * side + 1)
        best = max(best, abs(centre.mean() - ring.mean()) / (ring.std() + eps))
    return best


@pytest.mark.parametrize("alg, definition", [("anomaly:local_rx", local_rx_by_definition),
                                             ("anomaly:local_contrast",
                                              local_contrast_by_definition)])
def test_nodata_is_left_out_of_every_window(tmp_path, run_alg, alg, definition):
    image = textured_scene(3, 50, 60, seed=2).astype(np.float64)
    valid = np.ones((50, 60), bool)
    valid[:6, :25] = False       # a nodata block
    valid[30, 10] = False        # a lone nodata pixel
    scores = []
    for name, fill, nodata in (("a", -9999.0, -9999.0), ("b", 5000.0, 5000.0),
                               ("c", np.nan, None)):
        src = write_raster(tmp_path / f"{name}.tif", np.where(valid, image, fill),
                           nodata=nodata, dtype=np.float32)
        out = tmp_path / f"{name}_score.tif"
        run_alg(alg, {"INPUT": src, "OUTPUT": str(out)})
        scores.append(read_scores(out)[0])
    # what lies under nodata changes no score; nodata stays nodata
    assert np.array_equal(scores[0], scores[1]) and np.array_equal(scores[0], scores[2])
    assert (scores[0][~valid] == NODATA).all() and (scores[0][valid] != NODATA).all()
    image = image.astype(np.float32).astype(np.float64)
    for row, col in [(6, 10), (2, 30), (31, 10), (29, 11), (49, 59), (25, 40)]:
        assert scores[0][row, col] == pytest.approx(definition(image, valid, row, col),
                                                    rel=1e-4)


def _input_case(tmp_path, case):
    """``(path, valid mask or None)`` of one kind of input raster."""
    if case in ("1x1", "1x37", "37x1"):
        h, w = map(int, case.split("x"))
        return write_raster(tmp_path / "in.tif", scene(2, h, w).astype(np.float32)), None
    if case == "nan and inf":
        image = scene(2, 20, 24).astype(np.float32)
        image[0, 3, 4], image[1, 5, 6] = np.nan, -np.inf
        return write_raster(tmp_path / "in.tif", image), np.isfinite(image).all(axis=0)
    if case == "constant":
        return write_raster(tmp_path / "in.tif", np.full((3, 16, 18), 42, np.uint16)), None
    if case in TYPES:
        dtype, low, high = TYPES[case]
        image = scene(3, 18, 20)
        image = low + (image - image.min()) / np.ptp(image) * (high - low)
        image = image.astype(np.int8).view(np.uint8) if case == "Int8" else image.astype(dtype)
        return write_raster(tmp_path / "in.tif", image, dtype=case), None
    if case == "CInt16":
        data = np.round(scene(2, 16, 18)) + 30j
        return write_raster(tmp_path / "in.tif", data, dtype="CInt16"), None
    return _crs_cases(tmp_path, case), None


@pytest.mark.parametrize("alg", ["anomaly:local_rx", "anomaly:local_contrast"])
@pytest.mark.parametrize("case", ["1x1", "1x37", "37x1", "nan and inf", "constant", "Int8",
                                  "UInt32", "Float64", "CInt16", "no CRS", "no geotransform",
                                  "rotated"])
def test_inputs_of_every_kind(tmp_path, run_alg, alg, case):
    src, valid = _input_case(tmp_path, case)
    out = tmp_path / "out" / "score.tif"
    out.parent.mkdir()
    run_alg(alg, {"INPUT": src, "OUTPUT": str(out)})
    check_scores(src, str(out), valid)
    assert [p.name for p in out.parent.iterdir()] == ["score.tif"]


def test_all_nodata_is_refused(tmp_path, run_alg):
    from qgis.core import QgsProcessingException
    src = write_raster(tmp_path / "in.tif", np.full((2, 10, 12), -1, np.float32), nodata=-1)
    for alg in ("anomaly:local_rx", "anomaly:local_contrast"):
        with pytest.raises(QgsProcessingException, match="no valid pixels"):
            run_alg(alg, {"INPUT": src, "OUTPUT": str(tmp_path / "out.tif")})
    assert not (tmp_path / "out.tif").exists()


# --------------------------------------------------------------------------
# parameters, loading, qgis_process

@pytest.mark.parametrize("alg, params, words", [
    ("anomaly:local_rx", {"GUARD_WINDOW": 8}, "GUARD_WINDOW is the side.*odd whole number"),
    ("anomaly:local_rx", {"OUTER_WINDOW": 0}, "OUTER_WINDOW is the side.*odd whole number"),
    ("anomaly:local_rx", {"OUTER_WINDOW": 301}, "from 1 to 255"),
    ("anomaly:local_rx", {"GUARD_WINDOW": 21, "OUTER_WINDOW": 7},
     r"OUTER_WINDOW \(7\) must be larger than GUARD_WINDOW \(21\)"),
    ("anomaly:local_contrast", {"SCALES": "2,3"}, "SCALES lists 2.*odd sides"),
    ("anomaly:local_contrast", {"SCALES": "three"}, "such as 1,3,5,9,15 \\(got 'three'\\)"),
    ("anomaly:local_contrast", {"SCALES": "1,301"}, "SCALES lists 301.*from 1 to 127"),
    ("anomaly:local_contrast", {"THRESHOLD": 2.0}, "THRESHOLD.*at most 1"),
])
def test_bad_parameters_are_refused_with_a_sentence(tmp_path, run_alg, alg, params, words):
    from qgis.core import QgsProcessingException
    src = write_raster(tmp_path / "in.tif", textured_scene(3, 30, 40))
    out, polygons = tmp_path / "out" / "score.tif", tmp_path / "out" / "anomalies.gpkg"
    out.parent.mkdir()
    with pytest.raises(QgsProcessingException, match=words):
        run_alg(alg, {"INPUT": src, "OUTPUT": str(out), "OUTPUT_POLYGONS": str(polygons),
                      **params})
    assert list(out.parent.iterdir()) == []


def test_outputs_are_named_and_styled_when_loaded(tmp_path, provider):
    import processing
    from qgis.core import QgsProject
    src = write_raster(tmp_path / "field.tif", textured_scene(3, 40, 50))
    project = QgsProject.instance()
    try:
        processing.runAndLoadResults("anomaly:local_rx", {
            "INPUT": src, "OUTPUT": str(tmp_path / "lrx.tif"),
            "OUTPUT_POLYGONS": str(tmp_path / "anomalies.gpkg")})
        processing.runAndLoadResults("anomaly:local_contrast", {
            "INPUT": src, "OUTPUT": str(tmp_path / "lcm.tif")})
        layers = {layer.name(): layer for layer in project.mapLayers().values()}
        assert set(layers) == {"field - local RX score", "field - anomalies",
                               "field - local contrast"}
        for name in ("field - local RX score", "field - local contrast"):
            assert layers[name].renderer().type() == "singlebandpseudocolor"
        assert layers["field - anomalies"].labelsEnabled()
        order = [node.name() for node in project.layerTreeRoot().findLayers()]
        assert order.index("field - anomalies") < order.index("field - local RX score")
    finally:
        project.removeAllMapLayers()


def test_qgis_process_runs_both_and_refuses_bad_windows(tmp_path):
    image = textured_scene(4, 50, 60)
    image[:, :3, :] = -1
    src = write_raster(tmp_path / "in.tif", image, nodata=-1)
    score, polygons = tmp_path / "lrx.tif", tmp_path / "anomalies.gpkg"
    run = run_qgis_process(["--json", "run", "anomaly:local_rx", f"--INPUT={src}",
                            "--BANDS=1", "--BANDS=2", "--BANDS=4", f"--OUTPUT={score}",
                            f"--OUTPUT_POLYGONS={polygons}", "--THRESHOLD=0.01"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert results["COUNT"] >= 1 and results["COMPONENTS"] == 3 and polygons.exists()
    got, gt, _, nodata, size = read_scores(score)
    assert size == (60, 50) and gt == pytest.approx(DEFAULT_GT) and (got[:3] == nodata).all()
    contrast = tmp_path / "lcm.tif"
    run = run_qgis_process(["--json", "run", "anomaly:local_contrast", f"--INPUT={src}",
                            f"--OUTPUT={contrast}"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert contrast.exists() and results["VALID_PIXELS"] == 47 * 60
    assert not results.get("OUTPUT_POLYGONS") and "COUNT" not in results  # none asked for
    run = run_qgis_process(["run", "anomaly:local_rx", f"--INPUT={src}", "--GUARD_WINDOW=9",
                            "--OUTER_WINDOW=9", f"--OUTPUT={tmp_path / 'bad.tif'}"])
    assert run.returncode == 1 and "must be larger than GUARD_WINDOW" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr and not (tmp_path / "bad.tif").exists()
