"""Problems the user can fix, each raised with a sentence that tells what to do.

The Processing algorithms turn every :class:`AnomalyError` into that sentence
(``algorithms/base.py``); :class:`Cancelled` ends a run the user stopped.
"""


class AnomalyError(ValueError):
    """A problem the user can fix. The message is a sentence that tells what to do."""


class RasterInputError(AnomalyError):
    """Bad input raster or vector (missing, unreadable, no valid pixels, bands out of range)."""


class RasterOutputError(AnomalyError):
    """An output cannot be written (bad name or format, an input, a missing folder, disk
    full, I/O error); any previous output was kept."""


class ParameterError(AnomalyError):
    """A parameter value that cannot be used (bands, threshold, window sizes)."""


class Cancelled(Exception):
    """Raised when the caller's ``is_cancelled()`` callback returned True."""
