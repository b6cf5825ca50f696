"""Tiled scoring of a raster: a reader, a scorer and a writer thread over a tile plan.

Tiles with an overlap margin are read window by window (never the whole raster),
scored by a :class:`~.scorer.TileScorer` and each tile's core is written into a
float32 GeoTIFF on the input's exact grid, with :data:`~.output.NODATA` where the
input is invalid or the score is not finite. Memory is bounded by the memory
setting (:mod:`.memory`), never by the raster.
"""
import queue
import threading
from contextlib import contextmanager
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from ..defaults import TILE_SIZE
from .files import check_output_folder
from .io import BufferPool, open_dataset, read_tile_with_margin
from .output import NODATA, SCORE_BLOCK, WriteFailures, written_score_raster
from .progress import CancelFn, ProgressFn, check_cancelled, report
from .scorer import as_scorer
from .tiling import TilePlan, plan_tiles


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@contextmanager
def _nothing():
    yield


_END = object()

Observer = Callable[[np.ndarray], None]
"""Called by the writer thread with each block of scores as written (:data:`NODATA` where
invalid), e.g. ``vector.threshold.observer``'s, whose streams then spare a pass over the
written raster."""


class _Worker(threading.Thread):
    """A daemon thread with a bounded inbox or outbox that stops on request."""

    def __init__(self, name: str, depth: int) -> None:
        super().__init__(name=name, daemon=True)
        self.queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                if not self.is_alive() and self.error is not None:
                    return False
        return False

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return _END
                if not self.is_alive():
                    # a dead reader that left nothing: report its error or the end
                    try:
                        return self.queue.get_nowait()
                    except queue.Empty:
                        return _Failure(self.error) if self.error else _END


def _core(job, overlap: int) -> Tuple[int, int, int, int]:
    """Rows y0:y1 and columns x0:x1, within a job's tile as read (with its margin), of the
    core that is written."""
    (ry, _, wy0, wy1), (rx, _, wx0, wx1) = job
    y0, x0 = wy0 - max(0, ry - overlap), wx0 - max(0, rx - overlap)
    return y0, y0 + wy1 - wy0, x0, x0 + wx1 - wx0


class _Reader(_Worker):
    """Reads the tiles (with their margins) of a plan ahead of the scorer."""

    def __init__(self, src_path, bands, jobs, overlap, depth, prepare,
                 failures: Optional[WriteFailures] = None) -> None:
        super().__init__("anomaly-reader", depth)
        self.src_path, self.bands, self.jobs, self.overlap = src_path, bands, jobs, overlap
        self.prepare, self.failures = prepare, failures
        self.buffers = BufferPool()

    def run(self) -> None:
        # GDAL's block cache may flush the output's blocks from this thread too
        with self.failures.watch(output_only=True) if self.failures else _nothing():
            self._read()

    def _read(self) -> None:
        try:
            ds, info = open_dataset(self.src_path, self.bands)
            for job in self.jobs:
                if self.stop.is_set():
                    return
                (ry, th, _, _), (rx, tw, _, _) = job
                tile, valid = read_tile_with_margin(ds, info, rx, ry, tw, th, self.overlap,
                                                    self.buffers)
                core = _core(job, self.overlap)
                if not self.put((job, self.prepare(tile, valid, core), valid, tile)):
                    return
            ds = None
            self.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the scoring thread
            self.error = error
            self.put(_Failure(error))


