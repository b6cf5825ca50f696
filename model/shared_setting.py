"""A process-wide setting that overlapping runs (threads) override together."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

Saved = TypeVar("Saved")


class SharedSetting(Generic[Saved]):
    """The first of overlapping runs saves the setting (``save``), every run applies its
    override, and the last to end restores what the first saved (``restore``)."""

    def __init__(self, save: Callable[[], Saved], restore: Callable[[Saved], None]) -> None:
        self._save, self._restore = save, restore
        self._lock = threading.Lock()
        self._runs = 0
        self._saved: Saved | None = None

    @contextmanager
    def overridden(self, apply: Callable[[Saved], object]) -> Iterator[object]:
        """Runs the block with ``apply(saved)`` in force; yields what ``apply`` returned."""
        with self._lock:
            if self._runs == 0:
                self._saved = self._save()
            self._runs += 1
            result = apply(self._saved)
        try:
            yield result
        finally:
            with self._lock:
                self._runs -= 1
                if self._runs == 0:
                    self._restore(self._saved)
                    self._saved = None
