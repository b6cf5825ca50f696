"""Bounded memory gives the same scores; reader errors reach the caller."""

import numpy as np
import pytest

from anomaly_detector.model import engine
from anomaly_detector.model.nn.detector import TileScorer, detect_raster
from conftest import read_raster, write_raster


def test_memory_setting_bounds_tiles_and_blocks_not_results(tmp_path, monkeypatch):
    info = engine.RasterInfo("x", 100000, 100000, 200, list(range(1, 201)), (0, 1, 0, 0, 0, -1), "")
    # tiles and statistics blocks depend on the setting and bands, never on the raster size
    small = engine.plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=256)
    large = engine.plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=4096)
    assert small.tile_size < 512 and small.tile_size % 4 == 0 and large.tile_size == 512
    assert engine.statistics_block(200, 1024, 256) < engine.statistics_block(200, 1024, 4096)
    monkeypatch.setenv(engine.MEMORY_ENV, "300")
    assert engine.memory_budget() == 300 * 2 ** 20
    monkeypatch.delenv(engine.MEMORY_ENV)
    assert engine.memory_budget() == engine.DEFAULT_MEMORY_MB * 2 ** 20

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
    real = engine.read_window

    def failing(ds, info, x, y, w, h):
        calls.append(1)
        if len(calls) > 2:
            raise engine.RasterInputError("read failed")
        return real(ds, info, x, y, w, h)

    monkeypatch.setattr(engine, "read_window", failing)
    with pytest.raises(engine.RasterInputError, match="read failed"):
        engine.score_raster(src, str(tmp_path / "s.tif"), lambda t, v: t[0], tile_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
