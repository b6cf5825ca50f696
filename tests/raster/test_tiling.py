"""Tile spans along an axis and tile plans that fit the memory setting."""

import pytest

from anomaly_detector.model.raster.io import RasterInfo
from anomaly_detector.model.raster.scorer import TileScorer
from anomaly_detector.model.raster.tiling import plan_tiles, tile_spans


@pytest.mark.parametrize("align", [1, 4, 8])
def test_tile_spans_cover_exactly(align):
    for size in (1, 15, 16, 17, 100, 130):
        cover, spans = [], tile_spans(size, 16, align)
        for r, n, s, e in spans:
            assert 0 <= r <= s and e <= r + n <= size and n < 16 + align
            assert r % align == 0
            cover.extend(range(s, e))
        assert cover == list(range(size))
        # as few tiles as the size needs, and reads barely longer than the axis
        assert len(spans) == -(-size // 16)
        assert sum(n for _, n, _, _ in spans) < size + len(spans) * align + 16


class _HungryScorer(TileScorer):
    bytes_per_pixel = 4000


class _BatchScorer(TileScorer):
    max_batch = 8


def test_plans_follow_the_scorer_contract():
    info = RasterInfo("x", 4000, 4000, 4, [1, 2, 3, 4], (0, 1, 0, 0, 0, -1), "")
    plain = plan_tiles(info, lambda t, v: t[0], tile_size=512, overlap=0, memory_mb=256)
    hungry = plan_tiles(info, _HungryScorer(), tile_size=512, overlap=0, memory_mb=256)
    assert plain.tile_size == 512 and plain.batch == 1
    assert hungry.tile_size < 512  # smaller tiles where one would not fit
    assert plan_tiles(info, _BatchScorer, tile_size=512, overlap=0, memory_mb=256).batch > 1
    assert plan_tiles(info, _BatchScorer(), tile_size=512, overlap=0, memory_mb=256,
                      batch_size=1).batch == 1


def test_tiles_without_overlap_are_whole_blocks_of_the_file():
    info = RasterInfo("x", 4000, 4000, 4, [1, 2, 3, 4], (0, 1, 0, 0, 0, -1), "")
    hungry = plan_tiles(info, _HungryScorer(), tile_size=512, overlap=0, memory_mb=256)
    assert hungry.tile_size % 64 != 0  # the planner's own size is not on the block grid
    on_blocks = plan_tiles(info, _HungryScorer(), tile_size=512, overlap=0, memory_mb=256,
                           block=64)
    assert on_blocks.tile_size == hungry.tile_size // 64 * 64
    with_margin = dict(tile_size=512, overlap=8, memory_mb=256)
    assert plan_tiles(info, _HungryScorer(), block=64, **with_margin).tile_size == \
        plan_tiles(info, _HungryScorer(), **with_margin).tile_size  # margins cross blocks
