"""Nothing lost, nothing misplaced: inputs stay byte-identical, outputs never replace an
input or each other, a failed run keeps the previous output, and odd rasters give a
correct result or one sentence.

Every test runs real files through ``processing.run`` (or ``qgis_process`` and the
batch entry) and checks the inputs byte for byte before and after.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from anomaly_detector.model import batch
from anomaly_detector.model.nn import weights as weights_module
from anomaly_detector.model.raster.errors import RasterOutputError
from anomaly_detector.model.raster.files import input_files, refuse_inputs_as_outputs
from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.vector.output import OGR_DRIVERS
from conftest import (DEFAULT_EPSG, DEFAULT_GT, PYPATH, read_raster, run_qgis_process,
                      write_raster)
from test_inputs import assert_refused, leftovers, run_detect, run_rx, scene

RUNNERS = {"detect": run_detect, "rx": run_rx}
SCORE = {"detect": "OUTPUT_SCORE", "rx": "OUTPUT"}


def snapshot(folder):
    """Every file under ``folder`` (names and bytes), to compare before and after a run."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _same_crs(a, b):
    if not a or not b:
        return a == b
    first, second = osr.SpatialReference(), osr.SpatialReference()
    first.ImportFromWkt(a)
    second.ImportFromWkt(b)
    return bool(first.IsSame(second))


def check_output(src, score, valid=None):
    """Score raster on the input's grid: size, geotransform, CRS, GCPs and nodata."""
    ds, out = gdal.Open(str(src)), gdal.Open(str(score))
    assert (out.RasterXSize, out.RasterYSize, out.RasterCount) == \
        (ds.RasterXSize, ds.RasterYSize, 1)
    assert out.GetGeoTransform(can_return_null=True) == ds.GetGeoTransform(can_return_null=True)
    assert _same_crs(out.GetProjection(), ds.GetProjection())
    assert out.GetRasterBand(1).GetNoDataValue() == NODATA
    scores = out.ReadAsArray().astype(np.float64)
    valid = np.ones(scores.shape, bool) if valid is None else valid
    assert np.isfinite(scores).all()
    assert (scores[valid] != NODATA).all() and (scores[~valid] == NODATA).all()
    assert out.GetGCPCount() == ds.GetGCPCount()
    assert [(g.GCPPixel, g.GCPLine, g.GCPX, g.GCPY) for g in out.GetGCPs()] == \
        [(g.GCPPixel, g.GCPLine, g.GCPX, g.GCPY) for g in ds.GetGCPs()]
    assert out.GetGCPProjection() == ds.GetGCPProjection()
    return scores


def polygons_of(path):
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    return [(f.GetField("rank"), f.GetGeometryRef().GetEnvelope()) for f in layer]


# --------------------------------------------------------------------------
# 1, 18. an output never replaces a file that the input reads

def _vrt_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = write_raster(data / "s.tif", scene(2, 16, 18).astype(np.float32))
    vrt = str(data / "v.vrt")
    gdal.BuildVRT(vrt, [source]).FlushCache()
    return data, source, vrt


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_over_a_vrt_source_is_refused(tmp_path, run_alg, alg):
    data, source, vrt = _vrt_folder(tmp_path)
    before = snapshot(data)
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, vrt, out, **{SCORE[alg]: source}),
                   "which the input raster .* reads.*never overwritten", out)
    assert snapshot(data) == before


@pytest.mark.parametrize("link", ["symlink", "hard link", "folder symlink"])
@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_linked_to_the_input_is_refused(tmp_path, run_alg, alg, link):
    data = tmp_path / "data"
    data.mkdir()
    src = write_raster(data / "in.tif", scene(2, 12, 12).astype(np.float32))
    if link == "symlink":
        target = tmp_path / "link.tif"
        target.symlink_to(src)
    elif link == "hard link":
        target = tmp_path / "hard.tif"
        os.link(src, target)
    else:
        (tmp_path / "alias").symlink_to(data, target_is_directory=True)
        target = tmp_path / "alias" / "in.tif"
    before = snapshot(data)
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, **{SCORE[alg]: str(target)}),
                   "is the input raster itself", out)
    assert snapshot(data) == before


