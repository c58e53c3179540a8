"""A tiny time-limited cache: the genre catalogue, stats and plots change slowly and cost a query or a plot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class TTLCache:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = seconds, clock
        self._items: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``make()`` stored for the next ``seconds``."""
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = make()
        with self._lock:
            # Keys may carry a timestamp (plots of one stats snapshot): drop expired ones so they cannot pile up.
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (now + self.seconds, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
