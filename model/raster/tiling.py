"""The tile grid of a scoring run: spans along each axis and a plan that fits memory."""
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..defaults import TILE_SIZE
from .io import EXACT_IN_FLOAT32, RasterInfo
from .memory import memory_budget
from .scorer import as_scorer

Span = Tuple[int, int, int, int]  # (read_start, read_length, write_start, write_stop)


def tile_spans(size: int, tile: int, align: int = 1) -> List[Span]:
    """Tiles along one axis as ``(read_start, read_length, write_start, write_stop)``.

    The axis is cut into as few tiles of at most ``tile`` as it needs, of equal
    length (rounded up to a multiple of ``align``), so no tile is mostly margin.
    Every read is that long (or the whole axis): the last tile is shifted back
    so that it stays full-sized, and only its part not yet written is kept.
    With ``align > 1`` the shifted start is rounded down to a multiple of
    ``align`` (and the tile grows by less than ``align``), so every read starts
    on the same ``align`` grid: scorers that pool by ``align`` see the same
    pooling grid in every tile.
    """
    count = -(-size // max(1, tile))  # ceil divisions
    length = -(-size // count)
    t = min(size, -(-length // align) * align)
    out = []
    for s in range(0, size, t):
        r = min(s, size - t)
        if align > 1 and r != s:
            r = (r // align) * align
        out.append((r, max(t, min(s + t, size) - r), s, min(s + t, size)))
    return out


@dataclass
class TilePlan:
    """The tile grid of one scoring run (identical for a whole raster and for any
    group of its tile rows, so strips scored apart assemble into the same map)."""

    rows: List[Span]
    cols: List[Span]
    tile_size: int
    overlap: int
    batch: int
    prefetch: int

    @property
    def tile_count(self) -> int:
        return len(self.rows) * len(self.cols)

    def row_groups(self, count: int) -> List[Tuple[int, int]]:
        """Split the tile rows into ``count`` (or fewer) contiguous ``(start, stop)`` groups."""
        count = max(1, min(int(count), len(self.rows)))
        edges = [round(i * len(self.rows) / count) for i in range(count + 1)]
        return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]

    def write_rows(self, start: int, stop: int) -> Tuple[int, int]:
        """First and last-plus-one raster row written by tile rows ``start:stop``."""
        return self.rows[start][2], self.rows[stop - 1][3]


def plan_tiles(info: RasterInfo, score_tile=None, *, tile_size: int = TILE_SIZE,
               overlap: int = 32, align: int = 1, memory_mb: Optional[float] = None,
               batch_size: Optional[int] = None, block: int = 1) -> TilePlan:
    """Tile grid, batch size and prefetch depth that fit the memory setting.

    ``score_tile`` is the scorer, its :class:`TileScorer` class or a plain function.
    A tile in flight costs ``4 * bands + 1`` bytes per window pixel (read data and
    mask) plus, while scored, the scorer's ``bytes_per_pixel`` (default ``8 * bands +
    16``). A scorer with ``prepared_bytes_per_pixel`` prepares tiles in the reader
    thread and keeps only those in flight. Up to ``max_batch`` (or ``batch_size``)
    equal-shaped tiles are scored per call; two tiles are prefetched. If one tile of
    ``tile_size`` does not fit, smaller tiles are used (a multiple of ``align``): with
    a seam-free scorer (receptive field within ``overlap``) the result does not change.
    Without overlap, a tile larger than the file's ``block`` (its rows and columns, when
    square) is a whole number of blocks, so that no block is decoded twice.
    """
    scorer = score_tile if isinstance(score_tile, type) else as_scorer(score_tile)
    nb = len(info.bands)
    read_bpp = 4 * nb + 1
    prepared = scorer.prepared_bytes_per_pixel is not None
    queued_bpp = float(scorer.prepared_bytes_per_pixel) if prepared else read_bpp
    # types that GDAL reads straight into float32 need no second copy of a tile
    raw_copies = 1 if all(t in EXACT_IN_FLOAT32 for t in info.dtypes) else 2
    # the tile being read and prepared, then the tiles queued and being scored, and the scores
    raw_bpp = read_bpp * raw_copies if prepared else 0
    score_bpp = float(scorer.bytes_per_pixel or 8 * nb + 16)
    prefetch = 2
    align = max(1, int(align))
    budget = memory_budget(memory_mb)

    def cost(t: int, b: int) -> float:
        px = (min(t, info.height) + 2 * overlap + align) * \
            (min(t, info.width) + 2 * overlap + align)
        return px * (raw_bpp + (prefetch + b) * queued_bpp + b * score_bpp + 8)

    tile = max(1, int(tile_size))
    while tile > 4 * align and cost(tile, 1) > budget:
        tile = max(4 * align, int(tile * 0.8) // align * align)
    if overlap == 0 and 1 < block < tile and block % align == 0:
        tile = tile // block * block
    batch, max_batch = 1, int(batch_size or scorer.max_batch or 1)
    while batch < max_batch and cost(tile, batch + 1) <= budget:
        batch += 1
    return TilePlan(rows=tile_spans(info.height, tile, align),
                    cols=tile_spans(info.width, tile, align),
                    tile_size=tile, overlap=overlap, batch=batch, prefetch=prefetch)