def test_input_files_cover_sources_headers_world_files_and_sidecars(tmp_path):
    data, source, vrt = _vrt_folder(tmp_path)
    envi = write_raster(data / "img.bin", scene(1, 8, 8).astype(np.float32), driver="ENVI")
    (data / "w.tif").write_bytes(Path(source).read_bytes())
    (data / "w.tfw").write_text("10\n0\n0\n-10\n500000\n4100000\n")
    nested = str(data / "nested.vrt")
    gdal.BuildVRT(nested, [vrt]).FlushCache()
    files = {os.path.basename(f) for f in input_files(nested)}
    assert {"nested.vrt", "v.vrt", "s.tif", "s.tif.aux.xml", "v.vrt.aux.xml"} <= files
    assert "img.hdr" in {os.path.basename(f) for f in input_files(envi)}
    assert "w.tfw" in {os.path.basename(f) for f in input_files(str(data / "w.tif"))}
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.write(source, "s.tif")
    assert str(tmp_path / "a.zip") in input_files(f"/vsizip/{tmp_path}/a.zip/s.tif")
    for sidecar in ("img.hdr", "s.tif.aux.xml"):
        with pytest.raises(RasterOutputError, match="reads"):
            refuse_inputs_as_outputs([("OUTPUT", str(data / sidecar))],
                                            [envi, vrt])


@pytest.mark.parametrize("sidecar", ["img.hdr", "img.bin.aux.xml", "w.tfw"])
def test_output_over_a_sidecar_of_the_input_is_refused(tmp_path, run_alg, sidecar):
    data = tmp_path / "data"
    data.mkdir()
    envi = write_raster(data / "img.bin", scene(2, 12, 12).astype(np.float32), driver="ENVI",
                        options=())
    (data / "img.bin.aux.xml").write_text("<PAMDataset/>\n")
    (data / "w.tfw").write_text("10\n0\n0\n-10\n500000\n4100000\n")
    src = envi if sidecar.startswith("img") else write_raster(
        data / "w.tif", scene(2, 12, 12).astype(np.float32), geotransform=None)
    before = snapshot(data)
    out = tmp_path / "out"
    assert_refused(lambda: run_rx(run_alg, src, out, OUTPUT=str(data / sidecar)),
                   "which the input raster .* reads", out)
    assert snapshot(data) == before


def test_polygonize_output_over_the_score_raster_is_refused(tmp_path, run_alg):
    src = write_raster(tmp_path / "s.tif", scene(1, 12, 12).astype(np.float32))
    (tmp_path / "same.gpkg").symlink_to(src)
    before = snapshot(tmp_path)
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException, match="input raster itself"):
        run_alg("anomaly:polygonize", {"INPUT": src, "OUTPUT": str(tmp_path / "same.gpkg")})
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# 3. inputs stay byte-identical (no statistics written into or beside them)

@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_vrt_and_zip_inputs_stay_byte_identical(tmp_path, run_alg, alg):
    data, source, vrt = _vrt_folder(tmp_path)
    with zipfile.ZipFile(data / "archive.zip", "w") as archive:
        archive.write(source, "scene.tif")
    before = snapshot(data)
    RUNNERS[alg](run_alg, vrt, tmp_path / "out1")
    check_output(vrt, tmp_path / "out1" / "score.tif")
    zipped = f"/vsizip/{data}/archive.zip/scene.tif"
    RUNNERS[alg](run_alg, zipped, tmp_path / "out2")
    check_output(zipped, tmp_path / "out2" / "score.tif")
    assert snapshot(data) == before
    assert zipfile.ZipFile(data / "archive.zip").namelist() == ["scene.tif"]


@pytest.mark.parametrize("alg", ["rx", "polygonize"])
def test_inputs_stay_byte_identical_in_qgis_process(tmp_path, alg):
    data, source, vrt = _vrt_folder(tmp_path)
    with zipfile.ZipFile(data / "archive.zip", "w") as archive:
        archive.write(source, "scene.tif")
    before = snapshot(data)
    for i, src in enumerate([vrt, source, f"/vsizip/{data}/archive.zip/scene.tif"]):
        output = tmp_path / (f"o{i}.tif" if alg == "rx" else f"o{i}.gpkg")
        r = run_qgis_process(["run", f"anomaly:{alg}", f"--INPUT={src}", f"--OUTPUT={output}"])
        assert r.returncode == 0 and output.exists(), r.stdout + r.stderr
    assert snapshot(data) == before


