"""Peak points: one point per polygon at its highest-scoring pixel, with its fields."""

import numpy as np
import pytest
from osgeo import ogr

from anomaly_detector.model.vector.points import write_peak_points
from anomaly_detector.model.vector.polygons import polygonize_scores
from conftest import write_raster

GT = (600000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)


def _polygons(tmp_path):
    scores = np.random.default_rng(7).uniform(0, 0.5, (50, 60)).astype(np.float32)
    scores[10:14, 20:25] = 0.8
    scores[12, 22] = 0.95      # the first polygon peaks here
    scores[40, 50] = 0.7       # a second, one-pixel polygon
    src = write_raster(tmp_path / "s.tif", scores, geotransform=GT, epsg=32633)
    polygons = str(tmp_path / "p.gpkg")
    polygonize_scores(src, polygons, method="fixed", threshold=0.6)
    return polygons


def _features(path):
    dataset = ogr.Open(str(path))  # the layer is only valid while its dataset is referenced
    layer = dataset.GetLayer(0)
    return dataset, layer, sorted(layer, key=lambda feature: feature.GetField("rank"))


@pytest.mark.parametrize("name", ["peaks.gpkg", "peaks.geojson", "peaks.shp"])
def test_points_sit_on_the_peaks_with_the_polygons_fields(tmp_path, name):
    polygons = _polygons(tmp_path)
    assert write_peak_points(polygons, str(tmp_path / name)) == 2
    _, _, polygon_features = _features(polygons)
    _, layer, points = _features(tmp_path / name)
    assert ogr.GT_Flatten(layer.GetGeomType()) == ogr.wkbPoint
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32633"
    assert [p.GetField("rank") for p in points] == [1, 2]
    first = points[0].GetGeometryRef()
    assert (first.GetX(), first.GetY()) == pytest.approx((GT[0] + 22.5 * 10, GT[3] - 12.5 * 10))
    for point, polygon in zip(points, polygon_features):
        for field in ("score_max", "pixels", "lon", "lat", "area_m2", "top_share"):
            assert point.GetField(field) == pytest.approx(polygon.GetField(field)), field


def test_a_bad_extension_is_refused_and_nothing_is_written(tmp_path):
    polygons = _polygons(tmp_path)
    with pytest.raises(Exception, match="vector output .* extension '.txt'"):
        write_peak_points(polygons, str(tmp_path / "peaks.txt"))
    assert not (tmp_path / "peaks.txt").exists()
