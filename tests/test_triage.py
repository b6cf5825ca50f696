"""Triage logic on real anomaly polygons: rank order, the review field written into the
GeoPackage, read-only layers refused with a sentence, the CSV export, the map view."""

import csv
import math
import os
import zipfile

import numpy as np
import pytest
from osgeo import gdal

from conftest import vector_rows, write_raster

# (row, col, side, contrast): small spectral targets in a 3-band noise scene
TARGETS = [(8, 8, 2, 60), (30, 12, 3, 40), (20, 36, 1, 80), (40, 40, 2, 30)]


@pytest.fixture
def anomalies(tmp_path, run_alg):
    """A GeoPackage of ranked anomaly polygons: anomaly:rx, then anomaly:polygonize."""
    image = np.random.default_rng(1).normal(100, 4, (3, 48, 48)).astype(np.float32)
    for row, col, side, contrast in TARGETS:
        image[0, row:row + side, col:col + side] += contrast
        image[1, row:row + side, col:col + side] -= contrast / 2
    src = write_raster(tmp_path / "scene.tif", image)
    rx = run_alg("anomaly:rx", {"INPUT": src, "OUTPUT": str(tmp_path / "rx.tif")})
    out = run_alg("anomaly:polygonize", {"INPUT": rx["OUTPUT"], "THRESHOLD_METHOD": 1,
                                         "THRESHOLD": 5.0, "OUTPUT": str(tmp_path / "a.gpkg")})
    assert out["COUNT"] == len(TARGETS)
    return out["OUTPUT"]


def layer_of(path, name="anomalies"):
    from qgis.core import QgsVectorLayer
    layer = QgsVectorLayer(str(path), name)
    assert layer.isValid()
    return layer


def test_candidates_come_in_rank_order(anomalies):
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer
    from anomaly_detector.triage.review import candidates, is_anomaly_layer, summary
    found = candidates(layer_of(anomalies))
    rows = vector_rows(anomalies)
    assert [c.values["rank"] for c in found] == [1, 2, 3, 4]
    for c in found:
        for name in ("rank", "score_max", "lon", "lat", "area_m2"):
            assert c.values[name] == rows[c.fid][name]
        assert c.review == ""
    assert summary(found) == "4 candidates: 0 confirmed, 0 dismissed, 0 unsure, 4 to review"

    # features stored out of order, one without a rank: by rank, the unranked last
    memory = QgsVectorLayer("Polygon?crs=EPSG:32633&field=rank:integer&field=score_max:double",
                            "shuffled", "memory")
    features = []
    for rank in (3, None, 1, 2):
        feature = QgsFeature(memory.fields())
        feature.setAttributes([rank, 1.0])
        feature.setGeometry(QgsGeometry.fromWkt("POLYGON((0 0,1 0,1 1,0 1,0 0))"))
        features.append(feature)
    memory.dataProvider().addFeatures(features)
    assert [c.values["rank"] for c in candidates(memory)] == [1, 2, 3, None]
    assert is_anomaly_layer(memory)
    assert not is_anomaly_layer(QgsVectorLayer("Polygon?field=id:integer", "plain", "memory"))
    assert not is_anomaly_layer(QgsVectorLayer("Point?field=rank:integer", "points", "memory"))


def test_reviews_are_written_into_the_geopackage(anomalies):
    from anomaly_detector.triage.review import REVIEW_FIELD, TriageError, candidates, set_review
    layer = layer_of(anomalies)
    assert layer.fields().indexOf(REVIEW_FIELD) < 0
    first, second, third, fourth = candidates(layer)
    set_review(layer, first.fid, "confirmed")
    set_review(layer, second.fid, "dismissed")
    set_review(layer, third.fid, "unsure")
    set_review(layer, fourth.fid, "dismissed")
    set_review(layer, fourth.fid, "")  # cleared again
    assert not layer.isEditable() and not layer.isModified()  # in the file, not in a buffer
    written = {fid: row[REVIEW_FIELD] for fid, row in vector_rows(anomalies).items()}
    assert written == {first.fid: "confirmed", second.fid: "dismissed", third.fid: "unsure",
                       fourth.fid: None}
    # a fresh layer of the file (another project, a model) reads the same
    assert [c.review for c in candidates(layer_of(anomalies, "again"))] == \
        ["confirmed", "dismissed", "unsure", ""]
    with pytest.raises(TriageError, match="Unknown review 'maybe': use one of confirmed, "
                                          "dismissed, unsure"):
        set_review(layer, first.fid, "maybe")
    assert vector_rows(anomalies)[first.fid][REVIEW_FIELD] == "confirmed"


