"""Bounded memory and the throughput paths give the same scores as the plain ones."""

import numpy as np
import pytest
import torch

from anomaly_detector.model import defaults
from anomaly_detector.model.raster import io as raster_io
from anomaly_detector.model.raster.errors import RasterInputError
from anomaly_detector.model.raster.io import RasterInfo
from anomaly_detector.model.raster.memory import MEMORY_ENV, memory_budget
from anomaly_detector.model.raster.pipeline import score_raster
from anomaly_detector.model.raster.stats import statistics_block
from anomaly_detector.model.raster.tiling import plan_tiles
from anomaly_detector.model.detector import TileScorer, detect_raster
from anomaly_detector.model.network import FusedScorer
from anomaly_detector.model.features import (INPUT_CHANNELS, LEADING_COMPONENTS,
                                             SpectralReduction, fit_from_array)
from anomaly_detector.model.weights import load_detector
from conftest import read_raster, write_raster


def _reference_apply(reduction, bands, valid=None):
    """The spectral reduction computed plainly in float64 (the original definition)."""
    count, height, width = bands.shape
    pixels = bands.reshape(count, -1).astype(np.float64) - reduction.mean[:, None]
    if valid is not None:
        pixels[:, ~valid.reshape(-1)] = 0.0
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
    channels = np.zeros((INPUT_CHANNELS, pixels.shape[1]))
    k = reduction.leading.shape[1]
    if reduction.full.shape[1]:
        components = reduction.full.T @ pixels
        channels[:k] = components[:k]
        channels[LEADING_COMPONENTS] = np.sqrt((components ** 2).sum(axis=0) / components.shape[0])
    channels = np.sign(channels) * np.log1p(np.abs(channels))
    return channels.astype(np.float32).reshape(INPUT_CHANNELS, height, width)


@pytest.mark.parametrize("bands, rank, noise", [(1, 1, 1.0), (3, 3, 1.0), (4, 2, 1.0),
                                                (13, 5, 1.0), (60, 6, 0.05)])
def test_chunked_reduction_matches_float64(bands, rank, noise):
    rng = np.random.default_rng(bands)
    mix = rng.normal(size=(bands, rank))
    image = mix @ rng.normal(size=(rank, 150 * 170)) * 300 + 30000
    image = np.round(image + noise * rng.normal(size=image.shape)).astype(np.float32)
    image = image.reshape(bands, 150, 170)
    image[0, 5, 5] = np.nan
    valid = np.isfinite(image).all(axis=0)
    valid[:7, :9] = False
    reduction = fit_from_array(image, valid)
    for mask in (valid, None):
        got = reduction.apply(image, mask)
        assert got.dtype == np.float32 and got.shape == (INPUT_CHANNELS, 150, 170)
        assert np.abs(got - _reference_apply(reduction, image, mask)).max() < 1e-4


def test_fused_forward_and_batches_equal_the_module():
    model = load_detector()
    fused = FusedScorer.build(model, "cpu")
    assert fused is not None
    x = torch.randn(2, INPUT_CHANNELS, 96, 132).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert (fused(x) - model.score(x)).abs().max() < 1e-5
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 4, 100, 76)).astype(np.float32)
    valids = rng.random((3, 100, 76)) > 0.05
    scorer = TileScorer(model, SpectralReduction.fit(np.zeros(4), np.eye(4)))
    batched = scorer.score_batch(tiles, valids)
    for i in range(3):
        assert np.abs(batched[i] - scorer(tiles[i], valids[i])).max() < 1e-5


def test_memory_setting_bounds_tiles_and_blocks_not_results(tmp_path, monkeypatch):
    info = RasterInfo("x", 100000, 100000, 200, list(range(1, 201)), (0, 1, 0, 0, 0, -1), "")
    # tiles and statistics blocks depend on the setting and bands, never on the raster size
    small = plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=256)
    large = plan_tiles(info, TileScorer, tile_size=512, overlap=64, align=4, memory_mb=4096)
    assert small.tile_size < 512 and small.tile_size % 4 == 0 and large.tile_size == 512
    assert statistics_block(200, 1024, 256) < statistics_block(200, 1024, 4096)
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

    def failing(ds, info, x, y, w, h):
        calls.append(1)
        if len(calls) > 2:
            raise RasterInputError("read failed")
        return real(ds, info, x, y, w, h)

    monkeypatch.setattr(raster_io, "read_window", failing)
    with pytest.raises(RasterInputError, match="read failed"):
        score_raster(src, str(tmp_path / "s.tif"), lambda t, v: t[0], tile_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_fused_path_only_for_the_known_layout():
    model = load_detector()
    assert FusedScorer.build(model, "cpu") is not None
    assert FusedScorer.build(model, "cuda") is None

    class Variant(type(model)):
        def forward(self, x):  # another computation: must not be replaced
            return super().forward(x)

    variant = Variant(**model.config)
    variant.load_state_dict(model.state_dict())
    assert FusedScorer.build(variant, "cpu") is None
