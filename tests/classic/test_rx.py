"""RX core against numpy; tiled equals single-block."""

import numpy as np
import pytest

from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.classic.rx import RX_TILE_BYTES, rx_score_raster, rx_tile_side
from conftest import read_raster, write_raster
from scenes import numpy_rx, rx_scene


@pytest.mark.parametrize("bands", [None, [1, 3], [2]])
def test_rx_matches_numpy(tmp_path, bands):
    nd = -1.0
    a = rx_scene((4, 60, 45))
    a[:, 0:5, 0:5] = nd
    p = write_raster(tmp_path / "a.tif", a, nodata=nd)
    out = tmp_path / "rx.tif"
    rx_score_raster(p, str(out), bands, tile_size=16)
    got = read_raster(out)[0]
    valid = np.all(a != nd, axis=0)
    ref = numpy_rx(a, valid, bands)
    assert np.all(got[~valid] == NODATA)
    np.testing.assert_allclose(got[valid], ref[valid], rtol=1e-5, atol=1e-5)
    if bands == [2]:  # one band: |x - mean| / std
        x = a[1][valid].astype(np.float64)
        np.testing.assert_allclose(got[valid], np.abs(x - x.mean()) / x.std(ddof=1),
                                   rtol=1e-5, atol=1e-5)


def test_rx_singular_covariance(tmp_path):
    a = rx_scene((3, 30, 30))
    a[2] = 7.0  # constant band
    p = write_raster(tmp_path / "a.tif", a)
    out = tmp_path / "rx.tif"
    rx_score_raster(p, str(out))
    got = read_raster(out)[0]
    ref = numpy_rx(a, np.ones(a.shape[1:], bool))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape, tile", [((3, 1100, 700), 256), ((2, 301, 257), 128)])
def test_rx_tiled_equals_single_block(tmp_path, shape, tile):
    """Several tiles, and a size that is not a multiple of the tile size."""
    a = rx_scene(shape, seed=3)
    p = write_raster(tmp_path / "a.tif", a)
    tiled, single = tmp_path / "tiled.tif", tmp_path / "single.tif"
    rx_score_raster(p, str(tiled), tile_size=tile, block_size=tile)
    rx_score_raster(p, str(single), tile_size=max(shape), block_size=max(shape))
    t, s = read_raster(tiled)[0], read_raster(single)[0]
    assert t.shape == shape[1:]
    assert np.abs(t - s).max() < 1e-4


def test_rx_tiles_of_many_bands_stay_within_their_byte_bound():
    assert rx_tile_side(1024, 3) == 1024  # few bands: the tile size asked for
    assert rx_tile_side(1024, 200) == 256  # 200 x 256 x 256 float32 = 50 MiB
    assert 4 * 200 * 320 ** 2 > RX_TILE_BYTES  # the next multiple of 64 would not fit
    assert rx_tile_side(1024, 100000) == 64  # never below 64
    assert rx_tile_side(100, 200) == 100