def test_read_only_layers_are_refused_with_a_sentence(anomalies, tmp_path):
    from anomaly_detector.triage.review import TriageError, set_review
    read_only = layer_of(anomalies)
    read_only.setReadOnly(True)
    with pytest.raises(TriageError, match="read-only in this project: untick its Read-only"):
        set_review(read_only, 1, "confirmed")
    editing = layer_of(anomalies)
    editing.startEditing()
    with pytest.raises(TriageError, match="is in editing mode: save or discard its edits"):
        set_review(editing, 1, "confirmed")
    editing.rollBack()
    assert "review" not in vector_rows(anomalies)[1]  # nothing was written

    # a file inside a zip archive cannot be changed at all
    gdal.VectorTranslate(str(tmp_path / "a.geojson"), anomalies, format="GeoJSON")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.write(tmp_path / "a.geojson", "a.geojson")
    zipped = layer_of(f"/vsizip/{tmp_path / 'a.zip'}/a.geojson", "zipped")
    with pytest.raises(TriageError, match=r"The layer 'zipped' cannot store reviews: its data "
                                          r"source .* is read-only\. Save it as a GeoPackage"):
        set_review(zipped, 1, "confirmed")


def test_csv_export_has_the_layers_numbers_and_reviews(anomalies, tmp_path):
    from anomaly_detector.triage.review import TriageError, candidates, export_csv, set_review
    layer = layer_of(anomalies)
    found = candidates(layer)
    set_review(layer, found[0].fid, "confirmed")
    set_review(layer, found[2].fid, "dismissed")
    path = tmp_path / "review.csv"
    assert export_csv(layer, path) == 4
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["rank", "score_max", "score_mean", "lon", "lat", "area_m2",
                              "top_share", "pixels", "peak_x", "peak_y", "review"]
    rows = sorted(vector_rows(anomalies).values(), key=lambda r: r["rank"])
    assert [int(r["rank"]) for r in table] == [1, 2, 3, 4]
    for line, row in zip(table, rows):
        for name in ("lon", "lat", "score_max", "area_m2", "peak_x", "peak_y"):
            assert float(line[name]) == row[name], name  # every digit
    assert [r["review"] for r in table] == ["confirmed", "", "dismissed", ""]

    # handing on: without the dismissed ones; the previous file is replaced whole
    assert export_csv(layer, path, skip_dismissed=True) == 3
    with open(path, newline="") as handle:
        assert [r["rank"] for r in csv.DictReader(handle)] == ["1", "2", "4"]
    assert not [n for n in os.listdir(tmp_path) if "partial" in n]
    with pytest.raises(TriageError, match="The folder '.*missing' does not exist"):
        export_csv(layer, tmp_path / "missing" / "review.csv")


def test_view_is_centred_on_the_candidate_with_context(anomalies):
    from anomaly_detector.triage.review import MIN_VIEW_PIXELS, candidates, view_extent
    layer = layer_of(anomalies)
    for c in candidates(layer):
        box = layer.getFeature(c.fid).geometry().boundingBox()
        view = view_extent(layer, c.fid)
        assert view.contains(box)
        assert view.center().x() == pytest.approx(box.center().x())
        assert view.center().y() == pytest.approx(box.center().y())
        assert view.width() == pytest.approx(view.height())
        # a 1-pixel target still shows its surroundings: 48 pixels of 10 m
        assert view.width() >= max(3 * box.width(), MIN_VIEW_PIXELS * 10.0) - 1e-6
    single = candidates(layer)[0]
    assert single.values["pixels"] == 1
    assert math.isclose(view_extent(layer, single.fid).width(), MIN_VIEW_PIXELS * 10.0)
