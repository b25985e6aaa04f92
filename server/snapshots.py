"""Aggregated snapshots: what a node shows the tier above it, counts and rates with no personal field.

A snapshot is a set of **parts**, each a list of cells and a content hash, so an upper node pulls only
the parts whose hash differs from what it holds:

    needs/YYYY-MM       needs created that month: [village, category, status] -> [count]
    services/YYYY-MM    services delivered that month: [village, type] -> [count, minutes, people served]
    resolved/YYYY-MM    needs resolved that month: [village, whole days it took] -> [count]
    residents           residents now: [village, group] -> [count] (一老一小一困一残, and 合计 for all)
    devices             village tablets: [village] -> [enrolled, synced in 7 days, synced in 30 days]
    tasks               progress on the tasks set above the township: [village, task id] -> [进行中, 已完成]
                        (each 0 or 1; both 0 is 未开始 or not reported), a cell for every village of the
                        township's unit tree, every village with a tablet enrolled and every one
                        that reported

**Optional sections.** A section added after the others (``tasks``) goes only to a caller that asks for it
(``with=tasks``): a node above running an older version refuses a part it does not know
(``server.links``), and a newer one simply has none from an older node below.

A **township** computes its parts from its records (``township_parts``), at a watermark: its highest op
sequence. Its ``Snapshotter`` keeps the figures up to date between snapshots, reading again only the
records written since the last one (``_Tally``). Months are China time (UTC+8); a need's month is when
its first op was written; it counts as resolved when its status is 已解决 or 已关闭, at the latest op
that set 已解决 (or the first that set 已关闭). People served is a service's 服务人次, 1 when not
filled in.

**Small cells.** In needs, services and residents a cell whose count is under ``suppress_below``
(``CUNSYNC_SUPPRESS_BELOW``, default 3; 0 turns it off) leaves the township with its values as null:
upper nodes never receive them, and roll-ups count how many were withheld. The resolution histogram and
device counts are not suppressed: they count needs and tablets, not residents. Exact totals exist only on
the township; a roll-up that must add up exactly (the tests, the demo) runs its townships with 0.

**Closing a month** (``close_month``) freezes that month's parts as published. Data entry goes on
(DHIS2-style approval without its lock-out): a part that changes after it was closed carries a
``Closure`` with a revision number and the cells that differ from the frozen ones.

A **county or city** stores the parts it pulled from each child (``server.links``) and its own snapshot is
their union (``merge_parts``): every cell is keyed by village, so nothing is lost on the way up and a city
groups by county, a county by township. ``Snapshotter`` answers ``GET /api/snapshot`` for both. A part
pulled from below whose cells do not have their section's shape (``SHAPES``) is refused (``server.links``);
one stored before that check is left out of the union, and its child's ``Source`` names it in
``bad_parts``. Staff read only the cells, closures and sources within their unit (``within``).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from sync import reference as ref
from sync import units as unitlib
from sync.errors import BadRequest
from sync.schema import SPECIAL_GROUPS
from sync.store import Store, chunks

from . import config

#: Resident groups the residents part counts, and the row for all residents.
GROUPS = (*SPECIAL_GROUPS, "合计")
RESOLVED = ("已解决", "已关闭")
#: Offset of China time from UTC, for months and days.
CST_MS = 8 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
#: The parts a closed month freezes.
MONTHLY = ("needs", "services", "resolved")
SECTIONS = (*MONTHLY, "residents", "devices", "tasks")
#: Sections sent only to a caller that names them in ``with`` (see the module's docstring).
OPTIONAL = ("tasks",)
#: Sections whose cells are suppressed under the threshold.
SUPPRESSED = ("needs", "services", "residents")
#: Each section's cells: how many key fields (the village first) and how many values.
SHAPES = {"needs": (3, 1), "services": (2, 3), "resolved": (2, 1), "residents": (2, 1), "devices": (1, 3),
          "tasks": (2, 2)}
#: A month as typed: 2026-09, or 2026-9 (full-width digits too).
_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
#: A monthly part's month: a service with no time counts in 0000-00.
_PART_MONTH = re.compile(r"\d{4}-\d{2}")


class Cell(msgspec.Struct, array_like=True, frozen=True):
    "One cell: its key (village first) and its values; values are null when the cell was suppressed"

    k: list[str]
    v: list[int | None]


class CellDiff(msgspec.Struct, array_like=True):
    "A cell of a closed month that changed: null ``before`` is new, null ``after`` is gone"

    k: list[str]
    before: list[int | None] | None
    after: list[int | None] | None


class Closure(msgspec.Struct, kw_only=True):
    "A township closed this month's part; ``revision`` counts the versions published since, 0 for none"

    unit: str
    month: str
    closed_at: int
    closed_by: str
    frozen_hash: str
    revision: int = 0
    diff: list[CellDiff] = []


class Part(msgspec.Struct, kw_only=True):
    "One section of a snapshot (for monthly sections, one month) and its content hash"

    name: str
    hash: str
    cells: list[Cell]
    closures: list[Closure] = []


class PartHash(msgspec.Struct, array_like=True):
    name: str
    hash: str


class Source(msgspec.Struct, kw_only=True):
    """Where a roll-up's figures come from: one node below, the watermark of its last snapshot, when that
    was taken, when it was last pulled, the last error, if the last attempt failed, and the parts held
    from it that its figures leave out, being malformed (stored by a version that did not check them).
    For a township, ``suppress_below`` is the small-cell threshold its last snapshot was published with
    (None: not known, e.g. pulled by an older version)"""

    unit: str
    tier: str
    watermark: int = 0
    taken_at: int = 0
    pulled_at: int = 0
    last_error: str = ""
    bad_parts: list[str] = []
    suppress_below: int | None = None


class Snapshot(msgspec.Struct, kw_only=True):
    """A node's aggregates. ``manifest`` names every part and its hash; ``parts`` holds only those the
    caller did not say it has. ``watermark`` is a township's op sequence; for a county or city, the sum of
    its children's (it grows as theirs do). ``suppress_below`` is the node's own setting: only a
    township's applies to its cells. Times are Unix seconds."""

    unit: str
    tier: str
    watermark: int
    taken_at: int
    hash: str
    suppress_below: int
    manifest: list[PartHash]
    parts: list[Part]
    sources: list[Source] = []


