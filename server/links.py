"""An upper node's links to the nodes directly below it, and the snapshot pull over them.

A county links to each of its townships, a city to each of its counties: the child's unit, its URL and a
device token the child issued for this node (a device whose tier and unit are this node's, made on the
child with ``cunsync device add --unit <this node's unit> --tier <this node's tier>``). The child checks,
from the token alone, that the caller is above it.

``pull(store, unit, link)`` sends the child the hash of every part it holds and stores what comes back:
only the parts that changed, in one transaction, with the child's watermark and when its snapshot was
taken. A pull that fails keeps the last snapshot and records the error, so pages show the last figures
and their age. A part whose shape is wrong is refused (``_check``); one stored before that check existed is
left out where the parts are read (``stored_parts``), its child marked on the roll-up, and the next pull
asks the child for it again. Tables:

    links         one row per child: URL, token, last attempt, last successful pull, last error, the
                  watermark, time and hash of its last snapshot, bytes and parts the last pull moved, and
                  a township's small-cell threshold (``Snapshot.suppress_below``)
    child_parts   the parts last pulled from each child (MessagePack ``Part``), by child and part name
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from sync import checks
from sync import units as unitlib
from sync.errors import BadRequest, NotFound, OutOfScope
from sync.schema import RECORD_ID
from sync.store import Store
from sync.wire import MSGPACK, decode

from .snapshots import GROUPS, OPTIONAL, SHAPES, Part, Snapshot, Source, decode_part, encode_part, section_of

_RECORD_ID = re.compile(RECORD_ID)

_SQL = """
CREATE TABLE IF NOT EXISTS links (
    unit TEXT PRIMARY KEY, url TEXT NOT NULL, token TEXT NOT NULL, added_at INTEGER NOT NULL,
    last_attempt INTEGER NOT NULL DEFAULT 0, last_pulled INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', watermark INTEGER NOT NULL DEFAULT 0,
    taken_at INTEGER NOT NULL DEFAULT 0, hash TEXT NOT NULL DEFAULT '', sources BLOB,
    last_bytes INTEGER NOT NULL DEFAULT 0, last_parts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS child_parts (
    unit TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL, body BLOB NOT NULL,
    pulled_at INTEGER NOT NULL, PRIMARY KEY (unit, name));
"""
_COLUMNS = ("unit, url, token, added_at, last_attempt, last_pulled, last_error, watermark, taken_at, hash,"
            " last_bytes, last_parts")
log = logging.getLogger("cunsync.links")
_sources_enc = msgspec.msgpack.Encoder().encode
_sources_dec = msgspec.msgpack.Decoder(list[Source]).decode
#: Seconds a pull may take before it counts as failed.
TIMEOUT = 30.0


@dataclass(frozen=True)
class Link:
    unit: str
    url: str
    token: str
    added_at: int
    last_attempt: int = 0
    last_pulled: int = 0
    last_error: str = ""
    watermark: int = 0
    taken_at: int = 0
    hash: str = ""
    last_bytes: int = 0
    last_parts: int = 0

    def age(self, now: float | None = None) -> int | None:
        "Seconds since the child's last snapshot that this node holds was taken (None: never pulled)"
        if not self.taken_at:
            return None
        return max(0, int((now if now is not None else time.time()) - self.taken_at))


@dataclass(frozen=True)
class PullResult:
    unit: str
    ok: bool
    #: bytes received on the wire (compressed)
    bytes: int = 0
    #: parts received (changed since the last pull) and parts the child has in all
    changed: int = 0
    parts: int = 0
    removed: int = 0
    seconds: float = 0.0
    error: str = ""


def ensure_tables(store: Store) -> None:
    with store.lock:
        store.conn.executescript(_SQL)
        if "suppress_below" not in {row[1] for row in store.conn.execute("PRAGMA table_info(links)")}:
            # a township's small-cell threshold, from its last snapshot (NULL: not known)
            store.conn.execute("ALTER TABLE links ADD COLUMN suppress_below INTEGER")


def add_link(store: Store, node_unit: str, unit: str, url: str, token: str) -> Link:
    """Link this county or city node to a node directly below it (a township or a county); adding a link
    again replaces its URL and token"""
    ensure_tables(store)
    code = unitlib.normalize_code(unit)
    if (tier := unitlib.tier_of(node_unit)) not in ("county", "city"):
        raise BadRequest(f"this is a {tier} node ({node_unit}): no node runs below it, so it has no links; its "
                         "villages' tablets sync to it (`cunsync enrol create`). Links go from a county to "
                         "each of its townships and from a city to each of its counties: add them there",
                         code="no_nodes_below", details={"unit": code, "node": node_unit})
    if unitlib.parent_of(code) != node_unit:
        raise OutOfScope(f"unit {code} is not directly under this node's unit {node_unit}; link each "
                         "node to the nodes one tier below it", details={"unit": code, "node": node_unit})
    url = checks.node_url(url)
    if not token.strip():
        raise BadRequest("a link needs the token the child node issued", code="invalid_token")
    with store.transaction() as c:
        c.execute("INSERT INTO links (unit, url, token, added_at) VALUES (?,?,?,?) ON CONFLICT (unit)"
                  " DO UPDATE SET url = excluded.url, token = excluded.token, last_error = ''",
                  (code, url, token.strip(), int(time.time())))
    found = get_link(store, code)
    assert found is not None
    return found


def remove_link(store: Store, unit: str) -> None:
    "Forget a child: its link and the parts pulled from it"
    ensure_tables(store)
    code = unitlib.normalize_code(unit)
    with store.transaction() as c:
        if c.execute("DELETE FROM links WHERE unit = ?", (code,)).rowcount == 0:
            raise NotFound(f"no link to {code}")
        c.execute("DELETE FROM child_parts WHERE unit = ?", (code,))
        _bump(c)


def links(store: Store) -> list[Link]:
    ensure_tables(store)
    with store.lock:
        return [Link(*row) for row in store.conn.execute(f"SELECT {_COLUMNS} FROM links ORDER BY unit")]


def get_link(store: Store, unit: str) -> Link | None:
    with store.lock:
        row = store.conn.execute(f"SELECT {_COLUMNS} FROM links WHERE unit = ?", (unit,)).fetchone()
    return Link(*row) if row else None


def _bump(c: Any) -> None:
    "Tell this node's Snapshotter (in whichever process) that the pulled parts changed"
    c.execute("INSERT INTO meta (key, value) VALUES ('child_parts_version', '1') ON CONFLICT (key)"
              " DO UPDATE SET value = CAST(value AS INTEGER) + 1")


def held(store: Store, unit: str) -> dict[str, str]:
    "The parts this node holds from a child: name -> hash"
    with store.lock:
        return dict(store.conn.execute("SELECT name, hash FROM child_parts WHERE unit = ?", (unit,)).fetchall())


def stored_parts(store: Store, unit: str | None = None
                 ) -> tuple[dict[str, dict[str, Part]], dict[str, dict[str, str]]]:
    """The parts this node holds from its children (or from ``unit`` alone), by child; and, by child, the
    parts left out because they do not have their section's shape, with what is wrong. A pull refuses such
    a part (``_check``), but a version before that check may have stored one, and it stays until it
    changes on the child: ``pull`` asks for it again."""
    ensure_tables(store)
    children: dict[str, dict[str, Part]] = {}
    bad: dict[str, dict[str, str]] = {}
    where, args = ("WHERE unit = ?", (unit,)) if unit is not None else ("", ())
    with store.lock:
        rows = store.conn.execute(f"SELECT unit, name, body FROM child_parts {where} ORDER BY unit, name",
                                  args).fetchall()
    checkers: dict[str, Callable[[str], bool]] = {}
    for child, name, blob in rows:
        try:
            part = decode_part(blob)
            if part.name != name:
                raise BadRequest(f"part {name!r} of {child} is stored under another name, {part.name[:60]!r}",
                                 code="bad_part")
            _check_part(part, child, checkers.setdefault(child, _under(child)))
        except (msgspec.MsgspecError, BadRequest) as e:
            why = str(e) if isinstance(e, BadRequest) else f"part {name[:60]!r} of {child} does not decode: {e}"
            bad.setdefault(child, {})[name] = why
            log.warning("a stored part is left out of the roll-up until the next pull sends it again: %s", why)
            continue
        children.setdefault(child, {})[name] = part
    return children, bad


def sources(store: Store, bad: Mapping[str, Iterable[str]] | None = None) -> list[Source]:
    """The sources of this node's figures: each child, with the names of its ``bad`` parts (those
    ``stored_parts`` left out), then the nodes below them as the children reported them"""
    ensure_tables(store)
    with store.lock:
        rows = store.conn.execute("SELECT unit, watermark, taken_at, last_pulled, last_error, sources, suppress_below"
                                  " FROM links ORDER BY unit").fetchall()
    direct: list[Source] = []
    nested: list[Source] = []
    for unit, watermark, taken_at, pulled, error, blob, below in rows:
        direct.append(Source(unit=unit, tier=unitlib.tier_of(unit), watermark=watermark, taken_at=taken_at,
                             pulled_at=pulled, last_error=error, bad_parts=sorted((bad or {}).get(unit, ())),
                             suppress_below=below))
        if blob:
            nested.extend(_sources_dec(blob))
    return direct + nested


def _check(snap: Snapshot, link: Link) -> None:
    """A child answers for its own unit only: every cell, closure and source lies under it; and every
    part has the shape ``server.snapshots`` gives its section, so one bad cell never breaks a roll-up"""
    if snap.unit != link.unit:
        raise BadRequest(f"the node at {link.url} is {snap.unit}, not {link.unit}; check the link's URL",
                         code="wrong_node")
    lo, hi = unitlib.descendant_range(link.unit)
    under = _under(link.unit)
    for part in snap.parts:
        _check_part(part, link.unit, under)
    for src in snap.sources:
        if not lo <= src.unit <= hi:
            raise BadRequest(f"{link.unit} reports a source {src.unit} outside it", code="out_of_scope")
        if not under(src.unit):
            raise BadRequest(f"{link.unit} reports a source {src.unit!r}, which is not a unit's code",
                             code="bad_source", details={"unit": link.unit, "source": src.unit})


def _under(unit: str) -> Callable[[str], bool]:
    "A check that a code is a unit's 12-digit code under ``unit`` (it remembers the codes found good)"
    lo, hi = unitlib.descendant_range(unit)
    good: set[str] = set()

    def under(code: str) -> bool:
        if code not in good:
            try:
                if unitlib.normalize_code(code) != code or not lo <= code <= hi:
                    return False
                unitlib.tier_of(code)
            except unitlib.UnitCodeError:
                return False
            good.add(code)
        return True

    return under


def _check_part(part: Part, unit: str, under: Callable[[str], bool]) -> None:
    """A part from the child ``unit`` has the shape ``server.snapshots`` gives its section, and its cells and
    closures lie under ``unit`` (``under``, from ``_under(unit)``)"""
    lo, hi = unitlib.descendant_range(unit)
    section = section_of(part.name)
    if section is None:
        raise _bad_part(unit, part, "is no part a snapshot has (needs/YYYY-MM, services/YYYY-MM, "
                                    "resolved/YYYY-MM, residents, devices, tasks)")
    keys, values = SHAPES[section]
    for cell in part.cells:
        if not cell.k or not lo <= cell.k[0] <= hi:
            raise BadRequest(f"part {part.name} of {unit} has a cell for {cell.k[:1]}, outside it",
                             code="out_of_scope")
        if not under(cell.k[0]):
            raise _bad_part(unit, part, f"has a cell for {cell.k[0]!r}, which is not a unit's code")
        if len(cell.k) != keys or len(cell.v) != values:
            raise _bad_part(unit, part, f"has a cell {cell.k} -> {cell.v}; a {section} cell has {keys} "
                                        f"key fields and {values} values")
        if any(v is not None and v < 0 for v in cell.v):
            raise _bad_part(unit, part, f"has a cell {cell.k} -> {cell.v}; counts are 0 or more, or null")
        if section == "resolved" and not (cell.k[1].isascii() and cell.k[1].isdigit()):
            raise _bad_part(unit, part, f"has a cell {cell.k}; its days to resolve must be a whole number")
        if section == "tasks" and not _RECORD_ID.fullmatch(cell.k[1]):
            raise _bad_part(unit, part, f"has a cell {cell.k}; its task must be a record id")
        if section == "residents" and cell.k[1] not in GROUPS:
            raise _bad_part(unit, part, f"has a cell {cell.k}; its group must be one of {', '.join(GROUPS)}")
    for cl in part.closures:
        if not lo <= cl.unit <= hi:
            raise BadRequest(f"part {part.name} of {unit} carries a closure of {cl.unit}", code="out_of_scope")
        if not under(cl.unit) or not all(d.k and under(d.k[0]) for d in cl.diff):
            raise _bad_part(unit, part, f"carries a closure of {cl.unit} whose unit or changed cells are not "
                                        "units under it")


def _bad_part(unit: str, part: Part, what: str) -> BadRequest:
    return BadRequest(f"part {part.name[:60]!r} of {unit} {what}; the node below must send parts as "
                      "`server.snapshots` describes (is it running another version?)",
                      code="bad_part", details={"unit": unit, "part": part.name[:60]})


def fetch(link: Link, have: dict[str, str], *, client: httpx.Client | None = None) -> tuple[Snapshot, int]:
    """GET the child's snapshot, sending the parts held; returns it and the bytes received on the wire"""
    params = {"with": ",".join(OPTIONAL)}
    if have:
        params["have"] = ",".join(f"{n}:{h}" for n, h in sorted(have.items()))
    headers = {"Authorization": f"Bearer {link.token}", "Accept": MSGPACK, "Accept-Encoding": "gzip"}
    own = client is None
    c = client or httpx.Client(timeout=TIMEOUT)
    try:
        r = c.get(link.url + "/api/snapshot", params=params, headers=headers)
        wire = r.num_bytes_downloaded
        if r.status_code != 200:
            try:
                err = r.json()["error"]
                what = f"{r.status_code} {err['code']}: {err['message']}"
            except (ValueError, KeyError, TypeError):
                what = f"HTTP {r.status_code}"
            raise BadRequest(f"{link.url} refused the pull: {what}", code="pull_refused")
        return decode(r.content, Snapshot, "msgpack"), wire
    finally:
        if own:
            c.close()


