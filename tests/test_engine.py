"""QGIS-free engine: validation, statistics, tiling, tile margins, output grid."""

import os

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model import engine
from anomaly_detector.model.engine import (NODATA, Cancelled, RasterInputError, band_statistics,
                                           open_raster_checked, score_raster)
from conftest import read_raster, write_raster


def test_model_package_imports_without_qgis():
    import subprocess
    import sys
    code = ("import sys; import anomaly_detector.model.engine, anomaly_detector.model.rx, "
            "anomaly_detector.model.polygons; "
            "assert not any(m == 'qgis' or m.startswith('qgis.') for m in sys.modules); "
            "assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr


def test_open_raster_checked_ok(tmp_path):
    a = np.zeros((3, 7, 9), np.int16)
    p = write_raster(tmp_path / "a.tif", a, nodata=-1)
    info = open_raster_checked(p, [3, 1])
    assert (info.width, info.height, info.band_count, info.bands) == (9, 7, 3, [3, 1])
    assert info.nodata == [-1.0, -1.0] and info.dtypes == ["Int16", "Int16"]
    assert info.geotransform[1] == 10.0 and "32633" in info.projection_wkt
    assert open_raster_checked(p, None).bands == [1, 2, 3]


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("empty", r"empty \(0 bytes\)"),
    ("text", "not a raster"),
    ("band", "Band 4 does not exist"),
])
def test_open_raster_checked_errors(tmp_path, case, words):
    p = tmp_path / "x.tif"
    bands = None
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("this is not a raster\n")
    elif case == "band":
        write_raster(p, np.zeros((3, 4, 4), np.float32))
        bands = [1, 4]
    with pytest.raises(RasterInputError, match=words):
        open_raster_checked(str(p), bands)


def _random_with_nodata(shape, seed=0, nodata=-9999.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    a[0] += 3 * a[-1]  # correlated bands
    a[:, 3:6, 4:9] = nodata
    a[1, 10, 10] = np.nan
    a[0, 11, 12] = np.inf
    return a


def test_band_statistics_matches_numpy(tmp_path):
    nd = -9999.0
    a = _random_with_nodata((4, 70, 53), nodata=nd)
    p = write_raster(tmp_path / "a.tif", a, nodata=nd)
    for bands in (None, [2, 4]):
        sel = [b - 1 for b in (bands or [1, 2, 3, 4])]
        valid = np.all(np.isfinite(a[sel]) & (a[sel] != nd), axis=0)
        x = a[sel][:, valid].astype(np.float64)
        mean, cov, n = band_statistics(p, bands, block_size=16)
        assert n == valid.sum()
        np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x), rtol=1e-9, atol=1e-12)


def test_pool_mean_averages_valid_pixels_of_each_block():
    data = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    valid = np.ones((5, 7), bool)
    valid[0, 0] = False  # one invalid pixel, and below one all-invalid block
    valid[2:4, 4:6] = False
    data[:, ~valid] = np.nan  # invalid values must not leak into the averages
    pooled, pooled_valid = engine.pool_mean(data, valid, 2)
    assert pooled.shape == (2, 3, 4) and pooled.dtype == np.float32
    for r in range(3):
        for c in range(4):
            block = (slice(2 * r, 2 * r + 2), slice(2 * c, 2 * c + 2))
            inside = valid[block]
            assert pooled_valid[r, c] == inside.any()
            if inside.any():
                np.testing.assert_allclose(pooled[:, r, c], data[:, block[0], block[1]][:, inside]
                                           .mean(axis=1), rtol=1e-6)
    assert engine.pool_mean(data, valid, 1)[0] is data


