"""Progress and cancellation callbacks of the QGIS-free core.

Progress is reported through ``progress(fraction)`` with a fraction in [0, 1];
``is_cancelled()`` is polled once per block or tile and :class:`Cancelled` is
raised when it returns True.
"""
from typing import Callable, Optional

from .errors import Cancelled

ProgressFn = Optional[Callable[[float], None]]
CancelFn = Optional[Callable[[], bool]]


def check_cancelled(is_cancelled: CancelFn) -> None:
    """Raise :class:`Cancelled` when ``is_cancelled()`` says so."""
    if is_cancelled is not None and is_cancelled():
        raise Cancelled("The operation was cancelled.")


def report(progress: ProgressFn, fraction: float) -> None:
    """Call ``progress`` (if any) with ``fraction`` clipped to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))))


def sub_progress(progress: ProgressFn, start: float, stop: float) -> ProgressFn:
    """The callback of a step that covers ``start`` to ``stop`` of ``progress``
    (None without ``progress``): its fraction 0..1 maps onto that range."""
    if progress is None:
        return None
    return lambda fraction: report(progress, start + (stop - start) * fraction)
