"""Pulls answered from memory: a scope's new ops, encoded and deflated once for all the tablets that pull
them, instead of read, packed and gzipped again for each.

When the tablets of a village sync one after another (every morning, say), each pulls what the ones
before it pushed: the same ops, over and over. A ``Stream`` keeps one scope's ops (a village, with the
reference data of the units above it) from some sequence number on, in order, each op already in its
MessagePack wire form. Its device and author tables only grow, so an op's encoding never changes, and a
response is the tables, then the wanted ops' bytes one after another. The ops that one commit added
form segments of up to ``SEGMENT_OPS``, each deflated once when a response first takes it whole (and
once more to follow the segment before it, referring back into it, which compresses about as well as one
stream); a response's body is one gzip stream made of those parts (``sync.wire.gzip_parts``), and only
what lies between them is compressed for that response.

A stream answers exactly as the node's query of ``ops`` would (``tests/server/test_pullcache.py``
checks it does): it holds every op of the scope after ``start``, with its dead flag, which it sets
when the store says the op turned dead (``Store.turned_dead``). Anything else that changes ops already
held (a unit filled in later, a clock re-stamped, an op dropped, a rollback) changes
``Store.op_log_version``, and every stream is dropped. Streams are only read or caught
up outside a write transaction, so they never hold an op that may yet roll back. Access holds the
store's lock.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from sync.store import Store
from sync.wire import Deflated, WireAuthor, WireOp, deflate, uuid_bytes

_encode = msgspec.msgpack.Encoder().encode
_json_decode = msgspec.json.decode

#: Ops a stream keeps; past it, its oldest segments go.
MAX_OPS = 20_000
#: Ops all streams keep together (about 240 bytes each, with the deflated segments); past it, the least
#: recently used stream goes.
MAX_TOTAL_OPS = 100_000
#: Most ops one catch-up reads; a pull further behind is answered by the query, and the stream
#: starts again at the top.
CATCH_UP = 20_000
#: Most ops in one pre-deflated segment.
SEGMENT_OPS = 1_000
#: zlib's level for the ops of a segment that one response takes in part (the others' ops of a commit its
#: own were in), deflated for that response alone: on 3,000 ops, level 1 ran four times as fast as level
#: 6 for 6% more bytes (2026-12-02), and in a herd of 200 tablets these parts were most of the node's
#: deflating. Segments taken whole are deflated once, at zlib's default level.
PART_LEVEL = 1

#: Reads a scope's op rows after a sequence number, in order, at most so many:
#: (seq, site, counter, hlc, coll, record, field, kind, value JSON, pred JSON, author, dead)
ReadScope = Callable[[int, int], Sequence[tuple[Any, ...]]]


class Stream:
    "One scope's ops after ``start``, up to ``last``, in wire form"

    def __init__(self, start: int) -> None:
        self.start = start
        self.last = start
        #: (site, seq): every op of the scope after ``last`` up to seq is that site's (``PullCache.stream``)
        self.skipped = (-1, start)
        self.devices: list[str] = []
        self.authors: list[WireAuthor] = []
        self._device_index: dict[str, int] = {}
        self._author_index: dict[tuple[int, str, str, int], int] = {}
        self._by_author: dict[tuple[int, int], int] = {}  # (author id, site id) -> index in ``authors``
        self.seqs: list[int] = []
        self.sites: list[int] = []
        self.dead: list[bool] = []
        self.blobs: list[bytes] = []
        #: segments: the index of each one's first op; one ends where the next begins (the last at the end)
        self._seg_lo: list[int] = []
        self._deflated: dict[int, Deflated] = {}  # by segment number, once a response took it whole
        self._chained: dict[int, Deflated] = {}  # the same, deflated to follow the segment before it

    def __len__(self) -> int:
        return len(self.seqs)

    def _device(self, name: str) -> int:
        i = self._device_index.get(name)
        if i is None:
            i = self._device_index[name] = len(self.devices)
            self.devices.append(name)
        return i

    def extend(self, rows: Sequence[tuple[Any, ...]], top: int, device_of: Callable[[int], str],
               author_of: Callable[[int], tuple[str, str, int]]) -> None:
        "Append op rows read after ``last`` (all of the scope's, up to ``top``) and move ``last`` to ``top``"
        rids: dict[str, bytes] = {}
        encode = _encode
        by_author = self._by_author
        for k, (seq, site, counter, hlc, coll, record, field, kind, value, pred, aid, dead) in enumerate(rows):
            if k % SEGMENT_OPS == 0:
                self._seg_lo.append(len(self.seqs))
            a = by_author.get((aid, site))
            if a is None:
                user, unit, tier = author_of(aid)
                key = (self._device(device_of(site)), user, unit, tier)
                a = self._author_index.get(key)
                if a is None:
                    a = self._author_index[key] = len(self.authors)
                    self.authors.append(WireAuthor(*key))
                by_author[(aid, site)] = a
            flat: list[int] = []
            if pred:
                for d, c in _json_decode(pred):
                    flat.append(self._device(d))
                    flat.append(c)
            rb = rids.get(record)
            if rb is None:
                rb = rids[record] = uuid_bytes(record)
            self.blobs.append(encode(WireOp(a, counter, hlc, coll, rb, field, kind,
                                            _json_decode(value) if value is not None else None, flat)))
            self.seqs.append(seq)
            self.sites.append(site)
            self.dead.append(bool(dead))
        self.last = top

    def mark_dead(self, seq: int) -> None:
        "The op at ``seq``, if the stream holds it, turned dead"
        i = bisect.bisect_left(self.seqs, seq)
        if i < len(self.seqs) and self.seqs[i] == seq:
            self.dead[i] = True

    def take(self, cursor: int, own: int, limit: int) -> list[int]:
        "The indexes of the ops after ``cursor`` not written by site ``own``, in order, at most ``limit``"
        i = bisect.bisect_right(self.seqs, cursor)
        sites = self.sites
        out: list[int] = []
        for j in range(i, len(sites)):
            if sites[j] != own:
                out.append(j)
                if len(out) == limit:
                    break
        return out

    def parts(self, taken: list[int]) -> list[Deflated]:
        """The encodings of the ops at ``taken`` (ascending), one after another, as deflated parts: a
        segment taken whole is deflated once for every response (once on its own, and once to follow the
        segment before it, when that came whole just before); the rest for this response"""
        out: list[Deflated] = []
        seg_lo, n = self._seg_lo, len(self.seqs)
        k = 0
        before = -1  # the segment that came whole just before
        while k < len(taken):
            seg = bisect.bisect_right(seg_lo, taken[k]) - 1
            lo = seg_lo[seg]
            hi = seg_lo[seg + 1] if seg + 1 < len(seg_lo) else n
            m = bisect.bisect_left(taken, hi, k)
            if m - k == hi - lo:  # every op of the segment, and only those
                chained = before == seg - 1 and seg > 0
                cache = self._chained if chained else self._deflated
                d = cache.get(seg)
                if d is None:
                    d = cache[seg] = deflate(self._data(seg), after=self._data(seg - 1) if chained else b"")
                out.append(d)
                before = seg
            else:  # deflated for this response alone: quickly
                blobs = self.blobs
                out.append(deflate(b"".join([blobs[j] for j in taken[k:m]]), PART_LEVEL))
                before = -1
            k = m
        return out

    def _data(self, seg: int) -> bytes:
        lo = self._seg_lo[seg]
        hi = self._seg_lo[seg + 1] if seg + 1 < len(self._seg_lo) else len(self.seqs)
        return b"".join(self.blobs[lo:hi])

    def trim(self, keep: int) -> None:
        "Drop the oldest segments, so that at most ``keep`` ops remain"
        n = len(self.seqs)
        if n <= keep:
            return
        s = bisect.bisect_left(self._seg_lo, n - keep)  # the first segment that may stay
        cut = self._seg_lo[s] if s < len(self._seg_lo) else n
        self.start = self.seqs[cut - 1]
        for lst in (self.seqs, self.sites, self.dead, self.blobs):
            del lst[:cut]
        self._seg_lo = [lo - cut for lo in self._seg_lo[s:]]
        self._deflated = {k - s: d for k, d in self._deflated.items() if k >= s}
        self._chained = {k - s: d for k, d in self._chained.items() if k > s}  # the first has none before it


class PullCache:
    "The streams of the scopes tablets pull, most recently used last"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.streams: OrderedDict[Any, Stream] = OrderedDict()
        self._version: tuple[int, int] | None = None
        self._dead_mark = 0

    def stream(self, key: Any, cursor: int, top: int, own: int, read: ReadScope,
               others: Callable[[int], bool]) -> Stream | None:
        """The stream of scope ``key`` holding every op after ``cursor`` up to ``top`` that the caller
        (site ``own``) is to receive; None when the caller is to read its ops itself (inside a
        transaction, or too far behind). ``read(after, most)`` reads the scope's op rows; ``others(after)``
        says whether any op of the scope after ``after`` is another's than the caller's. A stream is
        caught up to ``top`` only when that is so: a tablet pushing alone never has its own ops read
        back. Call with the store's lock held."""
        store = self.store
        if store.conn.in_transaction:
            return None
        version = store.op_log_version()
        if version != self._version:
            self.streams.clear()
            self._version = version
            _, self._dead_mark = store.turned_dead(0)
        else:
            dead, self._dead_mark = store.turned_dead(self._dead_mark)
            for seq in dead:
                for st in self.streams.values():
                    st.mark_dead(seq)
        s = self.streams.get(key)
        fresh = s is None or s.start > cursor or s.last > top
        if fresh or s is None:
            s = Stream(cursor)
        if s.last < top:
            # all that is new may be the caller's own: then leave it for now. A tablet pushing batch after
            # batch is asked only about its latest one
            since = s.skipped[1] if s.skipped[0] == own else s.last
            if since >= top or not others(since):
                if not fresh:
                    s.skipped = (own, top)
                    self.streams.move_to_end(key)
                return s
        rows = read(s.last, CATCH_UP + 1) if s.last < top else ()
        if len(rows) > CATCH_UP:
            s = Stream(top)  # too far behind: the caller reads; later pulls from the top on use the stream
            ok = False
        else:
            s.extend(rows, top, store.device_of, store.author_of)
            s.skipped = (-1, top)
            s.trim(MAX_OPS)
            ok = s.start <= cursor
        self.streams[key] = s
        self.streams.move_to_end(key)
        total = sum(len(x) for x in self.streams.values())
        while total > MAX_TOTAL_OPS and len(self.streams) > 1:
            _, old = self.streams.popitem(last=False)
            total -= len(old)
        return s if ok else None
