"""Writing outputs completely or not at all, and the float32 score GeoTIFF.

Every output is written under a hidden temporary name beside its destination and
moved onto it only when complete (:func:`atomic_output`): a failed or cancelled run
leaves no partial file and keeps a previous output as it was. GDAL reports a full
disk or an I/O error through its error handler: :class:`WriteFailures` collects
those so that they become the output's sentence.
"""
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence

from osgeo import gdal

from .errors import AnomalyError, Cancelled, RasterOutputError
from .io import RasterInfo

NODATA = -9999.0
"""Nodata value of every score raster written by :func:`score_raster`."""


def fast_compression() -> List[str]:
    """GeoTIFF creation options of the fastest lossless compression: ZSTD level 1 where
    this GDAL build has it, else DEFLATE level 1.

    Float score maps barely compress (their low mantissa bits are noise): on a
    4096 x 4096 map ZSTD 1 writes 58 MB in 0.12 s, DEFLATE 1 51 MB in 0.55 s (higher
    levels gain nothing), and compression time would otherwise bound anomaly:rx.
    """
    creation = gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
    return ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"] if "ZSTD" in creation else \
        ["COMPRESS=DEFLATE", "ZLEVEL=1"]


GTIFF_OPTIONS = ["TILED=YES", *fast_compression(), "BIGTIFF=IF_SAFER",
                 "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
SCORE_BLOCK = 256
"""Block side of :data:`GTIFF_OPTIONS`."""


def create_score_raster(path: str, info: RasterInfo, options: Sequence[str] = GTIFF_OPTIONS, *,
                        height: Optional[int] = None, row_offset: int = 0):
    """Create an empty float32 single-band GeoTIFF on the grid of ``info``.

    With ``height`` (and ``row_offset``), only the rows ``row_offset`` to
    ``row_offset + height`` of that grid: a horizontal strip.
    """
    drv = gdal.GetDriverByName("GTiff")
    rows = info.height if height is None else int(height)
    out = drv.Create(str(path), info.width, rows, 1, gdal.GDT_Float32, list(options))
    if out is None:
        raise RasterOutputError(
            f"Could not create the output raster '{path}'. Check that the folder exists "
            "and is writable.")
    if info.has_geotransform:
        gt = list(info.geotransform)
        gt[0] += row_offset * gt[2]
        gt[3] += row_offset * gt[5]
        out.SetGeoTransform(tuple(gt))
    if info.projection_wkt:
        out.SetProjection(info.projection_wkt)
    if info.gcps:
        out.SetGCPs([gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel, g.GCPLine - row_offset,
                              g.Info, g.Id) for g in info.gcps], info.gcp_wkt)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    return out


