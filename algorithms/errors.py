"""Every error of a run as one sentence that tells the user what to do."""

import signal
import threading
import traceback
from contextlib import contextmanager

import numpy as np
from qgis.core import QgsProcessingException

from ..model.raster.errors import AnomalyError, Cancelled


def forget_frames(error):
    """Clear the variables of the finished frames behind ``error`` and its causes.

    They hold the run's datasets; a traceback kept in a reference cycle would
    otherwise close them only when Python collects it, possibly after QGIS shut GDAL
    down (a crash at exit).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


class Terminated(Cancelled):
    """The process received SIGTERM during a run."""


@contextmanager
def terminate_cleanly():
    """Turn SIGTERM into :class:`Terminated` during a run in the main thread (qgis_process),
    so that partial files are removed before the process ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("Stopped by a termination signal; no output was written.")
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def processing_error(err: BaseException) -> QgsProcessingException:
    """The sentence for an error that ended a run (the single place where the core's
    errors become what the user reads)."""
    if isinstance(err, QgsProcessingException):
        return err
    if isinstance(err, (AnomalyError, Terminated)):
        return QgsProcessingException(str(err))
    if isinstance(err, Cancelled):
        return QgsProcessingException("Cancelled by the user; no output was written.")
    if isinstance(err, np.linalg.LinAlgError):
        return QgsProcessingException(
            f"The statistics of this raster could not be inverted ({err}). Check it for "
            "extreme or corrupt values, or choose other BANDS.")
    if isinstance(err, MemoryError):
        return QgsProcessingException(
            "Not enough memory for this raster. Choose a smaller TILE_SIZE (anomaly:detect) "
            "or fewer BANDS, or close other programs, then run again.")
    if isinstance(err, RuntimeError):  # GDAL/OGR errors (exceptions enabled), torch errors
        text = str(err).strip() or type(err).__name__
        if "out of memory" in text.lower():
            return QgsProcessingException(
                f"Not enough memory ({text.splitlines()[0]}). Choose a smaller TILE_SIZE "
                "or the cpu DEVICE, then run again.")
        return QgsProcessingException(
            f"A raster could not be read or written ({text}). Check that the input file "
            "is complete and not damaged, and that the output disk has free space.")
    if isinstance(err, OSError):
        return QgsProcessingException(
            f"A file could not be read or written ({err}). Check the paths, the "
            "permissions and the free disk space.")
    return QgsProcessingException(
        f"The run stopped on an unexpected error ({type(err).__name__}: {err}). No "
        "output was written; please report it with the output of gdalinfo for the input.")
