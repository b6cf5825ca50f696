"""The input matrix: every row is a correct output or a QgsProcessingException whose
message says what to do; never a traceback, a hang or a partial file.

Rows run through ``processing.run`` on ``anomaly:detect`` (and ``anomaly:rx``
where it applies) with tiny rasters so that the file stays fast.
"""

import os
import shutil
import zipfile

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.nn import weights as weights_module
from anomaly_detector.model.raster.output import NODATA
from conftest import DEFAULT_GT, read_raster, write_raster

GT = DEFAULT_GT  # the grid write_raster gives a raster


# --------------------------------------------------------------------------
# raster writers and checks

def scene(bands=3, height=24, width=20, seed=0):
    """Small textured float64 scene with one bright target."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 100 + 10 * np.sin(xx / 3.0) + 8 * np.cos(yy / 4.0)
    image = base[None] * rng.uniform(0.8, 1.2, (bands, 1, 1)) + rng.normal(0, 2, (bands, height, width))
    image[:, height // 2, width // 2] += 60
    return image


TILES_16 = ("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16")  # rasters of 16 x 16 or more


def outputs(folder):
    folder.mkdir(exist_ok=True)
    return str(folder / "score.tif"), str(folder / "anomalies.gpkg")


def run_detect(run_alg, src, folder, **extra):
    score, polygons = outputs(folder)
    params = {"INPUT": src, "DEVICE": 1, "TILE_SIZE": 64, "OVERLAP": 32,
              "OUTPUT_SCORE": score, "OUTPUT_POLYGONS": polygons}
    params.update(extra)
    return run_alg("anomaly:detect", params)


def run_rx(run_alg, src, folder, **extra):
    score, _ = outputs(folder)
    params = {"INPUT": src, "OUTPUT": score}
    params.update(extra)
    return run_alg("anomaly:rx", params)


RUNNERS = {"detect": run_detect, "rx": run_rx}


def leftovers(folder):
    """Files a run left in its output folder (outputs, partial files, sidecars)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir())


def assert_refused(run, words, folder):
    """The run raises a QgsProcessingException matching ``words`` and leaves nothing."""
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException, match=words) as info:
        run()
    message = str(info.value)
    assert "Traceback" not in message and len(message) > 20
    assert leftovers(folder) == [], leftovers(folder)
    return message


def check_scores(src, score_path, valid=None):
    """Score raster on the input grid, finite where the input is valid, nodata elsewhere."""
    ds = gdal.Open(src)
    scores, gt, wkt, nodata, size = read_raster(score_path)
    assert size == (ds.RasterXSize, ds.RasterYSize)
    src_gt = ds.GetGeoTransform(can_return_null=True)
    if src_gt is not None:
        assert gt == pytest.approx(src_gt)
    assert wkt == ds.GetProjection()
    assert nodata == NODATA
    scores = np.asarray(scores, dtype=np.float64).reshape(size[1], size[0])
    if valid is None:
        valid = np.ones(scores.shape, bool)
    assert np.isfinite(scores).all()
    assert (scores[valid] != NODATA).all()
    assert (scores[~valid] == NODATA).all()
    return scores


def assert_no_partials(folder):
    assert not [n for n in leftovers(folder) if "partial" in n or n.startswith(".")]


# --------------------------------------------------------------------------
# files that are not usable rasters

@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_missing_file(tmp_path, run_alg, alg):
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, str(tmp_path / "absent.tif"), out),
                   "does not exist", out)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_non_raster_file(tmp_path, run_alg, alg):
    src = tmp_path / "notes.tif"
    src.write_text("this is not a raster\n" * 20)
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, str(src), out), "not a raster", out)


def _vector_file(tmp_path):
    path = tmp_path / "shapes.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                    '"properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                    '[[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}')
    return str(path)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_vector_file(tmp_path, run_alg, alg):
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, _vector_file(tmp_path), out),
                   "vector layer.*Choose a raster", out)


def test_vector_layer_object(tmp_path, run_alg):
    from qgis.core import QgsVectorLayer
    layer = QgsVectorLayer(_vector_file(tmp_path), "shapes", "ogr")
    assert layer.isValid()
    out = tmp_path / "out"
    assert_refused(lambda: run_detect(run_alg, layer, out), "vector layer", out)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_truncated_geotiff(tmp_path, run_alg, alg):
    src = tmp_path / "cut.tif"
    write_raster(src, scene(2, 96, 96).astype(np.float32), options=("TILED=YES",))
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, str(src), out),
                   "(damaged|not a raster|could not be read)", out)