class _Writer(_Worker):
    """Crops each scored tile to its core, masks it and writes it."""

    def __init__(self, band, overlap, row_offset, depth,
                 failures: Optional[WriteFailures] = None, observe: Optional[Observer] = None
                 ) -> None:
        super().__init__("anomaly-writer", depth)
        self.band, self.overlap, self.row_offset = band, overlap, row_offset
        self.width = band.XSize
        self.failures, self.observe = failures, observe

    def run(self) -> None:
        with self.failures.watch() if self.failures else _nothing():
            self._write()

    def _write(self) -> None:
        try:
            while True:
                item = self.get()
                if item is _END:
                    return
                job, scores, valid = item
                (_, _, wy0, wy1), (_, _, wx0, wx1) = job
                y0, y1, x0, x1 = _core(job, self.overlap)
                core, cvalid = scores[y0:y1, x0:x1], valid[y0:y1, x0:x1]
                core = np.where(cvalid & np.isfinite(core), core, np.float32(NODATA))
                core = core.astype(np.float32, copy=False)
                self.band.WriteArray(core, wx0, wy0 - self.row_offset)
                if self.observe is not None:
                    self.observe(core)
                if wx1 == self.width and (wy1 - self.row_offset) % SCORE_BLOCK == 0:
                    # a finished band of whole blocks: compress it now, overlapping the
                    # scoring of the next tiles (and keeping the block cache small)
                    self.band.FlushCache()
        except BaseException as error:  # noqa: BLE001 - re-raised by the scoring thread
            if isinstance(error, RuntimeError) and self.failures is not None:
                self.failures.messages.append(str(error))  # GDAL raised it (exceptions on)
            self.error = error
            self.stop.set()


def _groups(reader: _Reader, batch: int):
    """Lists of up to ``batch`` read items of one tile shape, in reading order."""
    group = []
    while True:
        item = reader.get()
        if item is _END:
            break
        if isinstance(item, _Failure):
            raise item.error
        if group and item[2].shape != group[0][2].shape:
            yield group
            group = []
        group.append(item)
        if len(group) == batch:
            yield group
            group = []
    if group:
        yield group


def score_tiles(src_path: str, out_band, score_tile, plan: TilePlan, *,
                bands: Optional[Sequence[int]] = None, row_range: Optional[Tuple[int, int]] = None,
                row_offset: int = 0, progress: ProgressFn = None,
                is_cancelled: CancelFn = None, failures: Optional[WriteFailures] = None,
                observe: Optional[Observer] = None) -> None:
    """Score the tiles of ``plan`` (tile rows ``row_range``) into ``out_band``.

    Three threads overlap the work: a reader prefetches tiles with margins (and
    prepares them, see :class:`~.scorer.TileScorer`), this thread scores them
    (``plan.batch`` equal-shaped tiles per call), a writer crops, masks and writes
    the cores (at raster row minus ``row_offset``) and passes them to ``observe``.
    """
    scorer = as_scorer(score_tile)
    start, stop = row_range or (0, len(plan.rows))
    jobs = [(r, c) for r in plan.rows[start:stop] for c in plan.cols]
    reader = _Reader(src_path, bands, jobs, plan.overlap, plan.prefetch, scorer.prepare, failures)
    writer = _Writer(out_band, plan.overlap, row_offset, plan.batch + 1, failures, observe)
    reader.start()
    writer.start()
    done = 0
    try:
        for group in _groups(reader, plan.batch):
            check_cancelled(is_cancelled)
            scored = scorer.score_prepared([prepared for _, prepared, _, _ in group])
            for (job, _, valid, tile), scores in zip(group, scored):
                scores = np.asarray(scores, dtype=np.float32)
                if not np.may_share_memory(scores, tile):  # the next tiles are read into it
                    reader.buffers.give(tile)
                if scores.shape != valid.shape:
                    raise ValueError(
                        f"score_tile returned shape {scores.shape}, expected {valid.shape}")
                if writer.error is not None or not writer.put((job, scores, valid)):
                    raise writer.error or RuntimeError("the tile writer stopped")
                done += 1
                report(progress, done / len(jobs))
        writer.put(_END)
        writer.join()
        if writer.error is not None:
            raise writer.error
    finally:
        reader.stop.set()
        writer.stop.set()
        reader.join()
        writer.join()


