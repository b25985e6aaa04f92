"""What the workbench works out from a scope's residents or needs, kept in memory until one of them changes.

The duplicates page pairs every resident of the township (``duplicates.find_pairs``: over a second for
30,000 residents), the residents list sorts them all by pinyin to show 200, and the needs board and the
home page count and order every need (60,000 at a large township) to show 200. Staff open these often,
and page through them. A ``Kept`` holds one result for each key it was asked about (a scope, a unit
range; with the day, for the needs), with the ``Store.records_version`` of its collection read before
it was worked out, and works it out again once that changed: any record of the collection written on
this node (a tablet's push, a staff edit, a merge, a delete), a rollback, or anything another
connection committed. Anything else a page shows (a pair's dismissal, the needs and services counted,
the rows' current values) the page reads afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sync.store import Store

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Keys a ``Kept`` holds results for (a township's staff, and staff scoped to one village each); past it,
#: the least recently used goes.
SCOPES = 8


class Kept(Generic[K, T]):
    "One result for each key, worked out by ``compute(key)`` again once a record of ``coll`` changed"

    def __init__(self, store: Store, compute: Callable[[K], T], coll: str, scopes: int = SCOPES) -> None:
        self.store = store
        self.compute = compute
        self.coll = coll
        self.scopes = scopes
        self._kept: OrderedDict[K, tuple[tuple[int, ...], T]] = OrderedDict()

    def get(self, key: K) -> T:
        """The result for ``key``: kept, or worked out now. ``compute`` reads the store under its lock
        (not held while it works): what it reads is at least as new as the version it is kept with, so a
        change it misses changes the version too."""
        with self.store.lock:
            version = self.store.records_version(self.coll)
            hit = self._kept.get(key)
            if hit is not None and hit[0] == version:
                self._kept.move_to_end(key)
                return hit[1]
        value = self.compute(key)
        with self.store.lock:
            self._kept[key] = (version, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.scopes:
                self._kept.popitem(last=False)
        return value
