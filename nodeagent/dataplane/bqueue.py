"""A bounded FIFO with a drop counter, blocking-with-timeout puts (backpressure) and batch gets."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._woken = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, timeout: float = 0.0) -> bool:
        """Append; when full wait up to ``timeout`` s for room, else drop (counted) and return False."""
        with self._lock:
            if len(self._items) >= self.maxsize and (timeout <= 0 or not self._wait_room(1, timeout)):
                self.dropped += 1
                return False
            self._items.append(item)
            self._not_empty.notify()
            return True

    def put_many(self, items: list[T], timeout: float = 0.0) -> int:
        """Append all items, waiting up to ``timeout`` s in total for room as the consumer drains;
        what still does not fit is dropped (counted). Returns how many were dropped."""
        return len(self.put_many_rest(items, timeout))

    def put_many_rest(self, items: list[T], timeout: float = 0.0) -> list[T]:
        """``put_many``, returning the dropped items themselves (to count them per destination)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            rest = items
            while rest:
                room = self.maxsize - len(self._items)
                if room > 0:
                    taken, rest = rest[:room], rest[room:]
                    self._items.extend(taken)
                    self._not_empty.notify()
                if not rest:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._not_full.wait(left)
            self.dropped += len(rest)
            return rest

    def _wait_room(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.maxsize - len(self._items) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._not_full.wait(left)
        return True

    def get_batch(self, max_items: int, timeout: float | None) -> list[T]:
        """Up to ``max_items`` items; waits up to ``timeout`` s (None = forever) while empty."""
        with self._lock:
            if not self._items and not self._woken:
                self._not_empty.wait(timeout)
            self._woken = False
            items = self._items
            if not items:
                return []
            if len(items) <= max_items:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(max_items)]
            self._not_full.notify_all()
            return batch

    def wake(self) -> None:
        """Make a waiting ``get_batch`` return now (used to run control actions)."""
        with self._lock:
            self._woken = True
            self._not_empty.notify_all()