def test_polygonize_input_stays_byte_identical(tmp_path, run_alg):
    data = tmp_path / "data"
    data.mkdir()
    src = write_raster(data / "s.tif", scene(1, 12, 12).astype(np.float32))
    vrt = str(data / "s.vrt")
    gdal.BuildVRT(vrt, [src]).FlushCache()
    before = snapshot(data)
    run_alg("anomaly:polygonize", {"INPUT": vrt, "OUTPUT": str(tmp_path / "p.gpkg")})
    assert snapshot(data) == before


# --------------------------------------------------------------------------
# 4, 13. a full disk: one sentence, the previous output kept, nothing left behind

@pytest.fixture(params=[False, True], ids=["gdal errors reported", "gdal exceptions"])
def full_folder(tmp_path, request):
    """A 160 KiB tmpfs (the tests run as root): too small for the outputs below; with
    GDAL's error handler, then with ``gdal.UseExceptions()`` (which other code may set)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, "mounting a small tmpfs needs root: " + mounted.stderr
    previous = gdal.GetUseExceptions()
    (gdal.UseExceptions if request.param else gdal.DontUseExceptions)()
    try:
        yield folder
    finally:
        (gdal.UseExceptions if previous else gdal.DontUseExceptions)()
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _noisy(tmp_path, size=260):
    image = np.random.default_rng(4).normal(100, 10, (2, size, size)).astype(np.float32)
    return write_raster(tmp_path / "noisy.tif", image)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_full_disk_keeps_the_previous_output(tmp_path, run_alg, full_folder, alg):
    src = _noisy(tmp_path)
    inputs = Path(src).read_bytes()
    (full_folder / "score.tif").write_bytes(b"previous score " * 100)
    (full_folder / "anomalies.gpkg").write_bytes(b"previous polygons " * 100)
    before = snapshot(full_folder)
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException, match="disk is full.*previous output") as info:
        RUNNERS[alg](run_alg, src, full_folder)
    assert "Traceback" not in str(info.value)
    assert snapshot(full_folder) == before  # nothing replaced, nothing left behind
    assert Path(src).read_bytes() == inputs


def test_full_disk_polygonize_keeps_the_previous_output(tmp_path, run_alg, full_folder):
    scores = np.random.default_rng(5).uniform(0, 1, (300, 300)).astype(np.float32)
    src = write_raster(tmp_path / "scores.tif", scores)
    (full_folder / "filler").write_bytes(b"\0" * 150 * 1024)
    (full_folder / "p.gpkg").write_bytes(b"previous polygons")
    before = snapshot(full_folder)
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException, match="(disk is full|could not be written)"):
        run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 0.5,
                                       "OUTPUT": str(full_folder / "p.gpkg")})
    assert snapshot(full_folder) == before


# --------------------------------------------------------------------------
# 2, 19. the batch entry: outputs never collide, bad options stop before any work

def test_batch_outputs_never_collide(tmp_path):
    sources = [str(tmp_path / "d1" / "scene.tif"), str(tmp_path / "d2" / "scene.tif"),
               str(tmp_path / "d3" / "Scene.tif"), str(tmp_path / "scene_2.tif")]
    scenes = batch.name_scenes(sources, tmp_path / "out")
    names = [p for s in scenes.values() for p in (s.score, s.polygons, s.strip_dir)]
    assert len({n.lower() for n in names}) == len(names) == 12
    assert scenes[sources[0]].score == str(tmp_path / "out" / "scene_score.tif")


def test_batch_scores_scenes_of_one_name_apart(tmp_path):
    images = {"d1": scene(2, 40, 36, seed=1), "d2": scene(2, 40, 36, seed=2)}
    sources = []
    for folder, image in images.items():
        (tmp_path / folder).mkdir()
        image[:, 5, 7] += 200 if folder == "d2" else 0
        sources.append(write_raster(tmp_path / folder / "scene.tif", image.astype(np.float32)))
    before = snapshot(tmp_path)
    results = batch.run_batch(sources, str(tmp_path / "out"), workers=1,
                              settings=batch.Settings(tile_size=32, overlap=32),
                              show_progress=False, stream=open(os.devnull, "w"))
    assert all(r.ok for r in results) and len({r.score for r in results}) == 2
    for source, result in zip(sources, results):
        check_output(source, result.score)
        assert Path(result.polygons).exists()
    first, second = (read_raster(r.score)[0] for r in results)
    assert not np.array_equal(first, second)
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("out")} == before


@pytest.mark.parametrize("option, words", [
    (["--threshold", "nan"], "--threshold must be a finite number"),
    (["--threshold", "1.5"], "at most 1"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--min-area", "0"], "--min-area must be at least 1"),
    (["--top-n", "-1"], "--top-n must be 0"),
    (["--memory-mb", "-5"], "--memory-mb must be a positive number"),
])
def test_batch_refuses_bad_options_before_any_work(tmp_path, option, words):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    run = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch", src,
                          "--out", str(tmp_path / "out"), *option],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(PYPATH) + ":" + ":".join(sys.path)})
    assert run.returncode == 2, run.stdout + run.stderr
    assert words in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_batch_never_writes_over_an_input(tmp_path):
    first = write_raster(tmp_path / "a.tif", scene(2, 12, 12).astype(np.float32))
    second = write_raster(tmp_path / "a_score.tif", scene(2, 12, 12, seed=3).astype(np.float32))
    before = snapshot(tmp_path)
    scenes = batch.name_scenes([first, second], tmp_path)
    with pytest.raises(RasterOutputError, match="input raster itself"):
        refuse_inputs_as_outputs([("score", scenes[first].score)], [first, second])
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# 5, 6, 15. extreme values, a damaged weights card, a raster without variation

@pytest.mark.parametrize("dtype, factor", [(np.float64, 1e200), (np.float64, 1e-300),
                                           (np.float32, 1e35), (np.float32, 1e-36)])
@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_extreme_float_magnitudes(tmp_path, run_alg, alg, dtype, factor):
    image = scene(3, 20, 24)
    plain = write_raster(tmp_path / "plain.tif", image.astype(dtype))
    src = write_raster(tmp_path / "extreme.tif", (image * factor).astype(dtype))
    data = Path(src).read_bytes()
    # the normalisation's invariance to scale, in float32 arithmetic (bfloat16 would round
    # the float32 rounding differences of the reduction up to its own ~0.01)
    exact = {"PRECISION": 1} if alg == "detect" else {}
    RUNNERS[alg](run_alg, plain, tmp_path / "ref", **exact)
    RUNNERS[alg](run_alg, src, tmp_path / "out", **exact)
    scores = check_output(src, tmp_path / "out" / "score.tif")
    reference = read_raster(tmp_path / "ref" / "score.tif")[0]
    np.testing.assert_allclose(scores, reference, rtol=1e-3, atol=1e-4)
    assert np.argmax(scores) == np.argmax(reference)  # the same most anomalous pixel
    assert Path(src).read_bytes() == data


def test_weights_card_that_is_not_an_object(tmp_path, run_alg, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(weights_module.DEFAULT_WEIGHTS, folder / "detector.pt")
    (folder / "detector.json").write_text("[]")
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", folder / "detector.pt")
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    assert_refused(lambda: run_detect(run_alg, src, out), "weights card .* is unreadable", out)


@pytest.mark.parametrize("alg", ["detect", "rx"])
@pytest.mark.parametrize("value", [42, 0, 1e-30])
def test_constant_raster_has_zero_scores_and_no_polygon(tmp_path, run_alg, alg, value):
    image = np.full((3, 40, 44), value, np.float64)
    image[:, :3, :] = -1
    src = write_raster(tmp_path / "in.tif", image, nodata=-1)
    result = RUNNERS[alg](run_alg, src, tmp_path / "out")
    valid = np.ones((40, 44), bool)
    valid[:3] = False
    scores = check_output(src, tmp_path / "out" / "score.tif", valid)
    assert (scores[valid] == 0).all()
    if alg == "rx":
        result = run_alg("anomaly:polygonize", {"INPUT": str(tmp_path / "out" / "score.tif"),
                                                "OUTPUT": str(tmp_path / "p.gpkg")})
        automatic = run_alg("anomaly:polygonize", {
            "INPUT": str(tmp_path / "out" / "score.tif"), "THRESHOLD_METHOD": 2,
            "OUTPUT": str(tmp_path / "auto.gpkg")})
        assert automatic["COUNT"] == 0
    assert result["COUNT"] == 0


# --------------------------------------------------------------------------
# 7, 8, 9. georeferencing kinds and transparency

def test_polygons_of_a_raster_without_georeferencing_overlay_it(tmp_path, run_alg, capfd):
    image = np.zeros((30, 40), np.float32)
    image[20:23, 5:8] = 10
    src = write_raster(tmp_path / "plain.tif", image, geotransform=None, epsg=None)
    result = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 5,
                                            "OUTPUT": str(tmp_path / "p.gpkg")})
    assert result["COUNT"] == 1
    (_, (x0, x1, y0, y1)), = polygons_of(tmp_path / "p.gpkg")
    assert (x0, x1, y0, y1) == (5, 8, -23, -20)  # QGIS shows the raster at y in [-30, 0]
    err = capfd.readouterr().err
    assert "Unable to compute a transformation" not in err
    assert "Failed to fetch spatial reference" not in err


def _rgba(tmp_path):
    image = scene(4, 20, 24)
    image[3] = 255
    image[3, :, :10] = 0  # transparent left part
    image[:3, :, :10] = 0
    return write_raster(tmp_path / "rgba.tif", image.astype(np.uint8), options=("ALPHA=YES",)), \
        image


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_alpha_band_is_transparency_not_a_band(tmp_path, run_alg, alg):
    src, image = _rgba(tmp_path)
    reference = image[:3].copy()
    reference[:, :, :10] = 255
    ref = write_raster(tmp_path / "rgb.tif", reference.astype(np.uint8), nodata=255)
    RUNNERS[alg](run_alg, src, tmp_path / "out")
    RUNNERS[alg](run_alg, ref, tmp_path / "ref")
    valid = np.ones((20, 24), bool)
    valid[:, :10] = False
    scores = check_output(src, tmp_path / "out" / "score.tif", valid)
    np.testing.assert_allclose(scores, read_raster(tmp_path / "ref" / "score.tif")[0], atol=1e-5)


@pytest.mark.parametrize("alg", ["detect", "rx"])
@pytest.mark.parametrize("area", [False, True])
def test_alpha_band_counts_beside_a_nodata_value(tmp_path, run_alg, alg, area):
    """GDAL's masks of bands with a nodata value leave the alpha band out: both count, as
    QGIS draws them, also inside an area of interest."""
    image = scene(4, 20, 24).astype(np.uint8)
    image[:3][image[:3] == 7] = 8
    image[3] = 255
    image[3, :, :10] = 0  # transparent left part, its colours not nodata
    image[:3, 15:17, 20:22] = 7  # nodata in the opaque part
    src = write_raster(tmp_path / "rgba.tif", image, nodata=7, options=("ALPHA=YES",))
    valid = image[3] > 0
    valid[15:17, 20:22] = False
    extra = {}
    if area:  # columns 5 to 23, rows 2 to 19
        x0, px, _, y0, _, _ = DEFAULT_GT
        extra["EXTENT"] = f"{x0 + 5.2 * px},{x0 + 24 * px},{y0 - 20 * px},{y0 - 2.3 * px} " \
                          f"[EPSG:{DEFAULT_EPSG}]"
        valid = valid[2:, 5:]
    RUNNERS[alg](run_alg, src, tmp_path / "out", **extra)
    scores = read_raster(tmp_path / "out" / "score.tif")[0]
    np.testing.assert_array_equal(scores != NODATA, valid)


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_internal_mask_makes_pixels_nodata(tmp_path, run_alg, alg):
    path = str(tmp_path / "masked.tif")
    write_raster(path, scene(2, 20, 24).astype(np.float32))
    ds = gdal.Open(path, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((20, 24), 255, np.uint8)
    mask[5:9, 3:15] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    RUNNERS[alg](run_alg, path, tmp_path / "out")
    check_output(path, tmp_path / "out" / "score.tif", mask > 0)


def _gcp_raster(tmp_path):
    image = scene(2, 20, 24).astype(np.float32)
    image[:, 15:17, 4:6] += 80
    path = write_raster(tmp_path / "gcp.tif", image, geotransform=None, epsg=None)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    gcps = [gdal.GCP(12.0 + 0.001 * px, 41.0 - 0.001 * ln, 0, px, ln)
            for px, ln in ((0, 0), (24, 0), (0, 20), (24, 20))]
    ds = gdal.Open(path, gdal.GA_Update)
    ds.SetGCPs(gcps, srs.ExportToWkt())
    ds = None
    return path


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_gcps_are_kept_and_polygons_follow_them(tmp_path, run_alg, alg):
    src = _gcp_raster(tmp_path)
    before = Path(src).read_bytes()
    result = RUNNERS[alg](run_alg, src, tmp_path / "out")
    check_output(src, tmp_path / "out" / "score.tif")
    polygons = result.get("OUTPUT_POLYGONS")
    if polygons is None:
        polygons = run_alg("anomaly:polygonize", {
            "INPUT": str(tmp_path / "out" / "score.tif"), "TOP_N": 1,
            "OUTPUT": str(tmp_path / "p.gpkg")})["OUTPUT"]
    ds = ogr.Open(polygons)
    layer = ds.GetLayer(0)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"
    x0, x1, y0, y1 = layer.GetExtent()
    assert 12.0 <= x0 < x1 <= 12.024 and 40.98 <= y0 < y1 <= 41.0
    assert Path(src).read_bytes() == before


# --------------------------------------------------------------------------
# 10, 16, 17. band parameters

@pytest.mark.parametrize("value", ["", None, []])
def test_empty_bands_mean_all_bands(tmp_path, run_alg, value):
    src = write_raster(tmp_path / "in.tif", scene(3, 12, 12).astype(np.float32))
    run_rx(run_alg, src, tmp_path / "all")
    run_rx(run_alg, src, tmp_path / "empty", BANDS=value)
    np.testing.assert_array_equal(read_raster(tmp_path / "all" / "score.tif")[0],
                                  read_raster(tmp_path / "empty" / "score.tif")[0])


@pytest.mark.parametrize("value, words", [
    ("2,2", "BANDS lists band 2 more than once \\(got '2,2'\\)"),
    ([2, 2], "BANDS lists band 2 more than once"),
    ("abc", "BANDS must list band numbers such as 1,3 \\(got 'abc'\\)"),
    ("1.5", "got '1.5'"),
    ("0", "Band 0 does not exist"),
])
@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_bands_name_what_was_typed(tmp_path, run_alg, alg, value, words):
    src = write_raster(tmp_path / "in.tif", scene(3, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, BANDS=value), words, out)


def test_polygonize_band_parameter(tmp_path, run_alg):
    first = np.zeros((20, 20), np.float32)
    second = np.zeros((20, 20), np.float32)
    first[2:4, 2:4] = 5
    second[12:15, 10:12] = 5
    src = write_raster(tmp_path / "two.tif", np.stack([first, second]))
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        lines = []

        def pushInfo(self, text):  # noqa: N802
            self.lines.append(text)
    log = Log()
    params = {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 1}
    one = run_alg("anomaly:polygonize", {**params, "OUTPUT": str(tmp_path / "b1.gpkg")})
    two = run_alg("anomaly:polygonize", {**params, "BAND": 2,
                                         "OUTPUT": str(tmp_path / "b2.gpkg")}, log)
    assert one["COUNT"] == two["COUNT"] == 1
    assert polygons_of(one["OUTPUT"])[0][1] != polygons_of(two["OUTPUT"])[0][1]
    assert any("band 2 of 2" in line for line in log.lines)
    out = tmp_path / "out"
    assert_refused(lambda: run_alg("anomaly:polygonize", {
        **params, "BAND": 3, "OUTPUT": str(out / "p.gpkg")}), "Band 3 does not exist", out)


@pytest.mark.parametrize("args, words", [
    (["--BANDS=5"], "Band 5 does not exist"),
    (["--OUTPUT={src}"], "is the input raster itself"),
    (["--OUTPUT={tmp}/o.img"], "score rasters are written as GeoTIFF"),
])
def test_errors_are_said_once_in_qgis_process(tmp_path, args, words):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    before = snapshot(tmp_path)
    args = [a.format(src=src, tmp=tmp_path) for a in args]
    if not any(a.startswith("--OUTPUT") for a in args):
        args.append(f"--OUTPUT={tmp_path / 'o.tif'}")
    r = run_qgis_process(["run", "anomaly:rx", f"--INPUT={src}", *args])
    text = r.stdout + r.stderr
    assert r.returncode == 1 and text.count(words) == 1, text
    assert "Traceback" not in text and snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# 11, 12. formats: netCDF inputs, output names by extension

def _netcdf(tmp_path, variables=("Band1",)):
    path = str(tmp_path / "cube.nc")
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(path)
    root = ds.GetRootGroup()
    dims = [root.CreateDimension(name, None, None, size) for name, size in (("y", 14), ("x", 16))]
    for i, name in enumerate(variables):
        array = root.CreateMDArray(name, dims, gdal.ExtendedDataType.Create(gdal.GDT_Float32))
        array.Write(scene(1, 14, 16, seed=i)[0].astype(np.float32))
    ds = None
    return path


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_netcdf_input(tmp_path, run_alg, alg):
    path = _netcdf(tmp_path)
    before = snapshot(tmp_path)
    RUNNERS[alg](run_alg, path, tmp_path / "out")
    check_output(path, tmp_path / "out" / "score.tif")
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("out")} == before


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_netcdf_subdatasets(tmp_path, run_alg, alg):
    path = _netcdf(tmp_path, ("temperature", "humidity"))
    subdataset = f'NETCDF:"{path}":humidity'
    RUNNERS[alg](run_alg, subdataset, tmp_path / "out")
    check_output(subdataset, tmp_path / "out" / "score.tif")
    out = tmp_path / "refused"
    assert_refused(lambda: RUNNERS[alg](run_alg, path, out),
                   "holds 2 subdatasets.*NETCDF:", out)


@pytest.mark.parametrize("name, words", [
    ({"OUTPUT_SCORE": "x.img"}, "'.img', but score rasters are written as GeoTIFF"),
    ({"OUTPUT_SCORE": "x.vrt"}, "'.vrt', but score rasters are written as GeoTIFF"),
    ({"OUTPUT_POLYGONS": "x.tif"}, "'.tif', which is not a vector format"),
])
def test_output_extension_is_honoured_or_refused(tmp_path, run_alg, name, words):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    params = {key: str(out / value) for key, value in name.items()}
    assert_refused(lambda: run_detect(run_alg, src, out, **params), words, out)


# --------------------------------------------------------------------------
# 14. SIGTERM during a run leaves no partial file

def test_sigterm_leaves_no_partial_file(tmp_path):
    image = np.random.default_rng(2).normal(100, 5, (3, 700, 700)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", image)
    out = tmp_path / "out"
    out.mkdir()
    from conftest import QGIS_PROCESS, qgis_process_env
    run_qgis_process(["list"])  # enables the plugin in the profile
    process = subprocess.Popen(
        [QGIS_PROCESS, "run", "anomaly:detect", f"--INPUT={src}", "--DEVICE=1",
         "--TILE_SIZE=64", f"--OUTPUT_SCORE={out / 'score.tif'}",
         f"--OUTPUT_POLYGONS={out / 'p.gpkg'}"], env=qgis_process_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any("partial" in n for n in leftovers(out)):
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    assert any("partial" in n for n in leftovers(out))
    process.send_signal(signal.SIGTERM)
    text, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "termination signal" in text and "Traceback" not in text, text
    assert leftovers(out) == []


# --------------------------------------------------------------------------
# more of the matrix: paths, folders, transparency everywhere

@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_output_that_is_a_folder_is_refused(tmp_path, run_alg, alg):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    folder = tmp_path / "a folder.tif"
    folder.mkdir()
    out = tmp_path / "out"
    assert_refused(lambda: RUNNERS[alg](run_alg, src, out, **{SCORE[alg]: str(folder)}),
                   "is a folder. Choose a file name", out)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("alg", ["detect", "rx"])
def test_paths_with_spaces_and_accents(tmp_path, run_alg, alg):
    folder = tmp_path / "données d'été"
    folder.mkdir()
    src = write_raster(folder / "scène 1.tif", scene(2, 14, 12).astype(np.float32))
    before = snapshot(folder)
    RUNNERS[alg](run_alg, src, folder / "résultats")
    check_output(src, folder / "résultats" / "score.tif")
    assert {k: v for k, v in snapshot(folder).items() if not k.startswith("résultats")} == before


def test_fully_transparent_raster_has_no_valid_pixels(tmp_path, run_alg):
    image = scene(4, 10, 12)
    image[3] = 0
    src = write_raster(tmp_path / "clear.tif", image.astype(np.uint8), options=("ALPHA=YES",))
    out = tmp_path / "out"
    assert_refused(lambda: run_rx(run_alg, src, out), "no valid pixels", out)


FORMATS = {"ENVI": ("in.bin", []), "HFA": ("in.img", []), "PNG": ("in.png", ["WORLDFILE=YES"]),
           "JPEG": ("in.jpg", ["WORLDFILE=YES"]), "GPKG": ("in.gpkg", []),
           "COG": ("in.tif", []), "GTiff": ("in.tif", ["TILED=NO", "BIGTIFF=YES"])}


@pytest.mark.parametrize("driver", list(FORMATS))
def test_input_formats_stay_byte_identical(tmp_path, run_alg, driver):
    plain = write_raster(tmp_path / "plain.tif", scene(3, 20, 24).clip(0, 255).astype(np.uint8))
    data = tmp_path / "data"
    data.mkdir()
    name, options = FORMATS[driver]
    src = str(data / name)
    gdal.Translate(src, plain, format=driver, creationOptions=options)
    assert gdal.Open(src).GetGeoTransform(can_return_null=True) is not None
    before = snapshot(data)
    run_rx(run_alg, src, tmp_path / "out")
    check_output(src, tmp_path / "out" / "score.tif")
    assert snapshot(data) == before


@pytest.mark.parametrize("driver, interleave", [("GTiff", "BAND"), ("GTiff", "PIXEL"),
                                                ("ENVI", "BIL"), ("ENVI", "BIP")])
def test_band_layouts_give_one_map(tmp_path, run_alg, driver, interleave):
    image = scene(4, 18, 22).astype(np.float32)
    reference = write_raster(tmp_path / "ref.tif", image)
    src = write_raster(tmp_path / f"in.{interleave.lower()}", image, driver=driver,
                       options=(f"INTERLEAVE={interleave}",))
    run_rx(run_alg, reference, tmp_path / "ref")
    run_rx(run_alg, src, tmp_path / "out")
    scores = check_output(src, tmp_path / "out" / "score.tif")
    np.testing.assert_allclose(scores, read_raster(tmp_path / "ref" / "score.tif")[0], rtol=1e-5)


@pytest.mark.parametrize("params", [{"TILE_SIZE": 32, "OVERLAP": 0}, {"TILE_SIZE": 8192},
                                    {"OVERLAP": 1024}, {"SCALE": 2, "TILE_SIZE": 32}])
def test_detect_parameter_extremes(tmp_path, run_alg, params):
    src = write_raster(tmp_path / "in.tif", scene(2, 40, 37).astype(np.float32))
    result = run_detect(run_alg, src, tmp_path / "out", **params)
    check_output(src, tmp_path / "out" / "score.tif")
    assert result["COUNT"] >= 1


def test_batch_stops_with_a_sentence_when_the_out_folder_cannot_be_made(tmp_path):
    src = write_raster(tmp_path / "in.tif", scene(2, 12, 12).astype(np.float32))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    run = subprocess.run([sys.executable, "-m", "anomaly_detector.model.batch", src,
                          "--out", str(blocker / "out"), "--workers", "1"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(PYPATH) + ":" + ":".join(sys.path)})
    assert run.returncode == 1 and "The batch stopped" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("ext", sorted(set(OGR_DRIVERS)))
def test_every_polygon_format_keeps_its_polygons(tmp_path, run_alg, ext):
    image = np.zeros((20, 20), np.float32)
    image[2:4, 2:4], image[10:13, 10:12] = 5, 6
    src = write_raster(tmp_path / "s.tif", image)
    out = tmp_path / f"p{ext}"
    result = run_alg("anomaly:polygonize", {"INPUT": src, "THRESHOLD_METHOD": 1, "THRESHOLD": 1,
                                            "OUTPUT": str(out)})
    assert result["COUNT"] == 2
    ds = ogr.Open(str(out))
    assert [f.GetGeometryRef() is not None for f in ds.GetLayer(0)] == [True, True]
