"""Tiled scoring: seam-free tiles, tile margins, output grid, progress, cancel, cleanup,
and the scorer contract."""

import os

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.raster.errors import Cancelled
from anomaly_detector.model.raster.output import GTIFF_OPTIONS, NODATA
from anomaly_detector.model.raster.pipeline import score_raster
from anomaly_detector.model.raster.scorer import TileScorer
from conftest import read_raster, write_raster


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
    assert md.get("COMPRESSION") == GTIFF_OPTIONS[1].split("=")[1]
    assert md.get("COMPRESSION") in ("ZSTD", "DEFLATE")
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    invalid = np.any(a == nd, axis=0)
    assert np.all(arr[invalid] == NODATA)
    np.testing.assert_array_equal(arr[~invalid], (a[0] * 2.0)[~invalid])


def test_observe_sees_every_score_block_as_written(tmp_path):
    a = np.random.default_rng(1).random((2, 70, 90)).astype(np.float32)
    a[:, 5:9, 60:80] = np.nan  # invalid: written, and seen, as nodata
    out = tmp_path / "s.tif"
    seen = []
    score_raster(write_raster(tmp_path / "a.tif", a), str(out), lambda t, v: t[0] - t[1],
                 tile_size=32, overlap=2, observe=lambda block: seen.append(block.copy()))
    written = read_raster(out)[0]
    assert sum(block.size for block in seen) == written.size
    np.testing.assert_array_equal(np.sort(np.concatenate([b.ravel() for b in seen])),
                                  np.sort(written.ravel()))
    assert all(block.dtype == np.float32 for block in seen)


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


class _PreparingScorer(TileScorer):
    """Scores in ``prepare`` (as RX does) and counts the calls of each method."""

    prepared_bytes_per_pixel = 5

    def __init__(self):
        self.calls = {"prepare": 0, "score_prepared": 0}

    def __call__(self, tile, valid):
        return tile[0] * 3.0

    def prepare(self, tile, valid, core=None):
        self.calls["prepare"] += 1
        return self(tile, valid)

    def score_prepared(self, prepared):
        self.calls["score_prepared"] += 1
        return prepared


class _BatchScorer(TileScorer):
    """Scores up to four tiles per call through the default ``score_prepared``."""

    max_batch = 4

    def __init__(self):
        self.batches = []

    def __call__(self, tile, valid):
        return tile[0] * 3.0

    def score_batch(self, tiles, valids):
        self.batches.append(len(tiles))
        return tiles[:, 0] * 3.0


@pytest.mark.parametrize("scorer", [_PreparingScorer, _BatchScorer,
                                    lambda: (lambda t, v: t[0] * 3.0)])
def test_every_kind_of_scorer_writes_the_same_scores(tmp_path, scorer):
    a = np.random.default_rng(4).normal(size=(2, 40, 50)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    score_tile = scorer()
    score_raster(p, str(tmp_path / "s.tif"), score_tile, tile_size=16)
    np.testing.assert_array_equal(read_raster(tmp_path / "s.tif")[0], a[0] * 3.0)
    if isinstance(score_tile, _PreparingScorer):  # every tile prepared, then scored
        assert score_tile.calls == {"prepare": 12, "score_prepared": 12}
    if isinstance(score_tile, _BatchScorer):  # equal-shaped tiles batched
        assert max(score_tile.batches) > 1


def test_a_tile_is_not_read_into_again_while_its_scores_are_written(tmp_path):
    a = np.random.default_rng(5).normal(size=(2, 64, 64)).astype(np.float32)
    p = write_raster(tmp_path / "a.tif", a)
    score_raster(p, str(tmp_path / "s.tif"), lambda tile, valid: tile[1], tile_size=8)
    np.testing.assert_array_equal(read_raster(tmp_path / "s.tif")[0], a[1])
