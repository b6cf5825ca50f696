"""Thresholds and ranked polygons against a known synthetic score raster."""

import math
import tracemalloc

import numpy as np
import pytest
from osgeo import ogr, osr
from scipy import ndimage

from anomaly_detector.model.vector.groups import strip_rows
from anomaly_detector.model.vector.output import count_polygons
from anomaly_detector.model.vector.polygons import polygonize_scores
from anomaly_detector.model.vector import polygons, threshold
from anomaly_detector.model.vector.threshold import compute_threshold
from conftest import write_raster
from scenes import GT, ND, ORDER, check_features, read_features, synthetic_scores


@pytest.mark.parametrize("method, value", [("fixed", 5.0), ("top_fraction", None),
                                           ("automatic", 0.0)])
def test_polygonize_core(tmp_path, method, value):
    src, a = synthetic_scores(tmp_path)
    n_valid = int((a != ND).sum())
    if value is None:
        value = 20 / n_valid  # exactly the 20 blob pixels
    out = tmp_path / "poly.gpkg"
    res = polygonize_scores(src, str(out), method=method, threshold=value)
    assert res.count == 4 and count_polygons(str(out)) == 4
    assert res.n_valid == n_valid and res.n_flagged == 20
    feats, epsg = read_features(out)
    assert epsg == "32633"
    check_features(feats, ORDER)


def test_min_area_and_empty_result(tmp_path):
    src, _ = synthetic_scores(tmp_path)
    out = tmp_path / "poly.gpkg"
    assert polygonize_scores(src, str(out), method="fixed", threshold=5, min_area=2).count == 3
    check_features(read_features(out)[0], ["A", "C", "B"])
    assert polygonize_scores(src, str(out), method="fixed", threshold=5, min_area=5).count == 1
    assert polygonize_scores(src, str(out), method="fixed", threshold=100).count == 0
    assert count_polygons(str(out)) == 0


