"""Values a page keeps in memory for a short while, for the next request of the same session: on the
workbench (``server``), the notice after a form, an enrolment code's page until it is shown, a search's
query behind its token; on the tablet app (``client``), a residents' search behind its token, until the app
locks. Bounded in number and in age, the oldest going first; nothing written to disk, so a restart forgets
them.

The workbench keys each value by the session it belongs to (the session id, alone or with a random token),
so a session never finds another's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ShortTerm(Generic[K, V]):
    "At most ``size`` values, each for at most ``seconds`` after it was put"

    def __init__(self, size: int, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.seconds = seconds
        self._clock = clock
        #: (when put, value) by key, oldest first
        self._kept: dict[K, tuple[float, V]] = {}

    def put(self, key: K, value: V) -> None:
        "Keep ``value`` under ``key`` (instead of any value there), making room by dropping the oldest"
        now = self._clock()
        self._kept.pop(key, None)
        for old, (at, _) in list(self._kept.items()):
            if now - at < self.seconds and len(self._kept) < self.size:
                break
            del self._kept[old]
        self._kept[key] = (now, value)

    def peek(self, key: K) -> V | None:
        "The value under ``key``, kept for later too; None if there is none or it is too old"
        found = self._kept.get(key)
        if found is None:
            return None
        if self._clock() - found[0] >= self.seconds:
            del self._kept[key]
            return None
        return found[1]

    def take(self, key: K) -> V | None:
        "The value under ``key``, which is then forgotten; None if there is none or it is too old"
        value = self.peek(key)
        self._kept.pop(key, None)
        return value

    def clear(self) -> None:
        "Forget every value"
        self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)