# --------------------------------------------------------------------------
# sizes and tiles (TILE_SIZE 64)

SIZES = {"1x1": (1, 1), "1xN": (1, 37), "Nx1": (37, 1), "one tile": (64, 64),
         "one tile + 1 column": (64, 65), "one tile + 1 row": (65, 64)}


@pytest.mark.parametrize("alg", ["detect", "rx"])
@pytest.mark.parametrize("size", list(SIZES))
def test_sizes(tmp_path, run_alg, alg, size):
    h, w = SIZES[size]
    src = write_raster(tmp_path / "in.tif", scene(2, h, w).astype(np.float32))
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    check_scores(src, tmp_path / "out" / "score.tif")
    assert_no_partials(tmp_path / "out")


# --------------------------------------------------------------------------
# nodata and non-finite values

@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_all_nodata(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", np.full((2, 10, 12), -1, np.float32), nodata=-1)
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out), "no valid pixels", out)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_nodata_in_half(tmp_path, run_alg, alg):
    image = scene(3, 20, 24).astype(np.float32)
    image[:, :, :12] = -5
    src = write_raster(tmp_path / "in.tif", image, nodata=-5)
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    valid = np.ones((20, 24), bool)
    valid[:, :12] = False
    check_scores(src, tmp_path / "out" / "score.tif", valid)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_nan_and_inf(tmp_path, run_alg, alg):
    image = scene(2, 20, 24).astype(np.float32)
    image[0, 3, 4] = np.nan
    image[1, 5, 6] = np.inf
    image[0, 7, 8] = -np.inf
    src = write_raster(tmp_path / "in.tif", image)
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    valid = np.isfinite(image).all(axis=0)
    check_scores(src, tmp_path / "out" / "score.tif", valid)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_constant_image(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", np.full((3, 16, 18), 42, np.uint16))
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    check_scores(src, tmp_path / "out" / "score.tif")


# --------------------------------------------------------------------------
# data types

TYPES = {"Byte": (np.uint8, 0, 255), "Int8": (np.int8, -128, 127),
         "Int16": (np.int16, -3000, 3000), "UInt16": (np.uint16, 0, 60000),
         "Int32": (np.int32, -100000, 100000), "UInt32": (np.uint32, 0, 4000000000),
         "Float32": (np.float32, -1e6, 1e6), "Float64": (np.float64, -1e12, 1e12)}


@pytest.mark.parametrize("alg", ["detect", "rx"])
@pytest.mark.parametrize("name", list(TYPES))
def test_data_types(tmp_path, run_alg, alg, name):
    dtype, lo, hi = TYPES[name]
    image = scene(3, 18, 20)
    image = lo + (image - image.min()) / (image.max() - image.min()) * (hi - lo)
    if name == "Int8":  # GDAL 3.6: signed bytes are Byte with PIXELTYPE=SIGNEDBYTE
        image = image.astype(np.int8).view(np.uint8)
    else:
        image = image.astype(dtype)
    src = write_raster(tmp_path / "in.tif", image, dtype=name, options=TILES_16)
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    check_scores(src, tmp_path / "out" / "score.tif")


@pytest.mark.parametrize("name", ["CInt16", "CFloat32"])
def test_complex_data_is_scored_on_its_magnitude(tmp_path, run_alg, name):
    rng = np.random.default_rng(3)
    real, imag = scene(2, 16, 18, seed=1), rng.normal(0, 30, (2, 16, 18))
    if name == "CInt16":
        real, imag = np.round(real), np.round(imag)
    data = (real + 1j * imag).astype(np.complex64)
    src = write_raster(tmp_path / "in.tif", data, dtype=name, options=TILES_16)
    magnitude = write_raster(tmp_path / "mag.tif", np.abs(data).astype(np.float64))
    run_rx(run_alg, src, tmp_path / "out")
    run_rx(run_alg, magnitude, tmp_path / "ref")
    np.testing.assert_allclose(read_raster(tmp_path / "out" / "score.tif")[0],
                               read_raster(tmp_path / "ref" / "score.tif")[0], rtol=1e-5, atol=1e-5)
    run_detect(run_alg, src, tmp_path / "det")
    check_scores(src, tmp_path / "det" / "score.tif")
    assert not gdal.ReadDirRecursive("/vsimem/anomaly_detector") or \
        gdal.ReadDirRecursive("/vsimem/anomaly_detector") == []


# --------------------------------------------------------------------------
# band counts

@pytest.mark.parametrize("bands", [1, 2, 3, 4, 13, 224, 1000])
def test_band_counts(tmp_path, run_alg, bands):
    image = scene(bands, 10, 12).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", image, options=())
    run_detect(run_alg, src, tmp_path / "out", TOP_N=3)
    check_scores(src, tmp_path / "out" / "score.tif")
    if bands <= 13:
        run_rx(run_alg, src, tmp_path / "rx")
        check_scores(src, tmp_path / "rx" / "score.tif")


# --------------------------------------------------------------------------
# georeferencing and paths

def _crs_cases(tmp_path, case):
    image = scene(2, 16, 14).astype(np.float32)
    if case == "no CRS":
        return write_raster(tmp_path / "in.tif", image, epsg=None)
    if case == "no geotransform":
        return write_raster(tmp_path / "in.tif", image, epsg=None, geotransform=None)
    if case == "geographic":
        return write_raster(tmp_path / "in.tif", image, epsg=4326,
                            geotransform=(12.5, 0.0001, 0.0, 41.9, 0.0, -0.0001))
    if case == "rotated":
        return write_raster(tmp_path / "in.tif", image,
                            geotransform=(500000.0, 8.66, 5.0, 4100000.0, 5.0, -8.66))
    raise AssertionError(case)


@pytest.mark.parametrize("alg", ["detect", "rx"])
@pytest.mark.parametrize("case", ["no CRS", "no geotransform", "geographic", "rotated"])
def test_georeferencing(tmp_path, run_alg, alg, case):
    src = _crs_cases(tmp_path, case)
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    check_scores(src, tmp_path / "out" / "score.tif")


def test_rotated_polygons_area(tmp_path, run_alg):
    src = _crs_cases(tmp_path, "rotated")
    result = run_detect(run_alg, src, tmp_path / "out", THRESHOLD_METHOD=1, THRESHOLD=-1.0)
    from qgis.core import QgsVectorLayer
    layer = QgsVectorLayer(result["OUTPUT_POLYGONS"], "p", "ogr")
    total = sum(f["area"] for f in layer.getFeatures())
    assert total == pytest.approx(16 * 14 * 100.0, rel=1e-3)  # |8.66*-8.66 - 5*5| = 100


@pytest.mark.parametrize("kind", ["vrt", "vsimem", "vsizip"])
@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_virtual_inputs(tmp_path, run_alg, kind, alg):
    image = scene(2, 16, 18).astype(np.float32)
    plain = write_raster(tmp_path / "in.tif", image)
    if kind == "vrt":
        src = str(tmp_path / "in.vrt")
        gdal.BuildVRT(src, [plain]).FlushCache()
    elif kind == "vsimem":
        src = f"/vsimem/anomaly-tests/{alg}/in.tif"
        gdal.Translate(src, plain)
    else:
        with zipfile.ZipFile(tmp_path / "in.zip", "w") as archive:
            archive.write(plain, "folder/in.tif")
        src = f"/vsizip/{tmp_path}/in.zip/folder/in.tif"
    try:
        RUNNERS[alg](run_alg, src, tmp_path / "out")
        check_scores(src, tmp_path / "out" / "score.tif")
    finally:
        if kind == "vsimem":
            gdal.Unlink(src)


# --------------------------------------------------------------------------
# outputs

@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_folder_missing(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    params = {"OUTPUT_SCORE": str(blocker / "score.tif"),
              "OUTPUT_POLYGONS": str(blocker / "p.gpkg")} if alg == "detect" else \
        {"OUTPUT": str(blocker / "score.tif")}
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, **params), "does not exist", out)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_folder_unwritable(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    if os.geteuid() == 0:  # root writes anywhere on disk; /proc is not writable even for root
        folder = "/proc"
        words = "not writable"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        folder = str(locked)
        words = "not writable"
    params = {"OUTPUT_SCORE": f"{folder}/anomaly-score.tif",
              "OUTPUT_POLYGONS": f"{folder}/anomaly-p.gpkg"} if alg == "detect" else \
        {"OUTPUT": f"{folder}/anomaly-score.tif"}
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, **params), words, out)
    assert not os.path.exists(f"{folder}/anomaly-score.tif")


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_equal_to_input_is_refused(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    before = (tmp_path / "in.tif").read_bytes()
    params = {"OUTPUT_SCORE": src} if alg == "detect" else {"OUTPUT": src}
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, **params), "is the input raster", out)
    assert (tmp_path / "in.tif").read_bytes() == before


