"""What the workbench works out from a scope's residents, kept in memory until a resident changes.

The duplicates page pairs every resident of the township (``duplicates.find_pairs``: over a second for
30,000 residents) and the residents list sorts them all by pinyin to show 200. Staff open both often,
and residents change far less often than needs and services. A ``Kept`` holds one result for each scope
(unit range) it was asked about, with the ``Store.records_version("person")`` read before it was worked
out, and works it out again once that changed: any resident written on this node (a tablet's push, a
staff edit, a merge, a delete), a rollback, or anything another connection committed. Anything else a
page shows (a pair's dismissal, the needs and services counted, the rows' current values) the page
reads afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from sync.store import Store

T = TypeVar("T")

#: Scopes a ``Kept`` holds results for (a township's staff, and staff scoped to one village each); past
#: it, the least recently used goes.
SCOPES = 8


class Kept(Generic[T]):
    "One result for each scope, worked out by ``compute(scope)`` again once a resident changed"

    def __init__(self, store: Store, compute: Callable[[tuple[str, str]], T], scopes: int = SCOPES) -> None:
        self.store = store
        self.compute = compute
        self.scopes = scopes
        self._kept: OrderedDict[tuple[str, str], tuple[tuple[int, ...], T]] = OrderedDict()

    def get(self, scope: tuple[str, str]) -> T:
        """The result for ``scope``: kept, or worked out now. ``compute`` reads the store under its lock
        (not held while it works): what it reads is at least as new as the version it is kept with, so a
        change it misses changes the version too."""
        with self.store.lock:
            version = self.store.records_version("person")
            hit = self._kept.get(scope)
            if hit is not None and hit[0] == version:
                self._kept.move_to_end(scope)
                return hit[1]
        value = self.compute(scope)
        with self.store.lock:
            self._kept[scope] = (version, value)
            self._kept.move_to_end(scope)
            while len(self._kept) > self.scopes:
                self._kept.popitem(last=False)
        return value