def pull(store: Store, link: Link, *, client: httpx.Client | None = None) -> PullResult:
    """Pull one child's snapshot, only the parts that changed, and store it. Never raises for the
    child's faults: the result (and the link row) says what went wrong."""
    ensure_tables(store)
    t0 = time.perf_counter()
    now = int(time.time())
    stored = held(store, link.unit)
    _, bad = stored_parts(store, link.unit)
    have = {n: h for n, h in stored.items() if n not in bad.get(link.unit, {})}  # so the child sends those again
    try:
        snap, wire = fetch(link, have, client=client)
        _check(snap, link)
        names = {p.name: p.hash for p in snap.manifest}
        sent = {p.name: p for p in snap.parts}
        for name, h in names.items():
            if name not in sent and have.get(name) != h:
                raise BadRequest(f"{link.unit} left out part {name}, which changed", code="incomplete")
    except (httpx.HTTPError, httpx.InvalidURL, BadRequest, msgspec.MsgspecError) as e:
        error = f"{e.code}: {e}" if isinstance(e, BadRequest) else f"{type(e).__name__}: {e}"
        with store.transaction() as c:
            c.execute("UPDATE links SET last_attempt = ?, last_error = ? WHERE unit = ?",
                      (now, error[:500], link.unit))
        return PullResult(link.unit, False, seconds=time.perf_counter() - t0, error=error)
    gone = [n for n in stored if n not in names]
    changed = [p for p in snap.parts if have.get(p.name) != p.hash]
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO child_parts (unit, name, hash, body, pulled_at) VALUES (?,?,?,?,?)",
                      [(link.unit, p.name, p.hash, encode_part(p), now) for p in changed])
        c.executemany("DELETE FROM child_parts WHERE unit = ? AND name = ?", [(link.unit, n) for n in gone])
        c.execute("UPDATE links SET last_attempt = ?, last_pulled = ?, last_error = '', watermark = ?,"
                  " taken_at = ?, hash = ?, sources = ?, last_bytes = ?, last_parts = ?, suppress_below = ?"
                  " WHERE unit = ?",
                  (now, now, snap.watermark, snap.taken_at, snap.hash, _sources_enc(snap.sources), wire,
                   len(changed), snap.suppress_below if snap.tier == "township" else None, link.unit))
        if changed or gone:
            _bump(c)
    return PullResult(link.unit, True, bytes=wire, changed=len(changed), parts=len(names), removed=len(gone),
                      seconds=time.perf_counter() - t0)
