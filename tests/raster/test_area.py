"""Area of interest (MASK polygons, EXTENT) of anomaly:rx, anomaly:detect and the batch entry."""

import json
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from anomaly_detector.model.raster.area import Window, area_source, prepare_area
from anomaly_detector.model.nn.detector import detect_raster, detection_statistics
from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.classic.rx import rx_score_raster
from conftest import DEFAULT_EPSG, DEFAULT_GT, PYPATH, read_raster, run_qgis_process, write_raster
from scenes import numpy_rx

X0, PX, Y0 = DEFAULT_GT[0], DEFAULT_GT[1], DEFAULT_GT[3]  # 10 m pixels of EPSG:32633
HEIGHT, WIDTH = 48, 64
# a triangle with corners on pixel corners (column, row): every pixel centre lies at least
# 0.1 pixel from its edges, so reprojection cannot move a centre across one
TRIANGLE = [(6, 4), (46, 24), (36, 44)]
LEFT_HALF = [(-1, -1), (32, -1), (32, HEIGHT + 1), (-1, HEIGHT + 1)]
RIGHT_SQUARE = [(40, 10), (60, 10), (60, 30), (40, 30)]


def _srs(epsg):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _to_crs(points, epsg):
    """Raster (column, row) positions -> coordinates in EPSG ``epsg``."""
    transform = osr.CoordinateTransformation(_srs(DEFAULT_EPSG), _srs(epsg))
    return [transform.TransformPoint(X0 + c * PX, Y0 - r * PX)[:2] for c, r in points]


