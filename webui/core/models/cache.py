"""A byte-budget LRU of loaded models; entries in use are pinned and never evicted.

Switching back to a recent checkpoint is then a dictionary look-up instead of a multi-second load, and
a job that holds a model can never have it pulled from under it by another job's switch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    value: T
    nbytes: int
    pins: int = 0


class ModelCache(Generic[T]):
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._stale: set[Hashable] = set()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def lru_keys(self) -> list[Hashable]:
        """Least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def _evict(self) -> None:
        over = self.used_bytes - self.budget_bytes
        for key in list(self._entries):
            if over <= 0:
                return
            e = self._entries[key]
            if e.pins == 0:
                del self._entries[key]
                over -= e.nbytes

    @contextmanager
    def use(self, key: Hashable, load: Callable[[], tuple[T, int]]) -> Iterator[T]:
        """Yield the cached value for `key`, loading it with `load() -> (value, nbytes)` on a miss.

        The entry is pinned for the duration of the `with` block. Concurrent misses on one key load once.
        A failed load leaves the cache as it was.
        """
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    entry.pins += 1
            if entry is None:
                value, nbytes = load()
                with self._lock:
                    entry = _Entry(value, nbytes, pins=1)
                    self._entries[key] = entry
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.pins -= 1
                if entry.pins == 0 and key in self._stale:
                    self._stale.discard(key)
                    self._entries.pop(key, None)
                self._evict()

    def discard(self, stale: Callable[[Hashable], bool]) -> None:
        """Drop the entries whose key is `stale`, now if unused, else when their last user lets go."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if stale(k)]:
                if self._entries[key].pins == 0:
                    del self._entries[key]
                else:
                    self._stale.add(key)

    def clear(self) -> None:
        """Drop every entry that is not in use."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.pins == 0]:
                del self._entries[key]
