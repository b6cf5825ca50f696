"""Batch scoring on a Dask LocalCluster: same outputs as one process, failures isolated."""

import io
import subprocess
import sys

import distributed  # noqa: F401 - the batch entry needs it: missing is a failure, not a skip
import numpy as np
import pytest
from osgeo import ogr

from anomaly_detector.model import batch
from anomaly_detector.model.raster.io import open_raster_checked
from anomaly_detector.model.raster.pipeline import assemble_strips, score_raster
from anomaly_detector.model.raster.tiling import plan_tiles
from anomaly_detector.model.nn.detector import detect_raster
from anomaly_detector.model.vector.polygons import polygonize_scores
from conftest import PYPATH, read_raster, write_raster


def _scene(seed, bands=3, height=96, width=120):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 100 + 10 * np.sin(xx / (7.0 + seed)) + 8 * np.cos(yy / 11.0)
    image = base[None] * rng.uniform(0.8, 1.2, (bands, 1, 1)) + rng.normal(0, 2, (bands, height, width))
    for row, col in rng.integers(8, min(height, width) - 8, size=(3, 2)):
        image[:, row - 1:row + 2, col - 1:col + 2] += 60
    return image.astype(np.float32)


def _features(path):
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    return sorted((f.GetField("rank"), round(f.GetField("score_max"), 6), f.GetField("pixels"))
                  for f in layer)


def test_batch_on_local_cluster_equals_single_process(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shapes = [(96, 120), (80, 64), (200, 90), (64, 72)]
    sources = [write_raster(inputs / f"scene{i}.tif", _scene(i, height=h, width=w))
               for i, (h, w) in enumerate(shapes)]
    corrupt = inputs / "broken.tif"
    corrupt.write_bytes(b"II*\x00 this is not a complete GeoTIFF")
    out = tmp_path / "out"
    log = io.StringIO()
    # tile 32 gives scene2 seven tile rows; --split-mp splits it into tile-row groups
    settings = batch.Settings(tile_size=32, overlap=48)
    results = batch.run_batch([str(inputs / "*.tif")], str(out), settings=settings, workers=2,
                              split_mp=0.006, stream=log)
    assert "dashboard" in log.getvalue().lower()
    peaks = log.getvalue().split("Peak memory per worker: ")[1].splitlines()[0].split(", ")
    assert len(peaks) == 2 and all(50 < float(p.split()[0]) < 4096 for p in peaks)  # MiB
    by_name = {r.source.split("/")[-1]: r for r in results}
    assert set(by_name) == {"scene0.tif", "scene1.tif", "scene2.tif", "scene3.tif", "broken.tif"}
    assert not by_name["broken.tif"].ok and "not a raster" in by_name["broken.tif"].error
    assert all(by_name[f"scene{i}.tif"].ok for i in range(4))
    assert by_name["scene2.tif"].strips > 1  # the large scene was split into row groups
    table = batch.summary_table(results)
    assert "FAILED" in table and "4 scene(s) scored, 1 failed" in table
    assert table.splitlines()[0].split()[:4] == ["scene", "status", "groups", "polygons"]
    # fewer groups than --top-n (500 by default): every group is written
    assert all(r.groups == r.count >= 1 for r in results if r.ok)
    for i, src in enumerate(sources):
        ref_score, ref_poly = tmp_path / f"ref{i}.tif", tmp_path / f"ref{i}.gpkg"
        detect_raster(src, str(ref_score), tile_size=32, overlap=48, device="cpu")
        polygonize_scores(str(ref_score), str(ref_poly))
        got, gt, wkt, nodata, size = read_raster(out / f"scene{i}_score.tif")
        ref, rgt, rwkt, _, rsize = read_raster(ref_score)
        assert (size, gt, wkt) == (rsize, rgt, rwkt)
        assert np.abs(got - ref).max() < 1e-5
        assert _features(out / f"scene{i}_anomalies.gpkg") == _features(ref_poly)
    assert not list(out.glob(".*strips*"))  # temporary strips are removed


def test_strips_assemble_into_the_whole_map(tmp_path):
    src = write_raster(tmp_path / "a.tif", _scene(5, height=150, width=70))
    info = open_raster_checked(src)
    plan = plan_tiles(info, None, tile_size=32, overlap=4)
    box = lambda t, v: t.mean(axis=0)  # noqa: E731 - a per-pixel scorer
    score_raster(src, str(tmp_path / "whole.tif"), box, plan=plan)
    strips = []
    for i, rows in enumerate(plan.row_groups(3)):
        path = str(tmp_path / f"strip{i}.tif")
        score_raster(src, path, box, plan=plan, row_range=rows)
        strips.append((path, plan.write_rows(*rows)[0]))
    assemble_strips(strips, str(tmp_path / "joined.tif"), src)
    whole, joined = read_raster(tmp_path / "whole.tif"), read_raster(tmp_path / "joined.tif")
    np.testing.assert_array_equal(whole[0], joined[0])
    assert whole[1:] == joined[1:]


def test_batch_command_line_reports_failures(tmp_path):
    (tmp_path / "bad.tif").write_text("not a raster")
    run = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch",
                          str(tmp_path / "bad.tif"), str(tmp_path / "missing.tif"),
                          "--out", str(tmp_path / "out"), "--workers", "1"],
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(PYPATH) + ":" + ":".join(sys.path),
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1, run.stderr[-2000:]
    assert "0 scene(s) scored, 2 failed" in run.stdout
    assert "does not exist" in run.stdout


def test_batch_refuses_bfloat16_where_the_cpu_would_emulate_it(monkeypatch):
    from anomaly_detector.model.batch_tasks import Settings
    from anomaly_detector.model.nn import fused
    assert Settings(precision="float32").problem() is None
    monkeypatch.setattr(fused, "native_bfloat16", lambda: False)
    assert Settings(precision="auto").problem() is None
    assert "--precision is 'bfloat16' but this CPU has no native bfloat16" in \
        Settings(precision="bfloat16").problem()