def test_a_score_raster_s_own_mask_makes_pixels_invalid(tmp_path):
    """Pixels that the score raster's internal mask leaves out are neither valid nor
    flagged, however high they score."""
    from osgeo import gdal
    a = np.zeros((20, 20), np.float32)
    a[2:4, 2:4], a[10, 10] = 50.0, 9.0
    path = write_raster(tmp_path / "masked.tif", a)
    ds = gdal.Open(path, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((20, 20), 255, np.uint8)
    mask[0:5, 0:5] = 0  # the block of 50s and 21 other pixels
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    for method, value in (("fixed", 5.0), ("top_fraction", 1 / 375)):
        result = polygonize_scores(path, str(tmp_path / "p.gpkg"), method=method,
                                   threshold=value)
        assert (result.count, result.n_flagged, result.n_valid) == (1, 1, 375), method
        ((attributes, _),) = read_features(tmp_path / "p.gpkg")[0]
        assert attributes["score_max"] == 9.0


def test_a_fixed_threshold_flags_float32_scores_as_in_float64(tmp_path):
    """Float32 scores are compared with the threshold as float64 numbers: a value one
    float32 step below a threshold that float32 cannot hold is not flagged."""
    below = np.float32(0.1)  # 0.100000001490116...
    threshold_value = float(below) + 1e-12  # rounds to ``below`` in float32
    a = np.zeros((20, 20), np.float32)
    a[2, 2], a[10, 10] = below, np.nextafter(below, np.float32(1))
    src = write_raster(tmp_path / "s.tif", a)
    result = polygonize_scores(src, str(tmp_path / "p.gpkg"), method="fixed",
                               threshold=threshold_value)
    assert (result.count, result.n_flagged) == (1, 1)
    assert threshold.at_least(a, threshold_value).sum() == 1
    assert threshold.at_least(a.astype(np.float64), threshold_value).sum() == 1


@pytest.mark.parametrize("exact_limit", [2_000_000, 10])  # highest values kept; histograms
def test_top_fraction_threshold_is_exact_quantile(tmp_path, monkeypatch, exact_limit):
    monkeypatch.setattr(threshold, "_EXACT_LIMIT", exact_limit)
    rng = np.random.default_rng(5)
    a = rng.gamma(2.0, size=(123, 97)).astype(np.float32)
    a[:5, :] = np.round(a[:5, :], 1)  # ties
    a[60:70, 10:20] = ND  # nodata does not count
    src = write_raster(tmp_path / "s.tif", a, nodata=ND)
    flat = np.sort(a[a != ND].ravel())[::-1]
    for frac in (0.001, 0.005, 0.1, 1.0):
        k = math.ceil(frac * flat.size)
        assert compute_threshold(src, "top_fraction", frac) == float(flat[k - 1])
    valid = a[a != ND].astype(np.float64)
    assert compute_threshold(src, "automatic") == pytest.approx(
        float(valid.mean() + 3 * valid.std()), rel=1e-6)


@pytest.mark.parametrize("method, value, exact_limit", [
    ("top_fraction", 0.005, 2_000_000), ("top_fraction", 0.1, 10), ("automatic", 0.0, 10),
    ("fixed", 3.0, 10)])
def test_a_stream_fed_while_writing_gives_the_threshold_of_the_raster(
        tmp_path, monkeypatch, method, value, exact_limit):
    """The scoring pipeline feeds the blocks it writes to a ScoreStream: its threshold
    is the one a pass over the written raster finds (beyond _EXACT_LIMIT with the
    histogram passes it still needs), and its polygons are the same."""
    monkeypatch.setattr(threshold, "_EXACT_LIMIT", exact_limit)
    rng = np.random.default_rng(8)
    a = rng.gamma(2.0, size=(150, 130)).astype(np.float32)
    a[:5] = np.round(a[:5], 1)  # ties
    a[40:50, 20:40] = ND
    src = write_raster(tmp_path / "s.tif", a, nodata=ND)
    stream = threshold.ScoreStream(method, value, a.size)
    for y in range(0, 150, 64):  # blocks in another order than the passes read them
        for x in (64, 0):
            block = a[y:y + 64, x:x + 64 if x == 0 else None]
            stream.add(block[threshold.valid_scores(block, ND)])
    expected = compute_threshold(src, method, value)
    if method == "automatic":  # the moments are summed in another order
        assert stream.threshold(src, threshold.open_scores(src, 1)[0]) == pytest.approx(
            expected, rel=1e-12)
        return
    assert stream.threshold(src, threshold.open_scores(src, 1)[0]) == expected
    fed = polygonize_scores(src, str(tmp_path / "fed.gpkg"), method=method, threshold=value,
                            stream=stream)
    read = polygonize_scores(src, str(tmp_path / "read.gpkg"), method=method, threshold=value)
    assert (fed.threshold, fed.count, fed.n_flagged) == (read.threshold, read.count,
                                                           read.n_flagged)
    assert _features(tmp_path / "fed.gpkg") == _features(tmp_path / "read.gpkg")
    with pytest.raises(ValueError, match="not for"):
        polygonize_scores(src, str(tmp_path / "x.gpkg"), method="fixed", threshold=1.5,
                          stream=stream)


def test_shapefile_output_follows_extension(tmp_path):
    src, _ = synthetic_scores(tmp_path)
    out = tmp_path / "poly.shp"
    assert polygonize_scores(src, str(out), method="fixed", threshold=5).count == 4
    assert out.exists()


def test_polygons_are_ranked_by_score_not_by_size(tmp_path):
    # sizes run opposite to scores: ranking by size (or by pixel count) would reverse the order
    a = np.zeros((40, 60), np.float32)
    blobs = [(0.9, (5, 5), 1), (0.8, (5, 20), 2), (0.7, (5, 40), 3), (0.6, (25, 20), 5)]
    for score, (r, c), side in blobs:
        a[r:r + side, c:c + side] = score
    src = write_raster(tmp_path / "s.tif", a, geotransform=GT)
    out = str(tmp_path / "p.gpkg")
    result = polygonize_scores(src, out, method="fixed", threshold=0.5)
    assert result.count == 4
    ds = ogr.Open(out)
    rows = sorted((f.GetField("rank"), f.GetField("score_max"), f.GetField("pixels"))
                  for f in ds.GetLayer(0))
    assert [r[1] for r in rows] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert [r[2] for r in rows] == [1, 4, 9, 25]


def _ellipsoidal_cell_area(lat: float, dlat: float, dlon: float) -> float:
    """Area in m² of a small lat/lon cell on the WGS 84 ellipsoid."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    s2 = math.sin(math.radians(lat)) ** 2
    meridional = a * (1 - e2) / (1 - e2 * s2) ** 1.5
    normal = a / math.sqrt(1 - e2 * s2)
    return math.radians(dlat) * meridional * math.radians(dlon) * normal * math.cos(math.radians(lat))


@pytest.mark.parametrize("epsg, gt, cell_m2", [
    (32633, (500000.0, 10.0, 0.0, 6650000.0, 0.0, -10.0), 100.0),   # UTM 33N, 10 m pixels
    (4326, (15.0, 1e-4, 0.0, 60.0, 0.0, -1e-4), None),              # geographic, at 60 deg N
])
def test_triage_attributes_on_projected_and_geographic_rasters(tmp_path, epsg, gt, cell_m2):
    a = np.random.default_rng(5).uniform(0, 0.5, (50, 60)).astype(np.float32)
    a[10:14, 20:25] = 0.8     # a 20-pixel target ...
    a[12, 22] = 0.95          # ... peaking here
    a[40, 50] = 0.7           # a one-pixel target
    src = write_raster(tmp_path / "s.tif", a, geotransform=gt, epsg=epsg)
    out = str(tmp_path / "p.gpkg")
    polygonize_scores(src, out, method="fixed", threshold=0.6)
    dataset = ogr.Open(out)  # the layer is only valid while its dataset is referenced
    features = sorted(dataset.GetLayer(0), key=lambda f: f.GetField("rank"))
    first = features[0]
    assert first.GetField("peak_x") == pytest.approx(gt[0] + 22.5 * gt[1])
    assert first.GetField("peak_y") == pytest.approx(gt[3] + 12.5 * gt[5])
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    native = osr.SpatialReference()
    native.ImportFromEPSG(epsg)
    native.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(native, wgs84).TransformPoint(
        first.GetField("peak_x"), first.GetField("peak_y"))
    assert (first.GetField("lon"), first.GetField("lat")) == pytest.approx((lon, lat), abs=1e-9)
    expected = 20 * (cell_m2 or _ellipsoidal_cell_area(lat, 1e-4, 1e-4))
    assert first.GetField("area_m2") == pytest.approx(expected, rel=0.01)
    # scene-relative score: 1 pixel of 3000 scores at least the first peak (0.95), and the
    # 20-pixel target plus the second one score at least the second peak (0.7)
    assert first.GetField("top_share") == pytest.approx(1 / 3000)
    assert features[1].GetField("top_share") == pytest.approx(21 / 3000)


def test_triage_attributes_without_a_crs_leave_lon_lat_and_area_empty(tmp_path):
    a = np.zeros((20, 20), np.float32)
    a[5, 5] = 1.0
    src = write_raster(tmp_path / "s.tif", a, epsg=None)
    out = str(tmp_path / "p.gpkg")
    polygonize_scores(src, out, method="fixed", threshold=0.5)
    dataset = ogr.Open(out)
    feature = next(iter(dataset.GetLayer(0)))
    assert feature.GetField("peak_x") is not None and feature.GetField("top_share") == 1 / 400
    assert feature.GetField("lon") is None and feature.GetField("area_m2") is None


# --------------------------------------------------------------------------
# TOP_N: the best groups are polygonised, all are counted

def _noise_with_targets(tmp_path, height, width):
    """Uniform noise in [0, 1) with five planted targets (scores >= 2) kept 2 pixels away
    from any noise pixel; returns ``(path, scores, targets)`` with each target's peak,
    peak pixel and size, in rank order."""
    a = np.random.default_rng(11).random((height, width), dtype=np.float32)
    boundary = strip_rows(width)  # the U and the square cross strip boundaries
    targets = [  # (pixels, peak pixel, peak)
        ([(r, 100) for r in range(boundary - 24, boundary + 17)]
         + [(r, 110) for r in range(boundary - 24, boundary + 17)]
         + [(boundary + 16, c) for c in range(101, 110)], (boundary - 24, 110), 9.0),
        ([(r, c) for r in range(500, 503) for c in range(700, 704)], (501, 702), 8.0),
        ([(2100, 50), (2101, 51), (2102, 52)], (2101, 51), 7.0),
        ([(2 * boundary - 1, 900)], (2 * boundary - 1, 900), 6.0),
        ([(r, c) for r in (2 * boundary - 1, 2 * boundary) for c in (300, 301)],
         (2 * boundary, 300), 5.5),
    ]
    for pixels, _, _ in targets:
        rows, cols = zip(*pixels)
        a[max(min(rows) - 2, 0):max(rows) + 3, max(min(cols) - 2, 0):max(cols) + 3] = 0.0
    for pixels, (r, c), peak in targets:
        for p in pixels:
            a[p] = 2.0
        a[r, c] = peak
    return write_raster(tmp_path / "noise.tif", a, geotransform=GT), a, targets


def _features(path):
    dataset = ogr.Open(str(path))
    rows = [(f.items(), f.GetGeometryRef().ExportToWkt()) for f in dataset.GetLayer(0)]
    dataset = None
    return rows


def test_top_n_writes_the_first_ranks_of_all_groups_and_counts_them_all(tmp_path):
    width = 1024
    src, a, targets = _noise_with_targets(tmp_path, 2 * strip_rows(width) + 252, width)
    groups = ndimage.label(a >= 0.995, structure=np.ones((3, 3), bool))[1]
    assert groups > 10000  # noise: thousands of one- or two-pixel groups
    every = polygonize_scores(src, str(tmp_path / "all.gpkg"), method="fixed", threshold=0.995,
                              top_n=0)
    best = polygonize_scores(src, str(tmp_path / "best.gpkg"), method="fixed", threshold=0.995,
                             top_n=8)
    assert (every.groups, every.count) == (groups, groups)
    assert (best.groups, best.count) == (groups, 8)
    assert count_polygons(str(tmp_path / "best.gpkg")) == 8
    first = _features(tmp_path / "best.gpkg")
    assert first == _features(tmp_path / "all.gpkg")[:8]
    for rank, ((attrs, _), (pixels, (r, c), peak)) in enumerate(zip(first, targets), start=1):
        assert (attrs["rank"], attrs["score_max"], attrs["pixels"]) == (rank, peak, len(pixels))
        assert (attrs["peak_x"], attrs["peak_y"]) == pytest.approx(
            (GT[0] + (c + 0.5) * GT[1], GT[3] + (r + 0.5) * GT[5]))
        assert attrs["area"] == pytest.approx(100.0 * len(pixels))
    # then the noise groups, from the highest noise pixel down
    assert [attrs["score_max"] for attrs, _ in first[5:]] == np.sort(a[a < 1])[:-4:-1].tolist()


def test_flagged_pixels_kept_or_read_again_give_the_same_polygons(tmp_path, monkeypatch):
    width = 1000  # strips of 1048 rows: they do not end on the label raster's blocks
    src, _, _ = _noise_with_targets(tmp_path, 3 * strip_rows(width) + 17, width)
    kept = polygonize_scores(src, str(tmp_path / "kept.gpkg"), method="fixed",
                             threshold=0.99, top_n=300)
    monkeypatch.setattr(polygons, "REPLAY_PIXELS", 0)
    again = polygonize_scores(src, str(tmp_path / "again.gpkg"), method="fixed",
                              threshold=0.99, top_n=300)
    assert (kept.count, kept.groups, kept.n_flagged) == (again.count, again.groups,
                                                         again.n_flagged)
    assert kept.count == 300
    assert _features(tmp_path / "kept.gpkg") == _features(tmp_path / "again.gpkg")


def test_memory_does_not_grow_with_the_number_of_groups(tmp_path, monkeypatch):
    # pure noise, 5 % flagged: eight times the rows give eight times the groups (339 869),
    # with the same peak of traced memory (per-group objects for every group would grow it).
    # What grows with the flagged pixels, bounded, is left out: a top fraction's highest
    # scores (up to _EXACT_LIMIT; here a fixed threshold) and the flagged pixels kept for the
    # labelling (up to REPLAY_PIXELS; here they are read again)
    monkeypatch.setattr(polygons, "REPLAY_PIXELS", 0)
    peaks = {}
    for height in (1024, 8192):
        a = np.random.default_rng(3).random((height, 1024), dtype=np.float32)
        src = write_raster(tmp_path / f"noise{height}.tif", a)
        out = str(tmp_path / f"noise{height}.gpkg")
        tracemalloc.start()
        try:
            result = polygonize_scores(src, out, method="fixed", threshold=0.95, top_n=100)
            peaks[height] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        flagged = threshold.at_least(a, result.threshold)
        assert result.n_flagged == int(flagged.sum())
        assert result.groups == ndimage.label(flagged, structure=np.ones((3, 3), bool))[1]
        assert result.count == count_polygons(out) == 100
    assert peaks[8192] < 1.15 * peaks[1024], peaks