def test_two_outputs_on_one_file_are_refused(tmp_path, run_alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    same = str(tmp_path / "same.gpkg")
    assert_refused(lambda: run_detect(run_alg, src, out, OUTPUT_SCORE=same, OUTPUT_POLYGONS=same),
                   "same file", out)


def test_existing_outputs_are_overwritten(tmp_path, run_alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 14, 12).astype(np.float32))
    out = tmp_path / "out"
    score, polygons = outputs(out)
    for path in (score, polygons):
        with open(path, "w") as handle:
            handle.write("old content")
    result = run_detect(run_alg, src, out)
    check_scores(src, score)
    from qgis.core import QgsVectorLayer
    assert QgsVectorLayer(polygons, "p", "ogr").featureCount() == result["COUNT"]
    assert sorted(leftovers(out)) == ["anomalies.gpkg", "score.tif"]
    # a shapefile output replaces every sidecar file (1, then 2 of the several groups
    # that the top 5 % of this scene's pixels make)
    image = scene(2, 40, 40)
    for row, col in ((8, 8), (8, 30), (30, 20)):
        image[:, row, col] += 60
    src = write_raster(tmp_path / "three.tif", image.astype(np.float32))
    shp = str(out / "anomalies.shp")
    run_detect(run_alg, src, out, OUTPUT_POLYGONS=shp, TOP_N=1, THRESHOLD=0.05)
    assert QgsVectorLayer(shp, "p", "ogr").featureCount() == 1
    run_detect(run_alg, src, out, OUTPUT_POLYGONS=shp, TOP_N=2, THRESHOLD=0.05)
    assert QgsVectorLayer(shp, "p", "ogr").featureCount() == 2
    assert_no_partials(out)