def score_raster(src_path: str, dst_path: str, score_tile, *,
                 bands: Optional[Sequence[int]] = None, tile_size: int = TILE_SIZE,
                 overlap: int = 32, align: int = 1, progress: ProgressFn = None,
                 is_cancelled: CancelFn = None,
                 memory_mb: Optional[float] = None, batch_size: Optional[int] = None,
                 plan: Optional[TilePlan] = None, row_range: Optional[Tuple[int, int]] = None,
                 read_path: Optional[str] = None, observe: Optional[Observer] = None) -> None:
    """Score ``src_path`` tile by tile and write a float32 score GeoTIFF.

    ``score_tile`` (a :class:`~.scorer.TileScorer` or a function ``(tile, valid)``)
    gets ``tile`` float32 ``(B, h, w)`` (the core window grown by ``overlap`` on every
    side, clipped to the raster: see :func:`~.io.read_tile_with_margin`) and ``valid``
    bool ``(h, w)``; it returns float32 ``(h, w)`` scores. Cores are ``tile_size`` long
    unless the raster is smaller along an axis (then one tile spans it); the last core
    is shifted back to stay full-sized (with ``align > 1`` it may be up to ``align - 1``
    pixels longer). Invalid pixels reach ``score_tile`` with the values as read and
    ``valid=False``; :data:`NODATA` is written there whatever is returned.

    Memory is bounded by the memory setting (``memory_mb``, see
    :func:`~.memory.memory_budget`), never by the raster: see
    :func:`~.tiling.plan_tiles` for how tiles, batches (``batch_size`` overrides the
    scorer's ``max_batch``) and prefetching fit in it.

    With ``plan`` and ``row_range`` (tile rows ``start, stop`` of that plan)
    only those rows are scored, into a strip GeoTIFF that covers the raster
    rows they write (see :func:`assemble_strips`).

    With ``read_path`` (a raster on the same grid, such as the spectral reduction of
    ``src_path``) the tiles are read from it, all its bands; ``src_path`` and ``bands``
    then give only the output's grid.

    The output has the input's exact size, geotransform and CRS (tiled and
    compressed as :data:`~.output.GTIFF_OPTIONS` says, BigTIFF when needed). It is written
    under a temporary name in the destination folder and renamed on success; on
    :class:`Cancelled` or any other exception the partial file is removed.
    """
    tile_size = int(tile_size)
    overlap = max(0, int(overlap))
    if tile_size < 1:
        raise ValueError("tile_size must be at least 1")
    ds, info = open_dataset(src_path, bands)
    if read_path is not None:
        ds, read_info = open_dataset(read_path)
        bands = None
    else:
        read_path, read_info = src_path, info
    block_x, block_y = ds.GetRasterBand(1).GetBlockSize()
    ds = None
    check_output_folder(dst_path)
    if plan is None:
        plan = plan_tiles(read_info, score_tile, tile_size=tile_size, overlap=overlap,
                          align=align, memory_mb=memory_mb, batch_size=batch_size,
                          block=block_x if block_x == block_y else 1)
    row_offset, height = 0, None
    if row_range is not None:
        row_offset, last = plan.write_rows(*row_range)
        height = last - row_offset
    with written_score_raster(dst_path, info, height=height, row_offset=row_offset) as target:
        score_tiles(read_path, target.band, score_tile, plan, bands=bands, row_range=row_range,
                    row_offset=row_offset, progress=progress, is_cancelled=is_cancelled,
                    failures=target.failures, observe=observe)


def assemble_strips(strips: Sequence[Tuple[str, int]], dst_path: str, reference: str, *,
                    bands: Optional[Sequence[int]] = None, block_rows: int = 256) -> None:
    """Copy strip GeoTIFFs ``(path, first_row)`` into one score raster on ``reference``'s grid.

    Strips are copied ``block_rows`` rows at a time (bounded memory); the
    result is written under a temporary name and renamed on success.
    """
    ds, info = open_dataset(reference, bands)
    ds = None
    with written_score_raster(dst_path, info) as target, target.failures.raised():
        for path, first_row in strips:
            sds = gdal.Open(str(path))
            sband = sds.GetRasterBand(1)
            for y in range(0, sds.RasterYSize, block_rows):
                h = min(block_rows, sds.RasterYSize - y)
                target.band.WriteArray(sband.ReadAsArray(0, y, sds.RasterXSize, h), 0,
                                       first_row + y)
            sband = None
            sds = None