_enc = msgspec.msgpack.Encoder()
_json_decode = msgspec.json.decode
_part_dec = msgspec.msgpack.Decoder(Part)
_cells_dec = msgspec.msgpack.Decoder(list[Cell])


def encode_part(part: Part) -> bytes:
    return _enc.encode(part)


def decode_part(blob: bytes) -> Part:
    return _part_dec.decode(blob)


def content_hash(cells: list[Cell], closures: Iterable[Closure] = ()) -> str:
    "64 bits of BLAKE2b over the cells (sorted) and closures: enough to notice a change"
    body = _enc.encode([sorted(cells, key=lambda c: c.k), sorted(closures, key=lambda c: (c.unit, c.month))])
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def snapshot_hash(manifest: Iterable[PartHash]) -> str:
    return hashlib.blake2b(_enc.encode(sorted((p.name, p.hash) for p in manifest)), digest_size=8).hexdigest()


def month_of_ms(ms: int) -> str:
    return _month_of_day((ms + CST_MS) // DAY_MS)


@functools.lru_cache(maxsize=4096)
def _month_of_day(day: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(day * 86400))


def section_of(name: str) -> str | None:
    "The section of a part's name (``needs/2026-10``: needs); None for a name no part has"
    section, slash, month = name.partition("/")
    if section in MONTHLY:
        return section if slash and _PART_MONTH.fullmatch(month) else None
    return section if section in SECTIONS and not slash else None


def month_arg(month: str) -> str:
    "A month as typed, as YYYY-MM (2026-9 is 2026-09); refused (``invalid_month``) if it is no month"
    m = _MONTH.fullmatch(month.strip())
    if m is None or not 1 <= int(m[2]) <= 12:
        raise BadRequest(f"month {month!r} is not YYYY-MM, e.g. 2026-10", code="invalid_month")
    return f"{int(m[1]):04d}-{int(m[2]):02d}"


# -- a township's figures ------------------------------------------------------------------------

_SQL = """
CREATE TABLE IF NOT EXISTS snapshot_closed (
    part TEXT PRIMARY KEY, month TEXT NOT NULL, hash TEXT NOT NULL, cells BLOB NOT NULL,
    closed_at INTEGER NOT NULL, closed_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_revisions (
    part TEXT NOT NULL, revision INTEGER NOT NULL, hash TEXT NOT NULL, seen_at INTEGER NOT NULL,
    PRIMARY KEY (part, revision));
"""

#: Each record's share of the figures, for every record of the range or (``{ids}``) for some.
_NEEDS_SQL = """
SELECT r.id, r.unit, coalesce(json_extract(r.data, '$.category'), ''),
       coalesce(json_extract(r.data, '$.status'), '待处理'),
       (SELECT min(o.hlc) FROM json_each(r.log) j JOIN ops o ON o.seq = j.value),
       coalesce((SELECT max(o.hlc) FROM json_each(r.log) j JOIN ops o ON o.seq = j.value
                 WHERE o.field = 'status' AND o.value = '"已解决"'),
                (SELECT min(o.hlc) FROM json_each(r.log) j JOIN ops o ON o.seq = j.value
                 WHERE o.field = 'status' AND o.value = '"已关闭"'))
FROM records r WHERE r.coll = 'need' AND r.deleted = 0 AND r.unit BETWEEN ? AND ?{ids}
"""
_SERVICES_SQL = """
SELECT r.id, r.unit, coalesce(json_extract(r.data, '$.service_type'), ''),
       coalesce(substr(json_extract(r.data, '$.served_at'), 1, 7), '0000-00'),
       coalesce(json_extract(r.data, '$.minutes'), 0), coalesce(json_extract(r.data, '$.people_served'), 1)
FROM records r WHERE r.coll = 'service' AND r.deleted = 0 AND r.unit BETWEEN ? AND ?{ids}
"""
_RESIDENTS_SQL = """
SELECT r.id, r.unit, (SELECT json_group_array(value) FROM json_each(r.data, '$.groups')) FROM records r
WHERE r.coll = 'person' AND r.deleted = 0 AND r.unit BETWEEN ? AND ?{ids}
"""
_DEVICES_SQL = """
SELECT unit, count(*), sum(last_sync >= ?), sum(last_sync >= ?) FROM devices
WHERE tier = 'village' AND revoked = 0 AND unit BETWEEN ? AND ? GROUP BY unit
"""


def _suppress(cells: list[Cell], below: int) -> list[Cell]:
    return [Cell(c.k, [None] * len(c.v)) if c.v and c.v[0] is not None and 0 < c.v[0] < below else c
            for c in cells]


class _Tally:
    """A township's exact figures, kept up to date: it remembers what each record adds, and each
    ``update`` reads again only the records written since the last (those of the ops past its
    watermark), so the figures after a few edits cost in proportion to them, not to the township.

    Each distinct cell gets a number; what a record adds is a flat tuple of (cell, a, b) triples: it
    counts 1 in the cell, plus minutes ``a`` and people served ``b`` for a service (0 otherwise).
    Records that add the same share hold one tuple: about 180 bytes a record."""

    def __init__(self, store: Store, unit: str) -> None:
        self.store = store
        self.range = unitlib.descendant_range(unit)
        self._reset()

    def _reset(self) -> None:
        self.seq = -1  # the op sequence the figures stand at; -1: nothing read yet
        self.shares: dict[str, tuple[Any, ...]] = {}
        self.numbers: dict[tuple[str, tuple[str, ...]], int] = {}  # (part, key) -> cell number
        self.names: list[tuple[str, tuple[str, ...]]] = []  # cell number -> (part, key)
        self.totals: list[list[Any]] = []  # cell number -> [count, minutes, people served]

    def update(self) -> dict[str, list[Cell]]:
        "The figures now: every part's exact cells"
        with self.store.lock:
            top = self.store.max_seq()
            if top < self.seq:  # not the op log these figures were read from (a backup restored): start over
                self._reset()
            if self.seq < 0:
                self._read(None)
            elif top > self.seq:
                changed = [r for (r,) in self.store.conn.execute(
                    "SELECT DISTINCT record FROM ops WHERE seq > ? AND seq <= ?", (self.seq, top))]
                for rid in changed:  # a record now out of range, or deleted, counts nowhere
                    self._count(self.shares.pop(rid, ()), -1)
                for chunk in chunks(changed):
                    self._read(chunk)
            self.seq = top
        out: dict[str, list[Cell]] = defaultdict(list)
        for (name, key), (n, minutes, served) in zip(self.names, self.totals):
            if n:
                out[name].append(Cell(list(key), [n, int(minutes), int(served)] if name.startswith("services/")
                                      else [n]))
        out.setdefault("residents", [])
        return dict(out)

    def _read(self, ids: list[str] | None) -> None:
        "Count what these records (every one in range, for None) add to the figures now"
        lo, hi = self.range
        conn = self.store.conn
        chunk = ids or []
        sql = {"ids": f" AND r.id IN ({','.join('?' * len(chunk))})" if ids is not None else ""}
        shares: dict[str, tuple[Any, ...]] = {}
        same: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # records that add the same share one tuple
        cell = self._cell
        for rid, village, cat, status, created, done in conn.execute(_NEEDS_SQL.format_map(sql), (lo, hi, *chunk)):
            created_ms = (created or 0) >> 16
            share: tuple[Any, ...] = (cell(f"needs/{month_of_ms(created_ms)}", (village, cat, status)), 0, 0)
            if status in RESOLVED and done is not None:
                done_ms = done >> 16
                days = max(0, (done_ms - created_ms) // DAY_MS)
                share += (cell(f"resolved/{month_of_ms(done_ms)}", (village, str(days))), 0, 0)
            shares[rid] = same.setdefault(share, share)
        for rid, village, kind, month, minutes, served in conn.execute(
                _SERVICES_SQL.format_map(sql), (lo, hi, *chunk)):
            share = (cell(f"services/{month}", (village, kind)), minutes, served)
            shares[rid] = same.setdefault(share, share)
        by_groups: dict[tuple[str, str], tuple[Any, ...]] = {}
        for rid, village, groups in conn.execute(_RESIDENTS_SQL.format_map(sql), (lo, hi, *chunk)):
            found = by_groups.get((village, groups))  # a JSON array
            if found is None:
                counted = [g for g in _json_decode(groups) if g in GROUPS]
                found = by_groups[(village, groups)] = tuple(
                    x for g in [*counted, "合计"] for x in (cell("residents", (village, g)), 0, 0))
            shares[rid] = found
        for share, times in Counter(shares.values()).items():
            self._count(share, times)
        self.shares.update(shares)

    def _cell(self, name: str, key: tuple[str, ...]) -> int:
        n = self.numbers.get((name, key))
        if n is None:
            n = self.numbers[(name, key)] = len(self.names)
            self.names.append((name, key))
            self.totals.append([0, 0, 0])
        return n

    def _count(self, share: Sequence[Any], times: int) -> None:
        "Count a share ``times`` times over (-1: take it away)"
        totals = self.totals
        for i in range(0, len(share), 3):
            t = totals[share[i]]
            t[0] += times
            t[1] += times * share[i + 1]
            t[2] += times * share[i + 2]


def figures(store: Store, unit: str) -> dict[str, list[Cell]]:
    """Every part's exact cells for the villages under ``unit``, from the store's current records"""
    return _Tally(store, unit).update()


def device_cells(store: Store, unit: str, now: float) -> list[Cell]:
    lo, hi = unitlib.descendant_range(unit)
    week, month = int(now) - 7 * 86400, int(now) - 30 * 86400
    with store.lock:
        rows = store.conn.execute(_DEVICES_SQL, (week, month, lo, hi)).fetchall()
    return [Cell([u], [n, int(w or 0), int(m or 0)]) for u, n, w, m in rows]


def live_cells(store: Store, unit: str, now: float) -> dict[str, list[Cell]]:
    """The parts counted afresh for every snapshot, as they follow what writes no op: devices (enrolments,
    revocations, syncs) and tasks (their villages are the unit tree's and the enrolled ones); tasks only
    while one is set (none set above: nothing to send)"""
    cells = {"devices": device_cells(store, unit, now)}
    tasks = task_cells(store, unit)
    if tasks:
        cells["tasks"] = tasks
    return cells


def enrolled_villages(store: Store, lo: str, hi: str) -> set[str]:
    "The villages from ``lo`` to ``hi`` with a village tablet enrolled and not revoked; under the store's lock"
    return {u for (u,) in store.conn.execute(
        "SELECT DISTINCT unit FROM devices WHERE tier = 'village' AND NOT revoked AND unit BETWEEN ? AND ?", (lo, hi))}


def task_cells(store: Store, unit: str) -> list[Cell]:
    """The township ``unit``'s progress on each task set by it or above it: a cell per task and village
    (those of its unit tree, any with a tablet enrolled, and any that reported: the villages its 任务 page
    shows), [1, 0] 进行中, [0, 1] 已完成, [0, 0] neither. Its own
    tasks' cells are for its own roll-up (``rollup_web.set_here_or_above``); a county or city lists only
    the tasks set at or above it, so it passes over them"""
    mine = {unit, *unitlib.ancestors(unit)}
    lo, hi = unitlib.descendant_range(unit)
    with store.lock:
        tasks = [t["id"] for t in ref.tasks(store) if t.get("unit") in mine]
        reports = ref.task_reports(store, units=(lo, hi))
        villages = {v.code for v in unitlib.villages_under(store.db, unit)} if "units" in store.db.table_names() \
            else set()
        villages |= enrolled_villages(store, lo, hi)
    villages.update(v for _, v in reports)
    return [Cell([v, t], [int(status == "进行中"), int(status == "已完成")])
            for v in sorted(villages) for t in sorted(tasks)
            for status in [reports.get((t, v), {}).get("status")]]


def _diff(before: list[Cell], after: list[Cell]) -> list[CellDiff]:
    old = {tuple(c.k): c.v for c in before}
    new = {tuple(c.k): c.v for c in after}
    return [CellDiff(list(k), old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)]


def ensure_tables(store: Store) -> None:
    with store.lock:
        store.conn.executescript(_SQL)


def close_month(store: Store, unit: str, month: str, *, by: str, now: float | None = None) -> list[str]:
    """Close ``month``: freeze its figures as they are now (exact; they are published, like the current
    ones, with the node's small-cell setting). Closing it again approves the current figures (the revision
    count starts over). Returns the parts frozen."""
    month = month_arg(month)
    ensure_tables(store)
    cells = figures(store, unit)
    at = int(now if now is not None else time.time())
    names = [f"{s}/{month}" for s in MONTHLY]
    with store.transaction() as c:
        for name in names:
            exact = sorted(cells.get(name, []), key=lambda cell: cell.k)
            c.execute("INSERT OR REPLACE INTO snapshot_closed VALUES (?,?,?,?,?,?)",
                      (name, month, content_hash(exact), _enc.encode(exact), at, by))
            c.execute("DELETE FROM snapshot_revisions WHERE part = ?", (name,))
    return names


def closed_months(store: Store) -> list[tuple[str, int, str]]:
    "(month, closed at, closed by) of every closed month (used only by tests)"
    ensure_tables(store)
    with store.lock:
        return [(m, a, b) for m, a, b in store.conn.execute(
            "SELECT month, max(closed_at), closed_by FROM snapshot_closed GROUP BY month ORDER BY month")]


def _published(name: str, cells: list[Cell], below: int) -> list[Cell]:
    section = name.split("/")[0]
    cells = sorted(cells, key=lambda c: c.k)
    return _suppress(cells, below) if below > 0 and section in SUPPRESSED else cells


def township_parts(store: Store, unit: str, *, suppress_below: int | None = None,
                   now: float | None = None, exact: dict[str, list[Cell]] | None = None) -> dict[str, Part]:
    """A township's parts as it publishes them: suppressed, with the closures of closed months.
    ``exact``: its figures (``figures``), when the caller keeps them up to date itself."""
    below = config.SUPPRESS_BELOW if suppress_below is None else suppress_below
    at = now if now is not None else time.time()
    ensure_tables(store)
    cells = dict(exact) if exact is not None else figures(store, unit)
    cells.update(live_cells(store, unit, at))
    with store.lock:
        closed = {row[0]: row for row in store.conn.execute(
            "SELECT part, month, hash, cells, closed_at, closed_by FROM snapshot_closed")}
    parts: dict[str, Part] = {}
    for name in sorted(cells.keys() | closed.keys()):
        published = _published(name, cells.get(name, []), below)
        closures: list[Closure] = []
        if name in closed:
            _, month, _exact_hash, frozen_blob, closed_at, closed_by = closed[name]
            frozen = _published(name, _cells_dec.decode(frozen_blob), below)
            frozen_hash, h = content_hash(frozen), content_hash(published)
            revision, diff = 0, []
            if h != frozen_hash:
                revision = _revision(store, name, h, int(at))
                diff = _diff(frozen, published)
            closures.append(Closure(unit=unit, month=month, closed_at=closed_at, closed_by=closed_by,
                                    frozen_hash=frozen_hash, revision=revision, diff=diff))
        parts[name] = Part(name=name, hash=content_hash(published, closures), cells=published, closures=closures)
    return parts


def _revision(store: Store, name: str, h: str, at: int) -> int:
    "The revision number of a closed part's content ``h``: a new one the first time it is seen"
    with store.transaction() as c:
        row = c.execute("SELECT revision FROM snapshot_revisions WHERE part = ? AND hash = ?", (name, h)).fetchone()
        if row:
            return int(row[0])
        (top,) = c.execute("SELECT coalesce(max(revision), 0) FROM snapshot_revisions WHERE part = ?",
                           (name,)).fetchone()
        c.execute("INSERT INTO snapshot_revisions VALUES (?,?,?,?)", (name, top + 1, h, at))
        return int(top) + 1


# -- a county's or city's: the union of its children's ------------------------------------------

def merge_parts(children: Iterable[Mapping[str, Part]]) -> dict[str, Part]:
    "Parts of several children as one set: cells with the same key add up, closures are kept side by side"
    cells: dict[str, dict[tuple[str, ...], list[int | None]]] = defaultdict(dict)
    closures: dict[str, list[Closure]] = defaultdict(list)
    for parts in children:
        for name, part in parts.items():
            into = cells[name]
            for c in part.cells:
                key = tuple(c.k)
                have = into.get(key)
                into[key] = list(c.v) if have is None else _add(have, c.v)
            closures[name].extend(part.closures)
    out: dict[str, Part] = {}
    for name in sorted(cells):
        cs = [Cell(list(k), v) for k, v in sorted(cells[name].items())]
        cl = sorted(closures[name], key=lambda c: (c.unit, c.month))
        out[name] = Part(name=name, hash=content_hash(cs, cl), cells=cs, closures=cl)
    return out


def _add(a: list[int | None], b: list[int | None]) -> list[int | None]:
    return [None if x is None or y is None else x + y for x, y in zip(a, b)]


def within(parts: Mapping[str, Part], sources: Iterable[Source], scope: tuple[str, str]
           ) -> tuple[dict[str, Part], list[Source]]:
    """Only what lies within ``scope`` (the inclusive bounds of a unit's codes, ``Staff.scope``): the cells
    of its villages, the closures of the units above or under it with their diffs cut to it, its sources.
    Parts left with nothing are dropped."""
    lo, hi = scope

    def overlaps(unit: str) -> bool:
        u_lo, u_hi = unitlib.descendant_range(unit)
        return u_lo <= hi and lo <= u_hi

    out: dict[str, Part] = {}
    for name, part in parts.items():
        cells = [c for c in part.cells if lo <= c.k[0] <= hi]
        closures = [msgspec.structs.replace(cl, diff=[d for d in cl.diff if lo <= d.k[0] <= hi])
                    for cl in part.closures if overlaps(cl.unit)]
        if cells or closures:
            out[name] = Part(name=name, hash=content_hash(cells, closures), cells=cells, closures=closures)
    return out, [s for s in sources if lo <= s.unit <= hi]


# -- answering GET /api/snapshot -----------------------------------------------------------------

def parse_with(text: str | None) -> set[str]:
    "The ``with`` query parameter: the optional sections the caller takes, comma-separated (others ignored)"
    return {s for s in (text or "").split(",") if s in OPTIONAL}


def parse_have(text: str | None) -> dict[str, str]:
    "The ``have`` query parameter: ``name:hash`` pairs, comma-separated"
    out: dict[str, str] = {}
    if not text:
        return out
    items = text.split(",")
    if len(items) > 10_000:
        raise BadRequest("more than 10,000 parts in `have`", code="invalid_have")
    for item in items:
        name, sep, h = item.partition(":")
        if not sep or not name or len(h) != 16 or any(ch not in "0123456789abcdef" for ch in h):
            raise BadRequest(f"`have` holds {item[:60]!r}; send name:hash pairs, e.g. needs/2026-10:"
                             "0123456789abcdef, separated by commas", code="invalid_have")
        out[name] = h
    return out


class Snapshotter:
    """A node's snapshot, answered from a cache while nothing changed: a township recomputes when its op
    sequence or its closed months change (devices and tasks are counted afresh each time, ``live_cells``);
    a county or city when it has pulled something new. Thread-safe."""

    def __init__(self, store: Store, unit: str, *, suppress_below: int | None = None) -> None:
        self.store = store
        self.unit = unitlib.normalize_code(unit)
        self.tier = unitlib.tier_of(self.unit)
        self.suppress_below = config.SUPPRESS_BELOW if suppress_below is None else suppress_below
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._parts: dict[str, Part] = {}
        self._bad: dict[str, dict[str, str]] = {}  # a county's or city's: malformed stored parts, by child
        self._watermark = 0
        self._tally = _Tally(store, self.unit) if self.tier == "township" else None
        ensure_tables(store)

    def _state(self) -> tuple[Any, ...]:
        with self.store.lock:
            if self.tier == "township":
                closed = self.store.conn.execute(
                    "SELECT count(*), coalesce(max(closed_at), 0) FROM snapshot_closed").fetchone()
                return ("t", self.store.max_seq(), tuple(closed))
            return ("u", self.store.meta("child_parts_version", "0"))

    def parts(self, now: float | None = None, *, scope: tuple[str, str] | None = None
              ) -> tuple[dict[str, Part], int, list[Source]]:
        """All of this node's parts now, its watermark and its sources; with ``scope`` (a staff member's),
        only what lies within it (``within``)"""
        at = now if now is not None else time.time()
        with self._lock:
            key = self._state()
            if key != self._key:
                if self._tally is not None:
                    exact = self._tally.update()
                    self._parts = township_parts(self.store, self.unit, suppress_below=self.suppress_below, now=at,
                                                 exact=exact)
                    self._watermark = self._tally.seq
                else:
                    from .links import stored_parts

                    children, self._bad = stored_parts(self.store)
                    self._parts = merge_parts(children.values())
                self._key = key
            parts = dict(self._parts)
            bad = self._bad
            watermark = self._watermark
        found: list[Source] = []
        if self.tier == "township":
            parts.pop("tasks", None)
            for name, cells in live_cells(self.store, self.unit, at).items():
                parts[name] = Part(name=name, hash=content_hash(cells), cells=cells)
        else:
            from .links import sources

            found = sources(self.store, bad)
        if scope is not None and not (scope[0] <= self.unit <= scope[1]):  # not the whole node: cut to scope
            parts, found = within(parts, found, scope)
        if self.tier != "township":
            watermark = sum(s.watermark for s in found if unitlib.parent_of(s.unit) == self.unit)
        return parts, watermark, found

    def snapshot(self, have: Mapping[str, str] | None = None, now: float | None = None, *,
                 scope: tuple[str, str] | None = None, sections: Collection[str] = ()) -> Snapshot:
        """The snapshot, with only the parts whose hash differs from ``have``; with ``scope``, cut to it; the
        ``OPTIONAL`` sections only if named in ``sections``"""
        at = now if now is not None else time.time()
        parts, watermark, sources = self.parts(at, scope=scope)
        parts = {n: p for n, p in parts.items() if section_of(n) not in OPTIONAL or section_of(n) in sections}
        have = have or {}
        manifest = [PartHash(p.name, p.hash) for p in parts.values()]
        return Snapshot(
            unit=self.unit, tier=self.tier, watermark=watermark, taken_at=int(at),
            hash=snapshot_hash(manifest), suppress_below=self.suppress_below, manifest=manifest,
            parts=[p for p in parts.values() if have.get(p.name) != p.hash], sources=sources)