def test_input_is_opened_read_only(tmp_path, run_alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 14, 12).astype(np.float32))
    os.chmod(src, 0o444)
    data = (tmp_path / "in.tif").read_bytes()
    run_detect(run_alg, src, tmp_path / "out")
    run_rx(run_alg, src, tmp_path / "rx")
    assert (tmp_path / "in.tif").read_bytes() == data
    # nothing appears beside the input (not even QGIS's statistics cache in.tif.aux.xml)
    assert set(os.listdir(tmp_path)) == {"in.tif", "out", "rx"}


# --------------------------------------------------------------------------
# cancel

def test_cancel_during_scoring(tmp_path, provider):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProject
    image = scene(3, 140, 130).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", image)
    out = tmp_path / "out"
    score, polygons = outputs(out)
    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(value):
        seen.append(value)
        if value > 15:  # band statistics are done, tiles are being scored
            feedback.cancel()
    feedback.progressChanged.connect(on_progress)
    project = QgsProject.instance()
    layers_before = set(project.mapLayers())
    params = {"INPUT": src, "DEVICE": 1, "TILE_SIZE": 32, "OVERLAP": 16,
              "OUTPUT_SCORE": score, "OUTPUT_POLYGONS": polygons}
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.runAndLoadResults("anomaly:detect", dict(params), feedback=feedback)
    assert max(seen) < 90
    assert leftovers(out) == []
    assert set(project.mapLayers()) == layers_before
    # a second run afterwards succeeds
    result = processing.run("anomaly:detect", dict(params), feedback=QgsProcessingFeedback())
    check_scores(src, score)
    assert result["COUNT"] >= 1


def test_cancel_rx(tmp_path, run_alg):
    from qgis.core import QgsProcessingFeedback
    src = write_raster(tmp_path / "in.tif", scene(2, 40, 40).astype(np.float32))
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    out = tmp_path / "out"
    score, _ = outputs(out)
    assert_refused(lambda: run_alg("anomaly:rx", {"INPUT": src, "OUTPUT": score}, feedback),
                   "Cancelled", out)


# --------------------------------------------------------------------------
# weights

