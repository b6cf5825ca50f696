"""Headless runs through qgis_process.bin: JSON results, a .model3 chain, bad inputs."""

import json

import numpy as np
import pytest

from conftest import DATA, make_bad_input, read_raster, run_qgis_process, write_raster
from scenes import rx_scene


def _json(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("{"):])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("qp")
    a = rx_scene((3, 80, 70))
    a[:, :3, :] = -1
    return d, write_raster(d / "in.tif", a, nodata=-1)


def test_algorithms_listed():
    r = run_qgis_process(["list"])
    assert r.returncode == 0
    assert "anomaly:rx" in r.stdout and "anomaly:polygonize" in r.stdout


def test_rx_then_polygonize_json(scene):
    d, src = scene
    score, poly = d / "score.tif", d / "poly.gpkg"
    res = _json(run_qgis_process(["--json", "run", "anomaly:rx", f"--INPUT={src}",
                                  "--BANDS=1", "--BANDS=3", f"--OUTPUT={score}"]))
    assert res["results"]["OUTPUT"] == str(score) and score.exists()
    arr, gt, wkt, nd, size = read_raster(score)
    assert size == (70, 80) and np.all(arr[:3] == nd)
    res = _json(run_qgis_process(["--json", "run", "anomaly:polygonize", f"--INPUT={score}",
                                  "--THRESHOLD_METHOD=0", "--THRESHOLD=0.01", "--MIN_AREA=1",
                                  f"--OUTPUT={poly}"]))
    results = res["results"]
    assert poly.exists() and results["COUNT"] == results["POLYGON_COUNT"] >= 1
    assert results["GROUP_COUNT"] == results["POLYGON_COUNT"]  # fewer than TOP_N: all written


def test_model3_chain_runs_headless(scene):
    d, src = scene
    score, poly = d / "m_score.tif", d / "m_poly.gpkg"
    res = _json(run_qgis_process([
        "--json", "run", str(DATA / "rx_polygons.model3"), f"--input_raster={src}",
        f"--anomaly:rx_1:RX score={score}",
        f"--anomaly:polygonize_1:Anomaly polygons={poly}"]))
    assert score.exists() and poly.exists()
    from anomaly_detector.model.vector.output import count_polygons
    assert count_polygons(str(poly)) >= 1
    assert res["results"]


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("text", "not a raster"),
    ("empty", "is empty"),
    ("nodata", "no valid pixels"),
])
def test_bad_inputs_exit_code_1(tmp_path, case, words):
    p = make_bad_input(tmp_path / "bad.tif", case, bands=1, size=6, nodata=0)
    r = run_qgis_process(["run", "anomaly:rx", f"--INPUT={p}", f"--OUTPUT={tmp_path / 'o.tif'}"])
    assert r.returncode == 1
    assert words in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "o.tif").exists()


def test_polygonize_bad_input_exit_code_1(tmp_path):
    r = run_qgis_process(["run", "anomaly:polygonize", f"--INPUT={tmp_path / 'nope.tif'}",
                          f"--OUTPUT={tmp_path / 'o.gpkg'}"])
    assert r.returncode == 1 and "does not exist" in r.stdout + r.stderr