def test_band_statistics_of_the_pooled_raster(tmp_path):
    a = np.random.default_rng(3).normal(size=(3, 37, 50)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    pooled, _ = engine.pool_mean(a, np.ones(a.shape[1:], bool), 2)
    mean, cov, n = band_statistics(p, block_size=15, pool=2)  # block rounded to 14
    assert n == 19 * 25
    np.testing.assert_allclose(mean, pooled.reshape(3, -1).mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(pooled.reshape(3, -1)), rtol=1e-5, atol=1e-7)


def test_band_statistics_on_a_regular_grid_of_pixels(tmp_path):
    assert engine.statistics_stride(1000, 1000) == 1  # < 4 x 2^18 pixels: all of them
    assert engine.statistics_stride(1024, 1024) == 2
    assert engine.statistics_stride(4096, 4096) == 8  # still 2^18 pixels
    a = np.random.default_rng(4).normal(size=(3, 45, 38)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    mean, cov, n = band_statistics(p, block_size=10, stride=3)  # block rounded to 9
    grid = a[:, ::3, ::3].reshape(3, -1)
    assert n == grid.shape[1] == 15 * 13
    np.testing.assert_allclose(mean, grid.mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(grid), rtol=1e-5, atol=1e-7)


def test_band_statistics_all_nodata(tmp_path):
    p = write_raster(tmp_path / "a.tif", np.zeros((2, 5, 5), np.float32), nodata=0)
    with pytest.raises(RasterInputError, match="no valid pixels"):
        band_statistics(p)


def _box3(tile, valid):
    """3x3 mean of band sums: a receptive field of 1 pixel."""
    x = tile.sum(axis=0)
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


@pytest.mark.parametrize("shape, tile, overlap", [
    ((2, 100, 130), 32, 4),     # several tiles, not a multiple of the tile size
    ((1, 64, 64), 32, 2),       # exact multiple
    ((3, 20, 15), 32, 8),       # raster smaller than one tile
    ((1, 5, 3), 4, 7),          # overlap larger than the raster
])
def test_score_raster_tiles_are_seam_free_and_end_at_the_raster_edge(tmp_path, shape, tile,
                                                                     overlap):
    rng = np.random.default_rng(1)
    a = rng.normal(size=shape).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    seen = []

    def scorer(t, v):
        seen.append(t.shape)
        assert v.shape == t.shape[1:] and v.all()
        return _box3(t, v)

    out = tmp_path / "s.tif"
    score_raster(p, str(out), scorer, tile_size=tile, overlap=overlap)
    got = read_raster(out)[0]
    # the same as scoring the whole raster at once: no seams, no invented context
    assert np.abs(got - _box3(a, None)).max() < 1e-5
    # margins are real pixels only: no tile is larger than the raster or core + 2 margins
    for size, axis in ((shape[1], 1), (shape[2], 2)):
        assert max(s[axis] for s in seen) <= min(size, tile + 2 * overlap)
    if tile >= max(shape[1:]):
        assert seen == [shape]


def test_score_raster_output_grid_and_nodata(tmp_path):
    nd = -32768
    a = np.arange(3 * 50 * 40, dtype=np.int16).reshape(3, 50, 40) % 1000
    a[:, 0:4, 0:4] = nd
    a[2, 20, 30] = nd
    gt = (330000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)
    p = write_raster(tmp_path / "a.tif", a, nodata=nd, geotransform=gt, epsg=25832)
    out = tmp_path / "s.tif"
    score_raster(p, str(out), lambda t, v: t[0] * 2.0, tile_size=16, overlap=3)
    arr, ogt, wkt, ond, size = read_raster(out)
    src = gdal.Open(p)
    assert size == (40, 50)
    assert ogt == src.GetGeoTransform() and wkt == src.GetProjection()
    assert ond == NODATA
    ds = gdal.Open(str(out))
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    md = ds.GetMetadata("IMAGE_STRUCTURE")
    assert md.get("COMPRESSION") == engine.GTIFF_OPTIONS[1].split("=")[1]
    assert md.get("COMPRESSION") in ("ZSTD", "DEFLATE")
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    invalid = np.any(a == nd, axis=0)
    assert np.all(arr[invalid] == NODATA)
    np.testing.assert_array_equal(arr[~invalid], (a[0] * 2.0)[~invalid])


def test_score_raster_progress_cancel_and_cleanup(tmp_path):
    p = write_raster(tmp_path / "a.tif", np.ones((1, 40, 40), np.float32))
    out = tmp_path / "s.tif"
    fr = []
    score_raster(p, str(out), lambda t, v: t[0], tile_size=16, progress=fr.append)
    assert fr == sorted(fr) and fr[-1] == 1.0 and len(fr) == 9
    os.remove(out)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        score_raster(p, str(out), lambda t, v: t[0], tile_size=16, is_cancelled=cancel)
    assert sorted(os.listdir(tmp_path)) == ["a.tif"]

    def boom(t, v):
        raise RuntimeError("scorer failed")

    with pytest.raises(RuntimeError):
        score_raster(p, str(out), boom, tile_size=16)
    assert sorted(os.listdir(tmp_path)) == ["a.tif"]


@pytest.mark.parametrize("align", [1, 4, 8])
def test_tile_starts_cover_exactly(align):
    for size in (1, 15, 16, 17, 100, 130):
        cover, spans = [], engine._tile_starts(size, 16, align)
        for r, n, s, e in spans:
            assert 0 <= r <= s and e <= r + n <= size and n < 16 + align
            assert r % align == 0
            cover.extend(range(s, e))
        assert cover == list(range(size))
        # as few tiles as the size needs, and reads barely longer than the axis
        assert len(spans) == -(-size // 16)
        assert sum(n for _, n, _, _ in spans) < size + len(spans) * align + 16


def test_signed_bytes_are_read_with_their_sign(tmp_path):
    values = np.array([[-128, -1, 0], [1, 100, 127]], dtype=np.int8)
    path = write_raster(tmp_path / "int8.tif", values, dtype="Int8")
    ds, info = engine.open_dataset(path)
    data, valid = engine.read_window(ds, info, 0, 0, 3, 2)
    assert info.dtypes == ["Int8"] and valid.all()
    np.testing.assert_array_equal(data[0], values.astype(np.float32))


def _box_sum(tile, radius):
    """Sum of band sums over a (2r+1)^2 window clipped at the tile edge: receptive radius r."""
    x = np.pad(tile.sum(axis=0).astype(np.float64), radius)
    h, w = tile.shape[1:]
    size = 2 * radius + 1
    return sum(x[i:i + h, j:j + w] for i in range(size) for j in range(size)).astype(np.float32)


@pytest.mark.parametrize("tile, radius", [(16, 8), (24, 6), (32, 12)])
def test_every_margin_holds_the_whole_receptive_field(tmp_path, tile, radius):
    # a scorer whose receptive radius equals the overlap: a margin cut short on any side
    # (left, right, top or bottom) changes the scores along that side of the tile cores
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 70, 90)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    out = tmp_path / "s.tif"
    score_raster(p, str(out), lambda t, v: _box_sum(t, radius), tile_size=tile, overlap=radius)
    np.testing.assert_allclose(read_raster(out)[0], _box_sum(a, radius), rtol=1e-5, atol=1e-3)
