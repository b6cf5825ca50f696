"""Bounded memory gives the same scores; reader errors reach the caller."""

import numpy as np
import pytest

from anomaly_detector.model import defaults
from anomaly_detector.model.nn.detector import TileScorer, detect_raster
from anomaly_detector.model.raster import io as raster_io
from anomaly_detector.model.raster.errors import RasterInputError
from anomaly_detector.model.raster.io import RasterInfo
from anomaly_detector.model.raster.memory import MEMORY_ENV, memory_budget
from anomaly_detector.model.raster.pipeline import score_raster
from anomaly_detector.model.raster.stats import statistics_pixels
from anomaly_detector.model.raster.tiling import plan_tiles
from conftest import read_raster, write_raster


def test_memory_setting_bounds_tiles_and_blocks_not_results(tmp_path, monkeypatch):
    info = RasterInfo("x", 100000, 100000, 200, list(range(1, 201)), (0, 1, 0, 0, 0, -1), "")
    # tiles and statistics blocks depend on the setting and bands, never on the raster size
    small = plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=256)
    large = plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=4096)
    assert small.tile_size < 512 and small.tile_size % 4 == 0 and large.tile_size == 512
    assert statistics_pixels(200, 256) < statistics_pixels(200, 4096)
    monkeypatch.setenv(MEMORY_ENV, "300")
    assert memory_budget() == 300 * 2 ** 20
    monkeypatch.delenv(MEMORY_ENV)
    assert memory_budget() == defaults.MEMORY_MB * 2 ** 20

    rng = np.random.default_rng(3)
    image = (rng.normal(100, 5, size=(40, 150, 140))
             + np.sin(np.arange(140) / 9.0)[None, None] * 20).astype(np.float32)
    image[:, 70:73, 60:63] += 40
    src = write_raster(tmp_path / "in.tif", image)
    detect_raster(src, str(tmp_path / "big.tif"), tile_size=512, overlap=64, memory_mb=2048)
    detect_raster(src, str(tmp_path / "small.tif"), tile_size=512, overlap=64, memory_mb=40)
    big, small_map = read_raster(tmp_path / "big.tif")[0], read_raster(tmp_path / "small.tif")[0]
    assert np.abs(big - small_map).max() < 1e-5


def test_reader_errors_reach_the_caller_and_leave_no_file(tmp_path, monkeypatch):
    src = write_raster(tmp_path / "a.tif", np.ones((1, 64, 64), np.float32))
    calls = []
    real = raster_io.read_window

    def failing(ds, info, x, y, w, h, buffers=None):
        calls.append(1)
        if len(calls) > 2:
            raise RasterInputError("read failed")
        return real(ds, info, x, y, w, h, buffers)

    monkeypatch.setattr(raster_io, "read_window", failing)
    with pytest.raises(RasterInputError, match="read failed"):
        score_raster(src, str(tmp_path / "s.tif"), lambda t, v: t[0], tile_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