def _polygon(points, epsg):
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in _to_crs(points + points[:1], epsg):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def polygon_file(path, shapes, epsg=4326, kind=ogr.wkbPolygon):
    """A GeoPackage layer 'area' in EPSG ``epsg`` of polygons given in raster (column, row)
    positions (of lines along them with ``kind`` wkbLineString)."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("area", _srs(epsg), kind)
    for points in shapes:
        geometry = _polygon(points, epsg)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry if kind == ogr.wkbPolygon else geometry.Boundary())
        layer.CreateFeature(feature)
    ds = None
    return str(path)


def inside(points, epsg=4326):
    """Which pixel centres lie inside the polygon, tested in EPSG ``epsg`` (the polygon's)."""
    polygon = _polygon(points, epsg)
    centres = [(c + 0.5, r + 0.5) for r in range(HEIGHT) for c in range(WIDTH)]
    out = [polygon.Contains(ogr.CreateGeometryFromWkt(f"POINT ({x!r} {y!r})"))
           for x, y in _to_crs(centres, epsg)]
    return np.array(out).reshape(HEIGHT, WIDTH)


def two_halves(seed=0, nodata=-1.0):
    """3 bands; the left half ~ N(100, 5), the right half ~ N(300, 40) with other
    correlations; a few nodata pixels in the left half."""
    rng = np.random.default_rng(seed)
    a = rng.normal(100, 5, (3, HEIGHT, WIDTH))
    a[1] += 0.8 * (a[0] - 100)
    right = rng.normal(300, 40, (3, HEIGHT, WIDTH // 2))
    right[2] -= 0.9 * (right[0] - 300)
    a[:, :, WIDTH // 2:] = right
    a[:, 20:23, 10:13] = nodata
    return a.astype(np.float32)


@pytest.fixture
def scene(tmp_path):
    a = two_halves()
    return a, write_raster(tmp_path / "scene.tif", a, nodata=-1.0)


def _valid(a):
    return np.all(a != -1.0, axis=0)


def test_mask_in_another_crs_gives_nodata_exactly_outside(tmp_path, scene, run_alg):
    a, src = scene
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE], epsg=4326)
    out = str(tmp_path / "rx.tif")
    run_alg("anomaly:rx", {"INPUT": src, "MASK": mask, "OUTPUT": out})
    scores, gt, _, nodata, size = read_raster(out)
    area = inside(TRIANGLE) & _valid(a)
    assert size == (WIDTH, HEIGHT) and gt == DEFAULT_GT and nodata == NODATA
    assert 300 < area.sum() < 1000  # the triangle spans both halves and some nodata
    np.testing.assert_array_equal(scores != NODATA, area)
    np.testing.assert_allclose(scores[area], numpy_rx(a, area)[area], rtol=1e-5, atol=1e-5)


def test_rx_statistics_come_from_the_masked_half(tmp_path, scene, run_alg):
    a, src = scene
    mask = polygon_file(tmp_path / "left.gpkg", [LEFT_HALF], epsg=4326)
    out = str(tmp_path / "rx.tif")
    run_alg("anomaly:rx", {"INPUT": src, "MASK": mask, "OUTPUT": out})
    scores = read_raster(out)[0]
    left = a[:, :, :WIDTH // 2]
    alone = numpy_rx(left, _valid(left))
    got = scores[:, :WIDTH // 2]
    assert np.all(scores[:, WIDTH // 2:] == NODATA)
    np.testing.assert_array_equal(got != NODATA, _valid(left))
    np.testing.assert_allclose(got[_valid(left)], alone[_valid(left)], rtol=1e-5, atol=1e-5)
    # the whole raster's statistics would give other scores
    whole = numpy_rx(a, _valid(a))[:, :WIDTH // 2]
    assert np.abs(whole - alone)[_valid(left)].max() > 1.0


def test_selected_features_only(tmp_path, scene, run_alg):
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsProject, QgsVectorLayer
    a, src = scene
    path = polygon_file(tmp_path / "two.gpkg", [TRIANGLE, RIGHT_SQUARE], epsg=32633)
    layer = QgsVectorLayer(path, "two", "ogr")
    QgsProject.instance().addMapLayer(layer)
    try:
        square = [f.id() for f in layer.getFeatures()][1]
        layer.selectByIds([square])
        for selected_only, expected in ((True, inside(RIGHT_SQUARE, 32633)),
                                        (False, inside(TRIANGLE, 32633)
                                         | inside(RIGHT_SQUARE, 32633))):
            out = str(tmp_path / f"rx_{selected_only}.tif")
            mask = QgsProcessingFeatureSourceDefinition(layer.id(),
                                                        selectedFeaturesOnly=selected_only)
            run_alg("anomaly:rx", {"INPUT": src, "MASK": mask, "OUTPUT": out})
            np.testing.assert_array_equal(read_raster(out)[0] != NODATA, expected & _valid(a))
        assert layer.selectedFeatureIds() == [square]  # the selection is left as it was
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_extent_gives_the_aligned_window(tmp_path, scene, run_alg):
    a, src = scene
    # columns 10.3 to 30.2 and rows 5.4 to 25.0: pixels 10..30 and 5..24
    xmin, xmax = X0 + 10.3 * PX, X0 + 30.2 * PX
    ymin, ymax = Y0 - 25.0 * PX, Y0 - 5.4 * PX
    out = str(tmp_path / "rx.tif")
    run_alg("anomaly:rx", {"INPUT": src, "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32633]",
                           "OUTPUT": out})
    scores, gt, wkt, _, size = read_raster(out)
    assert size == (21, 20)
    assert gt == pytest.approx((X0 + 10 * PX, PX, 0.0, Y0 - 5 * PX, 0.0, -PX), abs=1e-6)
    assert osr.SpatialReference(wkt).GetAuthorityCode(None) == "32633"
    window = a[:, 5:25, 10:31]
    valid = _valid(window)
    np.testing.assert_array_equal(scores != NODATA, valid)
    np.testing.assert_allclose(scores[valid], numpy_rx(window, valid)[valid], rtol=1e-5,
                               atol=1e-5)


def test_extent_runs_where_gdal_raises_exceptions(tmp_path, scene, run_alg):
    """Other code in the process may call gdal.UseExceptions(): the temporary mask that an
    extent alone never writes is still cleaned up without an error."""
    a, src = scene
    raising = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        out = str(tmp_path / "rx.tif")
        run_alg("anomaly:rx", {"INPUT": src, "OUTPUT": out,
                               "EXTENT": f"{X0 + 10 * PX},{X0 + 30 * PX},{Y0 - 25 * PX},"
                                         f"{Y0 - 5 * PX} [EPSG:32633]"})
    finally:
        if not raising:
            gdal.DontUseExceptions()
    assert read_raster(out)[4] == (20, 20)


def test_extent_in_another_crs_is_reprojected(tmp_path, scene, run_alg):
    a, src = scene
    lons, lats = zip(*_to_crs([(12.5, 6.5), (40.5, 6.5), (12.5, 30.5), (40.5, 30.5)], 4326))
    out = str(tmp_path / "rx.tif")
    extent = f"{min(lons)},{max(lons)},{min(lats)},{max(lats)} [EPSG:4326]"
    run_alg("anomaly:rx", {"INPUT": src, "EXTENT": extent, "OUTPUT": out})
    _, gt, _, _, (width, height) = read_raster(out)
    box = osr.CoordinateTransformation(_srs(4326), _srs(DEFAULT_EPSG)).TransformBounds(
        min(lons), min(lats), max(lons), max(lats), 21)
    column, row = (gt[0] - X0) / PX, (Y0 - gt[3]) / PX
    assert column == round(column) and row == round(row)  # on the input's pixel grid
    # the window covers the extent's bounds in the raster's CRS, by less than a pixel more
    assert 0 <= box[0] - gt[0] < PX and 0 <= gt[3] - box[3] < PX
    assert 0 <= gt[0] + width * PX - box[2] < PX and 0 <= box[1] - (gt[3] - height * PX) < PX


def test_extent_outside_the_raster_is_refused(tmp_path, scene, run_alg):
    from qgis.core import QgsProcessingException
    _, src = scene
    out = tmp_path / "rx.tif"
    with pytest.raises(QgsProcessingException, match="lies outside the raster") as error:
        run_alg("anomaly:rx", {"INPUT": src, "EXTENT": "0,100,0,100 [EPSG:32633]",
                               "OUTPUT": str(out)})
    assert "Choose an extent that overlaps the raster" in str(error.value)
    assert not out.exists()


@pytest.mark.parametrize("case, words", [
    ("empty", "has no polygons"),
    ("elsewhere", "do not overlap the raster"),
    ("lines", "holds line string geometries, but MASK needs polygons"),
    ("nodata", r"scene.tif' \(inside the area of interest\) contains no valid pixels"),
])
def test_unusable_masks_are_refused(tmp_path, scene, run_alg, case, words):
    from qgis.core import QgsProcessingException
    _, src = scene
    shapes = {"empty": [], "elsewhere": [[(200, 200), (220, 200), (220, 220)]],
              "lines": [TRIANGLE], "nodata": [[(10, 20), (13, 20), (13, 23), (10, 23)]]}[case]
    mask = polygon_file(tmp_path / "mask.gpkg", shapes,
                        kind=ogr.wkbLineString if case == "lines" else ogr.wkbPolygon)
    out = tmp_path / "rx.tif"
    with pytest.raises(QgsProcessingException, match=words):
        run_alg("anomaly:rx", {"INPUT": src, "MASK": mask, "OUTPUT": str(out)})
    assert not out.exists()


def test_an_output_replacing_the_mask_is_refused(tmp_path, scene, run_alg):
    from qgis.core import QgsProcessingException
    _, src = scene
    mask = polygon_file(tmp_path / "mask.gpkg", [TRIANGLE])
    before = (tmp_path / "mask.gpkg").read_bytes()
    with pytest.raises(QgsProcessingException, match="is the MASK layer's file"):
        run_alg("anomaly:detect", {"INPUT": src, "MASK": mask,
                                   "OUTPUT_SCORE": str(tmp_path / "score.tif"),
                                   "OUTPUT_POLYGONS": mask})
    assert (tmp_path / "mask.gpkg").read_bytes() == before


def test_detect_with_an_extent_equals_detect_on_the_window_alone(tmp_path, scene, run_alg):
    a, src = scene
    cropped = str(tmp_path / "left.tif")
    gdal.Translate(cropped, src, srcWin=[0, 0, WIDTH // 2, HEIGHT])
    extent = f"{X0},{X0 + WIDTH // 2 * PX},{Y0 - HEIGHT * PX},{Y0} [EPSG:32633]"
    outputs = {name: str(tmp_path / name) for name in ("a.tif", "a.gpkg", "b.tif", "b.gpkg")}
    run_alg("anomaly:detect", {"INPUT": src, "EXTENT": extent, "DEVICE": 1,
                               "OUTPUT_SCORE": outputs["a.tif"],
                               "OUTPUT_POLYGONS": outputs["a.gpkg"]})
    run_alg("anomaly:detect", {"INPUT": cropped, "DEVICE": 1, "OUTPUT_SCORE": outputs["b.tif"],
                               "OUTPUT_POLYGONS": outputs["b.gpkg"]})
    got, reference = read_raster(outputs["a.tif"]), read_raster(outputs["b.tif"])
    assert got[1:] == reference[1:]  # geotransform, CRS, nodata, size
    assert np.abs(got[0] - reference[0]).max() < 1e-5


def test_detect_with_a_mask_scores_and_outlines_only_inside(tmp_path, scene, run_alg):
    a, src = scene
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE])
    score, polygons = str(tmp_path / "score.tif"), str(tmp_path / "anomalies.gpkg")
    result = run_alg("anomaly:detect", {"INPUT": src, "MASK": mask, "DEVICE": 1,
                                        "THRESHOLD": 0.05, "OUTPUT_SCORE": score,
                                        "OUTPUT_POLYGONS": polygons})
    area = inside(TRIANGLE) & _valid(a)
    scores = read_raster(score)[0]
    np.testing.assert_array_equal(scores != NODATA, area)
    assert result["VALID_PIXELS"] == area.sum() and result["COUNT"] >= 1
    triangle = _polygon(TRIANGLE, DEFAULT_EPSG)
    ds = ogr.Open(polygons)
    for feature in ds.GetLayer(0):
        assert triangle.Contains(feature.GetGeometryRef().Centroid())
    ds = None


def test_detector_statistics_come_from_inside_the_area(tmp_path, scene):
    a, src = scene
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE])
    area = prepare_area(src, str(tmp_path / "mask.tif"), mask=mask)
    with area_source(src, mask_path=area.mask_path) as path:
        mean, covariance, _ = detection_statistics(path)
    pixels = a[:, inside(TRIANGLE) & _valid(a)].astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(covariance, np.cov(pixels), rtol=1e-9)


def test_mask_combines_with_the_raster_own_mask(tmp_path):
    rng = np.random.default_rng(1)
    src = write_raster(tmp_path / "masked.tif", rng.normal(50, 3, (2, HEIGHT, WIDTH)))
    ds = gdal.Open(src, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    own = np.full((HEIGHT, WIDTH), 255, np.uint8)
    own[:, :20] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(own)
    ds = None
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE])
    area = prepare_area(src, str(tmp_path / "mask.tif"), mask=mask)
    rx_score_raster(src, str(tmp_path / "rx.tif"), mask_path=area.mask_path)
    expected = inside(TRIANGLE) & (own > 0)
    np.testing.assert_array_equal(read_raster(tmp_path / "rx.tif")[0] != NODATA, expected)


def test_qgis_process_with_mask_and_extent(tmp_path, scene):
    a, src = scene
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE], epsg=4326)
    score, polygons = tmp_path / "score.tif", tmp_path / "anomalies.gpkg"
    extent = f"{X0 + 20 * PX},{X0 + WIDTH * PX},{Y0 - HEIGHT * PX},{Y0} [EPSG:32633]"
    run = run_qgis_process(["--json", "run", "anomaly:detect", f"--INPUT={src}",
                            f"--MASK={mask}", f"--EXTENT={extent}", "--DEVICE=1",
                            f"--OUTPUT_SCORE={score}", f"--OUTPUT_POLYGONS={polygons}"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    scores, gt, _, _, size = read_raster(score)
    area = (inside(TRIANGLE) & _valid(a))[:, 20:]
    assert size == (WIDTH - 20, HEIGHT) and gt == pytest.approx((X0 + 20 * PX, *DEFAULT_GT[1:]))
    np.testing.assert_array_equal(scores != NODATA, area)
    assert results["VALID_PIXELS"] == area.sum() and polygons.exists()


def test_batch_entry_with_mask_and_extent(tmp_path, scene):
    a, src = scene
    mask = polygon_file(tmp_path / "triangle.gpkg", [TRIANGLE], epsg=4326)
    extent = f"{X0 + 20 * PX},{Y0 - HEIGHT * PX},{X0 + WIDTH * PX},{Y0},32633"
    run = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch", src,
                          "--out", str(tmp_path / "out"), "--workers", "1", "--mask", mask,
                          f"--extent={extent}"],
                         capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(PYPATH) + ":" + ":".join(sys.path),
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 scene(s) scored, 0 failed" in run.stdout
    area = prepare_area(src, str(tmp_path / "mask.tif"), mask=mask, extent_crs="EPSG:32633",
                        extent=(X0 + 20 * PX, Y0 - HEIGHT * PX, X0 + WIDTH * PX, Y0))
    assert area.window == Window(20, 0, WIDTH - 20, HEIGHT)
    reference = str(tmp_path / "reference.tif")
    detect_raster(src, reference, device="cpu", window=area.window, mask_path=area.mask_path)
    got, expected = read_raster(tmp_path / "out" / "scene_score.tif"), read_raster(reference)
    assert got[1:] == expected[1:]
    assert np.abs(got[0] - expected[0]).max() < 1e-5
    np.testing.assert_array_equal(got[0] != NODATA, (inside(TRIANGLE) & _valid(a))[:, 20:])
    assert (tmp_path / "out" / "scene_anomalies.gpkg").exists()
    assert not list((tmp_path / "out").glob(".*"))  # the area's temporary files are removed


def test_batch_entry_refuses_a_bad_extent(tmp_path, scene):
    _, src = scene
    run = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch", src,
                          "--out", str(tmp_path / "out"), "--extent=3,2,1"],
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(PYPATH) + ":" + ":".join(sys.path),
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert "give xmin,ymin,xmax,ymax[,EPSG]" in run.stderr
    assert not (tmp_path / "out").exists()