def _weights_copy(tmp_path, damage):
    folder = tmp_path / "weights"
    folder.mkdir()
    target = folder / "detector.pt"
    shutil.copy(weights_module.DEFAULT_WEIGHTS, target)
    shutil.copy(weights_module.card_path(weights_module.DEFAULT_WEIGHTS), folder / "detector.json")
    data = bytearray(target.read_bytes())
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(bytes(data[:len(data) // 3]))
    elif damage == "tampered":
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("damage, words", [("missing", "not found.*Reinstall"),
                                           ("truncated", "corrupt or was modified"),
                                           ("tampered", "corrupt or was modified")])
def test_weights_problems(tmp_path, run_alg, monkeypatch, damage, words):
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", _weights_copy(tmp_path, damage))
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    assert_refused(lambda: run_detect(run_alg, src, out), words, out)


# --------------------------------------------------------------------------
# parameter values

@pytest.mark.parametrize("params, words", [
    ({"THRESHOLD_METHOD": 0, "THRESHOLD": 0.0}, "greater than 0 and at most 1"),
    ({"THRESHOLD_METHOD": 0, "THRESHOLD": -0.2}, "greater than 0 and at most 1"),
    ({"THRESHOLD_METHOD": 0, "THRESHOLD": 1.5}, "greater than 0 and at most 1"),
    ({"THRESHOLD_METHOD": 7}, "THRESHOLD_METHOD must be"),
    ({"MIN_AREA": -3}, "MIN_AREA .* at least 1"),
    ({"TOP_N": -1}, "TOP_N must be 0"),
    ({"BANDS": [1, 5]}, "Band 5 does not exist.*Choose band numbers from 1 to 2"),
])
def test_parameter_out_of_range(tmp_path, run_alg, params, words):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    assert_refused(lambda: run_detect(run_alg, src, out, **params), words, out)


def test_polygonize_parameters_out_of_range(tmp_path, run_alg):
    src = write_raster(tmp_path / "s.tif", scene(1, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    for params, words in (({"THRESHOLD": 2.0}, "at most 1"), ({"MIN_AREA": 0}, "MIN_AREA"),
                          ({"TOP_N": -4}, "TOP_N")):
        assert_refused(lambda: run_alg("anomaly:polygonize", {
            "INPUT": src, "OUTPUT": str(out / "p.gpkg"), **params}), words, out)


def test_rx_band_out_of_range(tmp_path, run_alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    assert_refused(lambda: run_rx(run_alg, src, out, BANDS=[3]), "Band 3 does not exist", out)


def test_fixed_threshold_accepts_any_finite_value(tmp_path, run_alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    result = run_detect(run_alg, src, tmp_path / "out", THRESHOLD_METHOD=1, THRESHOLD=5.0)
    assert result["COUNT"] == 0  # detector scores lie in [0, 1]
    result = run_detect(run_alg, src, tmp_path / "out2", THRESHOLD_METHOD=2, THRESHOLD=-7)
    assert result["COUNT"] >= 0


# --------------------------------------------------------------------------
# triage-ready polygons

def test_top_n_and_centroids(tmp_path, run_alg):
    from qgis.core import QgsPointXY, QgsVectorLayer
    image = np.random.default_rng(1).uniform(0, 1, (30, 40)).astype(np.float32)
    spots = [(5, 5, 9.0), (20, 30, 8.0), (10, 25, 7.0), (25, 8, 6.0)]
    for r, c, v in spots:
        image[r:r + 2, c:c + 2] = v
    src = write_raster(tmp_path / "s.tif", image)
    res = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 5,
                                         "TOP_N": 2, "OUTPUT": str(tmp_path / "p.gpkg")})
    assert res["COUNT"] == 2
    layer = QgsVectorLayer(res["OUTPUT"], "p", "ogr")
    feats = sorted(layer.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in feats] == [1, 2]
    assert [f["score_max"] for f in feats] == [9.0, 8.0]
    for f, (r, c, _) in zip(feats, spots):
        x = GT[0] + GT[1] * (c + 1)  # centre of the 2 x 2 block
        y = GT[3] + GT[5] * (r + 1)
        assert (f["centroid_x"], f["centroid_y"]) == pytest.approx((x, y))
        assert f.geometry().contains(QgsPointXY(f["centroid_x"], f["centroid_y"])) or \
            f.geometry().boundingBox().contains(QgsPointXY(f["centroid_x"], f["centroid_y"]))
    res = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 5,
                                         "TOP_N": 0, "OUTPUT": str(tmp_path / "all.gpkg")})
    assert res["COUNT"] == 4