def _temp_name(dst_path: str) -> str:
    """A hidden file name beside ``dst_path`` for writing it before it is complete."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    base = os.path.basename(dst_path)
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}.partial.tif")


def remove_quietly(path: str) -> None:
    """Remove ``path`` and its ``.aux.xml`` sidecar where they exist."""
    for p in (path, path + ".aux.xml"):
        try:
            os.remove(p)
        except OSError:
            pass


@contextmanager
def atomic_output(dst_path: str, *, several_files: bool = False,
                  remove_previous: Optional[Callable[[str], None]] = None) -> Iterator[str]:
    """Yield a temporary path to write the output ``dst_path`` under; move it onto
    ``dst_path`` in one step when the block ends normally, else remove it.

    The previous output (and its statistics sidecar ``.aux.xml``) stays until then.
    With ``several_files`` (formats that write sidecar files, e.g. a Shapefile) the path
    lies in a hidden folder beside ``dst_path`` whose files all move beside it;
    ``remove_previous(dst_path)`` then first removes the previous output.
    """
    if several_files:
        with _partial_folder(dst_path) as part_dir:
            yield os.path.join(part_dir, os.path.basename(dst_path))
            if remove_previous is not None and os.path.exists(dst_path):
                remove_previous(dst_path)
            folder = os.path.dirname(os.path.abspath(dst_path))
            for name in sorted(os.listdir(part_dir)):
                os.replace(os.path.join(part_dir, name), os.path.join(folder, name))
        return
    tmp = _temp_name(dst_path)
    try:
        yield tmp
        os.replace(tmp, dst_path)
        remove_quietly(dst_path + ".aux.xml")
    finally:
        remove_quietly(tmp)


@contextmanager
def _partial_folder(dst_path: str) -> Iterator[str]:
    """A new hidden folder beside ``dst_path``, removed with what is left in it."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    part_dir = os.path.join(folder, f".{os.path.basename(dst_path)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        os.mkdir(part_dir)
    except OSError as error:
        raise RasterOutputError(
            f"Could not write in the output folder '{folder}' ({error.strerror}). "
            "Choose a folder where you can write.") from error
    try:
        yield part_dir
    finally:
        shutil.rmtree(part_dir, ignore_errors=True)


class WriteFailures:
    """Collects GDAL/OGR failures reported while an output is written.

    Writers report a full disk or an I/O error through GDAL's error handler, not as
    an exception: push :meth:`watch` (in every thread that writes) and call
    :meth:`check` before the output replaces the previous one.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.messages: List[str] = []

    def _handler(self, level, number, message) -> None:
        if level >= gdal.CE_Failure:
            self.messages.append(str(message))

    def _output_handler(self, level, number, message) -> None:
        text = str(message)
        if os.path.basename(self.path) in text or "no space left" in text.lower():
            self._handler(level, number, message)

    @contextmanager
    def watch(self, output_only: bool = False):
        """Collect failures of this thread (with ``output_only``, those that name the
        output or a full disk: a reading thread may flush the output's blocks)."""
        gdal.PushErrorHandler(self._output_handler if output_only else self._handler)
        try:
            yield self
        finally:
            gdal.PopErrorHandler()

    @contextmanager
    def raised(self):
        """Collect the failures GDAL raises as RuntimeError (``gdal.UseExceptions()``)."""
        try:
            yield
        except RuntimeError as error:
            self.messages.append(str(error))
            raise

    def check(self, dst_path: str) -> None:
        """Raise :class:`RasterOutputError` when a failure was reported."""
        if self.messages:
            raise output_error(dst_path, "; ".join(self.messages[:2]))

    def reraise(self, dst_path: str, error: BaseException) -> None:
        """Re-raise ``error`` of a failed write: as the output's sentence when the write
        failed (a reported failure, a file system error), else as it is."""
        if isinstance(error, (AnomalyError, Cancelled)):
            raise error
        if self.messages or isinstance(error, OSError):
            raise output_error(dst_path, "; ".join(self.messages[:2]) or str(error)) from error
        raise error


@contextmanager
def gdal_quiet():
    """GDAL reports nothing and raises nothing (``gdal.UseExceptions()`` included) here."""
    raising = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()
        if raising:
            gdal.UseExceptions()


def output_error(dst_path: str, detail: str) -> RasterOutputError:
    """The sentence for an output that could not be written (disk full or other)."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    try:
        free = os.statvfs(folder)
        free_mb = free.f_bavail * free.f_frsize / 2 ** 20
    except OSError:
        free_mb = math.inf
    if "no space left" in detail.lower() or free_mb < 1:
        return RasterOutputError(
            f"The disk is full: the output '{dst_path}' could not be written "
            f"({free_mb:.1f} MB free in '{folder}'). Free some space or choose another "
            "folder, then run again; any previous output was left as it was.")
    return RasterOutputError(
        f"The output '{dst_path}' could not be written ({detail}). Check the free disk "
        f"space and the permissions of '{folder}', then run again; any previous output "
        "was left as it was.")


class ScoreTarget:
    """The open score raster of :func:`written_score_raster`: ``band`` to write into,
    ``failures`` to hand to the threads that write."""

    def __init__(self, dataset, failures: WriteFailures) -> None:
        self.dataset, self.failures = dataset, failures
        self.band = dataset.GetRasterBand(1)

    def close(self) -> None:
        """Flush and close the file (the caller keeps no reference to its band)."""
        if self.band is not None:
            self.band.FlushCache()
        self.band = None
        if self.dataset is not None:
            self.dataset.FlushCache()
        self.dataset = None


@contextmanager
def written_score_raster(dst_path: str, info: RasterInfo, **create_options):
    """A new score raster on ``info``'s grid, written completely or not at all
    (:func:`atomic_output`); a failed write becomes the output's sentence
    (:meth:`WriteFailures.reraise`). Yields a :class:`ScoreTarget`."""
    with atomic_output(dst_path) as tmp:
        failures = WriteFailures(tmp)
        target = None
        try:
            with failures.watch():
                with failures.raised():
                    target = ScoreTarget(create_score_raster(tmp, info, **create_options),
                                         failures)
                yield target
                with failures.raised():
                    target.close()
            failures.check(dst_path)
        except BaseException as error:
            with gdal_quiet():  # closing a file that failed fails again: say it once, below
                if target is not None:
                    target.band = target.dataset = None
            failures.reraise(dst_path, error)
