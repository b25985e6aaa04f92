"""The SQLite store every tablet and node uses: the op log, the live ops of every record, materialised
records, open conflicts, per-site high-water marks and a local sequence for pull cursors.

Tables (sqlite-utils can open any of them):

    ops         every op ever accepted, in arrival order; ``seq`` is the local sequence for cursors
    sites       the compact local numbering of devices, with each one's high-water marks
    authors     (user, unit, tier) triples ops were written by
    superseded  every op id some op has named in ``pred`` (scoped to that op's record)
    records     the current record: winning values as JSON, its live ops, deleted, unit, conflicts
    conflicts   the open conflicts, one row per (record, field)
    moves       each change of a record's unit, for scope changes on tablets

The merge rule lives here, in ``materialize``: a register's live ops are those no op of the record names
in ``pred``; the visible value is the winner by (tier rank, hlc, device, counter); a review field whose
live ops hold different values is an open conflict; a set field holds the elements of its live adds; a
record is deleted when its ``_deleted`` register says so, and a delete that did not see a concurrent edit
of another field leaves a conflict on ``_deleted``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, cast

import msgspec
import sqlite_utils

from .ops import Op
from .schema import SCHEMA, Schema
from .wire import OpBatch, pack_rows
from .types import ADD, DELETED, REMOVE, SET, SURVIVES_DELETE, TIER_NAME, OpId

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode
_CHUNK = 500


class Entry(msgspec.Struct, array_like=True, gc=False):
    "A live op as a record's state keeps it"

    device: str
    counter: int
    hlc: int
    tier: int
    kind: int
    value: Any
    seq: int

    def key(self) -> tuple[int, int, str, int]:
        "The winner order: tier rank, then clock, then op id"
        return (self.tier, self.hlc, self.device, self.counter)


State = dict[str, list[Entry]]
_state_encode = msgspec.msgpack.Encoder().encode
_state_decode = msgspec.msgpack.Decoder(State).decode
#: Decode a ``records.state`` blob: the record's live ops by field.
decode_state = _state_decode


@dataclass
class Materialized:
    data: dict[str, Any]
    deleted: bool
    unit: str | None
    conflicts: list[str]


def materialize(coll: str, state: State, schema: Schema = SCHEMA, unit_field: str = "unit") -> Materialized:
    "The visible record that a record's live ops make: the whole merge rule in one place"
    data: dict[str, Any] = {}
    conflicts: list[str] = []
    others_live = False
    c = schema.collections.get(coll)
    ufield = c.unit_field if c else unit_field
    for name, entries in state.items():
        if not entries:
            continue
        if name == DELETED:
            continue
        if name != ufield and name not in SURVIVES_DELETE:
            # a delete keeps the record's unit (so it stays in its village's scope) and any merge redirect
            others_live = True
        if len(entries) == 1:
            e = entries[0]
            if e.kind == SET:
                data[name] = e.value
            elif e.kind == ADD:
                data[name] = [e.value]
            continue
        regs = [e for e in entries if e.kind == SET]
        adds = [e for e in entries if e.kind == ADD]
        if regs:
            data[name] = max(regs, key=Entry.key).value
            if len(regs) > 1 and schema.needs_review(coll, name) and _distinct(regs):
                conflicts.append(name)
        elif adds:
            elems = {_json_encode(e.value): e.value for e in adds}
            data[name] = [elems[k] for k in sorted(elems)]
    deleted = False
    dels = state.get(DELETED)
    if dels:
        deleted = max(dels, key=Entry.key).value is True
        if (len(dels) > 1 and _distinct(dels)) or (deleted and others_live):
            conflicts.append(DELETED)
    unit = data.get(ufield)
    return Materialized(data, deleted, unit if isinstance(unit, str) else None, sorted(conflicts))


def _distinct(entries: list[Entry]) -> bool:
    first = _json_encode(entries[0].value)
    return any(_json_encode(e.value) != first for e in entries[1:])


@dataclass
class Record:
    id: str
    coll: str
    unit: str | None
    deleted: bool
    data: dict[str, Any]
    conflicts: list[str]
    seq: int


@dataclass
class Applied:
    "What one batch did"

    new: int = 0
    duplicates: int = 0
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    devices: dict[str, int] = dc_field(default_factory=dict)


@dataclass
class LiveOp:
    "One competing value of a field, with who wrote it"

    device: str
    counter: int
    hlc: int
    tier: str
    value: Any
    user: str
    unit: str
    seq: int


@dataclass
class Conflict:
    record: str
    coll: str
    unit: str | None
    field: str
    winner: Any
    candidates: list[LiveOp]


@dataclass
class Change:
    "One line of a record's history"

    seq: int
    device: str
    counter: int
    hlc: int
    user: str
    unit: str
    tier: str
    field: str
    kind: str
    old: list[Any]
    new: Any


@dataclass
class HighWater:
    device: str
    contiguous: int
    max_counter: int
    last_hlc: int

    @property
    def gaps(self) -> int:
        return self.max_counter - self.contiguous


_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sites (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL UNIQUE,
    contiguous INTEGER NOT NULL DEFAULT 0, max_counter INTEGER NOT NULL DEFAULT 0,
    last_hlc INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS authors (
    id INTEGER PRIMARY KEY, user TEXT NOT NULL, unit TEXT NOT NULL, tier INTEGER NOT NULL,
    UNIQUE (user, unit, tier));
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY, site INTEGER NOT NULL, counter INTEGER NOT NULL, hlc INTEGER NOT NULL,
    coll TEXT NOT NULL, record TEXT NOT NULL, field TEXT NOT NULL, kind INTEGER NOT NULL,
    value TEXT, pred TEXT, author INTEGER NOT NULL, UNIQUE (site, counter));
CREATE INDEX IF NOT EXISTS ops_record ON ops (record);
CREATE TABLE IF NOT EXISTS superseded (
    site INTEGER NOT NULL, counter INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (site, counter, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, coll TEXT NOT NULL, unit TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL, state BLOB NOT NULL,
    seq INTEGER NOT NULL, unit_seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS records_unit ON records (unit, coll);
CREATE TABLE IF NOT EXISTS conflicts (
    record TEXT NOT NULL, field TEXT NOT NULL, coll TEXT NOT NULL, unit TEXT, seq INTEGER NOT NULL,
    PRIMARY KEY (record, field));
CREATE INDEX IF NOT EXISTS conflicts_unit ON conflicts (unit);
CREATE TABLE IF NOT EXISTS moves (
    seq INTEGER NOT NULL, record TEXT NOT NULL, old_unit TEXT, new_unit TEXT);
CREATE INDEX IF NOT EXISTS moves_seq ON moves (seq);
"""


# -- opening the connection -----------------------------------------------------------------------

#: scrypt's cost for turning a key (a PIN) into an encrypted store's 256-bit page key: 32 MiB of memory
#: and about 0.2 s of one core per open on a laptop. Part of the file format: changing them makes the
#: existing encrypted databases unreadable.
KDF_N, KDF_R, KDF_P = 2**15, 8, 1
SALT_BYTES = 16
_PLAIN_HEADER = b"SQLite format 3\x00"
_SQLITE_NOTADB = 26


class WrongKey(Exception):
    "The key does not open this encrypted database (or the file is no encrypted database); nothing changed"


def is_encrypted(path: str | Path) -> bool:
    "Whether a database file is encrypted: it has content that does not start with SQLite's plain header"
    try:
        with open(path, "rb") as f:
            head = f.read(len(_PLAIN_HEADER))
    except FileNotFoundError:
        return False
    return bool(head) and head != _PLAIN_HEADER


def derive_key(key: str, salt: bytes) -> bytes:
    "The 256-bit SQLCipher page key for ``key`` (NFC-normalised, UTF-8) and a database's salt"
    return hashlib.scrypt(unicodedata.normalize("NFC", key).encode(), salt=salt, n=KDF_N, r=KDF_R,
                          p=KDF_P, maxmem=256 * KDF_R * KDF_N * KDF_P, dklen=32)


def key_literal(key: str, salt: bytes, *, with_salt: bool = False) -> str:
    """The raw-key literal ``"x'...'"`` for ``PRAGMA key``/``PRAGMA rekey``/``ATTACH ... KEY``; with the
    salt appended, SQLCipher writes that salt into a new database's header. Hex digits only: the key
    itself never appears in SQL."""
    raw = derive_key(key, salt).hex() + (salt.hex() if with_salt else "")
    return f"\"x'{raw}'\""


def open_connection(path: str, key: str | None = None) -> sqlite3.Connection:
    """The store's connection: plain sqlite3 without ``key``, SQLCipher with one.

    Key derivation, chosen over SQLCipher's own ``PRAGMA key = 'passphrase'``: scrypt (memory-hard,
    where SQLCipher's PBKDF2-SHA512 runs fast on GPUs) turns ``key`` and the database's random 16-byte
    salt into a raw 256-bit key, passed as ``x'...'``, so the key needs no quoting and SQLCipher runs no
    KDF of its own. The salt is the one SQLCipher keeps in the first 16 bytes of every encrypted file
    (a new file gets a random one, given explicitly with the key); no sidecar file, so a copied or
    backed-up database file is complete, and ``PRAGMA rekey`` keeps it.

    Honestly: a 6-digit PIN has 10^6 values. scrypt makes each guess cost ~0.2 s of a core and 32 MiB,
    so a stolen file yields to a determined attacker in CPU-days (hours on many cores), not years;
    it stops casual reading of a lost tablet, not a targeted attack. Longer PINs or passphrases help
    in proportion; a device with full-disk encryption and a lock screen is the stronger layer.

    With a key, the key is checked (by reading the schema) before anything is written: a wrong key
    raises ``WrongKey`` and leaves the file as it was.
    """
    if key is None:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    if path == ":memory:" or path.startswith("file:"):
        raise ValueError("only a database file can be encrypted")
    from sqlcipher3 import dbapi2 as sqlcipher

    existing = os.path.exists(path) and os.path.getsize(path) > 0
    if existing:
        with open(path, "rb") as f:
            salt = f.read(SALT_BYTES)
    else:
        salt = os.urandom(SALT_BYTES)
    conn = sqlcipher.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")  # a wrong key is reported below, not on stderr
        conn.execute(f"PRAGMA key = {key_literal(key, salt, with_salt=not existing)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException as e:
        conn.close()
        if isinstance(e, sqlcipher.DatabaseError) and (
            getattr(e, "sqlite_errorcode", None) == _SQLITE_NOTADB or "not a database" in str(e)
        ):  # what a wrong key looks like; a locked or unreadable file raises as it is
            raise WrongKey(f"the key does not open {path}; nothing was changed") from None
        raise
    return cast(sqlite3.Connection, conn)  # the same DB-API; sqlcipher3 ships no types


class Store:
    """One replica's SQLite database. Used unchanged by tablets and nodes.

    Writes are serialised by a lock and run in ``BEGIN IMMEDIATE`` transactions, one per batch.
    """

    def __init__(
        self, path: str | Path | None = None, *, schema: Schema = SCHEMA, durable: bool = True,
        key: str | None = None,
    ) -> None:
        """Open (or create) the database at ``path``.

        With ``key`` (a tablet worker's PIN) the file is encrypted with SQLCipher, its page key derived
        from ``key`` as ``open_connection`` describes; a key that does not open an existing file raises
        ``WrongKey`` before anything is written. The key is not kept. Without ``key``, plain sqlite3.
        """
        self.path = str(path) if path is not None else ":memory:"
        self.schema = schema
        self.encrypted = key is not None
        conn = open_connection(self.path, key)
        self.db = sqlite_utils.Database(conn)
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        # a batch can write more pages than the default checkpoint size: don't checkpoint every commit
        conn.execute("PRAGMA wal_autocheckpoint=20000")
        conn.executescript(_SCHEMA_SQL)
        self.conn = conn
        self.lock = threading.RLock()
        self._sites: dict[str, int] = {}
        self._devices: dict[int, str] = {}
        self._authors: dict[tuple[str, str, int], int] = {}
        self._author_rows: dict[int, tuple[str, str, int]] = {}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        "One write transaction; nested calls join the outer one"
        with self.lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._forget_ids()
                raise
            else:
                self.conn.execute("COMMIT")

    def _forget_ids(self) -> None:
        # ids handed out inside a rolled-back transaction do not exist: drop the caches
        self._sites.clear()
        self._devices.clear()
        self._authors.clear()
        self._author_rows.clear()

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- compact ids ----------------------------------------------------------------------------

    def site_ids(self, devices: Iterable[str]) -> dict[str, int]:
        "Local numbers for devices, allocating new ones (call inside a transaction)"
        missing = [d for d in set(devices) if d not in self._sites]
        for chunk in _chunks(missing):
            marks = ",".join("?" * len(chunk))
            for sid, dev in self.conn.execute(f"SELECT id, device FROM sites WHERE device IN ({marks})", chunk):
                self._sites[dev] = sid
                self._devices[sid] = dev
        for dev in missing:
            if dev not in self._sites:
                sid = self.conn.execute("INSERT INTO sites (device) VALUES (?)", (dev,)).lastrowid
                assert sid is not None
                self._sites[dev] = sid
                self._devices[sid] = dev
        return self._sites

    def device_of(self, sid: int) -> str:
        dev = self._devices.get(sid)
        if dev is None:
            (dev,) = self.conn.execute("SELECT device FROM sites WHERE id = ?", (sid,)).fetchone()
            self._devices[sid] = dev
        return dev

    def _author_id(self, user: str, unit: str, tier: int) -> int:
        key = (user, unit, tier)
        aid = self._authors.get(key)
        if aid is None:
            row = self.conn.execute(
                "SELECT id FROM authors WHERE user = ? AND unit = ? AND tier = ?", key
            ).fetchone()
            if row is None:
                aid = self.conn.execute(
                    "INSERT INTO authors (user, unit, tier) VALUES (?, ?, ?)", key
                ).lastrowid
                assert aid is not None
            else:
                aid = row[0]
            self._authors[key] = aid
            self._author_rows[aid] = key
        return aid

    def _author(self, aid: int) -> tuple[str, str, int]:
        row = self._author_rows.get(aid)
        if row is None:
            r = self.conn.execute("SELECT user, unit, tier FROM authors WHERE id = ?", (aid,)).fetchone()
            row = (r[0], r[1], r[2])
            self._author_rows[aid] = row
        return row

    # -- applying ops ---------------------------------------------------------------------------

    def apply(self, ops: Sequence[Op], *, dead: Collection[OpId] = ()) -> Applied:
        """Apply a batch of ops in one transaction. Idempotent: ops already held are skipped.

        Ops may arrive in any order, before the ops their ``pred`` names. ``dead`` names ops in the
        batch that the sender already knows to be superseded (a node says so when it sends a tablet an
        op whose superseding op the tablet will never receive).
        """
        with self.transaction():
            return self._apply(ops, dead)

    def _apply(self, ops: Sequence[Op], dead: Collection[OpId]) -> Applied:
        result = Applied()
        if not ops:
            return result
        conn = self.conn
        devices = {op.site for op in ops}
        for op in ops:
            for d, _ in op.pred:
                devices.add(d)
        sites = self.site_ids(devices)

        # 1. drop duplicates: inside the batch, then those already held
        by_site: dict[int, dict[int, Op]] = defaultdict(dict)
        for op in ops:
            by_site[sites[op.site]].setdefault(op.counter, op)
        new: list[Op] = []
        held_killed: set[tuple[int, int, str]] = set()
        for sid, batch in by_site.items():
            lo, hi = min(batch), max(batch)
            have = {
                r[0]
                for r in conn.execute(
                    "SELECT counter FROM ops WHERE site = ? AND counter BETWEEN ? AND ?", (sid, lo, hi)
                )
            }
            for counter, op in batch.items():
                if counter not in have:
                    new.append(op)
            fresh = [c for c in batch if c not in have]
            if fresh:
                lo, hi = min(fresh), max(fresh)
                held_killed.update(
                    (sid, r[0], r[1])
                    for r in conn.execute(
                        "SELECT counter, record FROM superseded WHERE site = ? AND counter BETWEEN ? AND ?",
                        (sid, lo, hi),
                    )
                )
        result.duplicates = len(ops) - len(new)
        if not new:
            return result

        # 2. every op id this batch supersedes, scoped to the superseding op's record
        dead_set = set(dead)
        kills: set[tuple[int, int, str]] = set()
        kill_by_record: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for op in new:
            for d, c in op.pred:
                kills.add((sites[d], c, op.record))
                kill_by_record[op.record].add((d, c))
            if dead_set and (op.site, op.counter) in dead_set:
                kills.add((sites[op.site], op.counter, op.record))
                kill_by_record[op.record].add((op.site, op.counter))

        # 3. load the touched records' state
        touched = {op.record for op in new}
        rows: dict[str, tuple[str, str | None, int, int, State]] = {}
        for chunk in _chunks(list(touched)):
            marks = ",".join("?" * len(chunk))
            for rid, coll, unit, unit_seq, nconf, state in conn.execute(
                f"SELECT id, coll, unit, unit_seq, conflicts, state FROM records WHERE id IN ({marks})", chunk
            ):
                rows[rid] = (coll, unit, unit_seq, nconf, _state_decode(state))

        # 4. op rows, live entries, and the supersession log
        (base,) = conn.execute("SELECT coalesce(max(seq), 0) FROM ops").fetchone()
        seq = base
        op_rows = []
        states: dict[str, State] = {}
        colls: dict[str, str] = {}
        record_seq: dict[str, int] = {}
        author_ids: dict[tuple[str, str, int], int] = {}
        for op in new:
            seq += 1
            key = (op.user, op.unit, op.tier)
            aid = author_ids.get(key)
            if aid is None:
                aid = author_ids[key] = self._author_id(*key)
            sid = sites[op.site]
            op_rows.append((
                seq, sid, op.counter, op.hlc, op.coll, op.record, op.field, op.kind,
                _json_encode(op.value).decode() if op.value is not None else None,
                _json_encode(op.pred).decode() if op.pred else None,
                aid,
            ))
            rid = op.record
            record_seq[rid] = seq
            state = states.get(rid)
            if state is None:
                row = rows.get(rid)
                state = states[rid] = row[4] if row else {}
                colls[rid] = row[0] if row else op.coll
            if op.kind == REMOVE:
                continue
            ident = (sid, op.counter, rid)
            if ident in kills or ident in held_killed:
                continue
            entry = Entry(op.site, op.counter, op.hlc, op.tier, op.kind, op.value, seq)
            lst = state.get(op.field)
            if lst is None:
                state[op.field] = [entry]
            else:
                lst.append(entry)
        for rid, killed in kill_by_record.items():
            state = states[rid]
            for name in list(state):
                kept = [e for e in state[name] if (e.device, e.counter) not in killed]
                if len(kept) != len(state[name]):
                    if kept:
                        state[name] = kept
                    else:
                        del state[name]
        conn.executemany("INSERT INTO ops VALUES (?,?,?,?,?,?,?,?,?,?,?)", op_rows)
        if kills:
            conn.executemany("INSERT OR IGNORE INTO superseded VALUES (?,?,?)", kills)

        # 5. materialise the touched records
        self._save_records(states, colls, rows, record_seq)

        # 6. per-site high-water marks
        for sid, batch in by_site.items():
            self._advance_site(sid, batch)
        result.new = len(new)
        result.records = len(states)
        result.first_seq = base + 1
        result.last_seq = seq
        return result


    def _save_records(
        self,
        states: dict[str, State],
        colls: dict[str, str],
        rows: dict[str, tuple[str, str | None, int, int, State]],
        record_seq: dict[str, int],
    ) -> None:
        "Materialise records from their live ops and write them, their conflicts and their moves"
        conn = self.conn
        record_rows = []
        conflict_records: list[str] = []
        conflict_rows: list[tuple[str, str, str, str | None, int]] = []
        move_rows = []
        for rid, state in states.items():
            coll = colls[rid]
            m = materialize(coll, state, self.schema)
            old = rows.get(rid)
            old_unit = old[1] if old else None
            unit_seq = old[2] if old else 0
            if m.unit != old_unit:
                unit_seq = record_seq[rid]
                move_rows.append((unit_seq, rid, old_unit, m.unit))
            record_rows.append((
                rid, coll, m.unit, int(m.deleted), len(m.conflicts), _json_encode(m.data).decode(),
                _state_encode(state), record_seq[rid], unit_seq,
            ))
            if (old and old[3]) or m.conflicts:
                conflict_records.append(rid)
                conflict_rows.extend((rid, f, coll, m.unit, record_seq[rid]) for f in m.conflicts)
        conn.executemany(
            "INSERT INTO records (id, coll, unit, deleted, conflicts, data, state, seq, unit_seq)"
            " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET unit = excluded.unit,"
            " deleted = excluded.deleted, conflicts = excluded.conflicts, data = excluded.data,"
            " state = excluded.state, seq = excluded.seq, unit_seq = excluded.unit_seq",
            record_rows,
        )
        if conflict_records:
            old_conf = {
                (r, f): s
                for chunk in _chunks(conflict_records)
                for r, f, s in conn.execute(
                    f"SELECT record, field, seq FROM conflicts WHERE record IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            }
            conn.executemany(
                "DELETE FROM conflicts WHERE record = ?", [(r,) for r in conflict_records]
            )
            conn.executemany(
                "INSERT INTO conflicts VALUES (?,?,?,?,?)",
                [(r, f, c, u, old_conf.get((r, f), s)) for r, f, c, u, s in conflict_rows],
            )
        if move_rows:
            conn.executemany("INSERT INTO moves VALUES (?,?,?,?)", move_rows)

    def _advance_site(self, sid: int, batch: dict[int, Op]) -> None:
        contiguous, max_counter, last_hlc = self.conn.execute(
            "SELECT contiguous, max_counter, last_hlc FROM sites WHERE id = ?", (sid,)
        ).fetchone()
        max_counter = max(max_counter, max(batch))
        last_hlc = max(last_hlc, max(op.hlc for op in batch.values()))
        if contiguous + 1 in batch:
            nxt = contiguous + 1
            for (c,) in self.conn.execute(
                "SELECT counter FROM ops WHERE site = ? AND counter >= ? ORDER BY counter", (sid, nxt)
            ):
                if c != nxt:
                    break
                nxt += 1
            contiguous = nxt - 1
        self.conn.execute(
            "UPDATE sites SET contiguous = ?, max_counter = ?, last_hlc = ? WHERE id = ?",
            (contiguous, max_counter, last_hlc, sid),
        )

    def restamp(self, device: str, after: int, shift_ms: int, ceiling: int) -> int:
        """Shift the clocks of a device's own ops after counter ``after`` by ``shift_ms`` (none of them
        has left the device), keeping their order and keeping each at or under ``ceiling``. Used when a
        tablet learns its clock was wrong. Returns how many ops changed."""
        with self.transaction() as conn:
            sid = self.site_ids([device])[device]
            rows = conn.execute(
                "SELECT seq, counter, hlc, record FROM ops WHERE site = ? AND counter > ? ORDER BY counter",
                (sid, after),
            ).fetchall()
            if not rows:
                return 0
            new_hlc: dict[int, int] = {}
            prev = 0
            for seq, counter, hlc, _ in rows:
                h = max(prev + 1, min(hlc + (shift_ms << 16), ceiling))
                new_hlc[counter] = prev = h
            conn.executemany("UPDATE ops SET hlc = ? WHERE seq = ?",
                             [(new_hlc[c], seq) for seq, c, _, _ in rows])
            touched = list({r[3] for r in rows})
            states: dict[str, State] = {}
            colls: dict[str, str] = {}
            old: dict[str, tuple[str, str | None, int, int, State]] = {}
            record_seq: dict[str, int] = {}
            for chunk in _chunks(touched):
                marks = ",".join("?" * len(chunk))
                for rid, coll, unit, unit_seq, nconf, state, seq in conn.execute(
                    f"SELECT id, coll, unit, unit_seq, conflicts, state, seq FROM records WHERE id IN ({marks})",
                    chunk,
                ):
                    st = _state_decode(state)
                    for es in st.values():
                        for e in es:
                            if e.device == device and e.counter in new_hlc:
                                e.hlc = new_hlc[e.counter]
                    states[rid], colls[rid], record_seq[rid] = st, coll, seq
                    old[rid] = (coll, unit, unit_seq, nconf, st)
            self._save_records(states, colls, old, record_seq)
            conn.execute("UPDATE sites SET last_hlc = ? WHERE id = ?", (prev, sid))
            return len(rows)

    def forget(self, records: Sequence[str]) -> None:
        """Drop records and their ops from this replica: they left its scope (they were not deleted).
        If they come back, the node sends their live ops whole."""
        with self.transaction() as conn:
            for chunk in _chunks(list(records)):
                marks = ",".join("?" * len(chunk))
                for table, col in (("records", "id"), ("conflicts", "record"), ("superseded", "record"),
                                   ("ops", "record")):
                    conn.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)

    # -- reading --------------------------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> Record:
        rid, coll, unit, deleted, data, seq, conflicts = row
        return Record(rid, coll, unit, bool(deleted), _json_decode(data), conflicts, seq)

    def get(self, record: str) -> Record | None:
        row = self.conn.execute(
            "SELECT id, coll, unit, deleted, data, seq, conflicts FROM records WHERE id = ?", (record,)
        ).fetchone()
        if row is None:
            return None
        rec = self._record(row)
        rec.conflicts = self._conflict_fields(record) if row[6] else []
        return rec

    def _conflict_fields(self, record: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT field FROM conflicts WHERE record = ? ORDER BY field", (record,))]

    def records(
        self,
        coll: str | None = None,
        *,
        unit: str | None = None,
        units: tuple[str, str] | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[Record]:
        """Current records, by collection and by unit: one ``unit``, or a code range ``units``
        (``sync.units.descendant_range`` gives the range of every village under a township)."""
        where, params = _where(coll=coll, unit=unit, units=units)
        if not include_deleted:
            where += (" AND " if where else " WHERE ") + "deleted = 0"
        sql = "SELECT id, coll, unit, deleted, data, seq, conflicts FROM records" + where
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = [self._record(r) for r in self.conn.execute(sql, params)]
        for rec in out:
            rec.conflicts = self._conflict_fields(rec.id) if rec.conflicts else []
        return out

    def resolve_id(self, record: str) -> str:
        "Follow merges: the id of the resident a merged duplicate now lives on as"
        seen = {record}
        while True:
            row = self.conn.execute(
                "SELECT json_extract(data, '$.merged_into') FROM records WHERE id = ?", (record,)).fetchone()
            if row is None or not row[0] or row[0] in seen:
                return record
            record = row[0]
            seen.add(record)

    def catalogue_codes(self, kind: str) -> set[str]:
        "The codes of a synced catalogue (``need_category``, ``service_type``), retired entries included"
        return {r[0] for r in self.conn.execute(
            "SELECT json_extract(data, '$.code') FROM records WHERE coll = 'catalogue'"
            " AND json_extract(data, '$.kind') = ?", (kind,)) if r[0] is not None}

    def state(self, record: str) -> State:
        "A record's live ops, by field"
        row = self.conn.execute("SELECT state FROM records WHERE id = ?", (record,)).fetchone()
        return _state_decode(row[0]) if row else {}

    def live_ids(self, record: str, field: str | None = None) -> list[OpId]:
        st = self.state(record)
        names = [field] if field is not None else list(st)
        return sorted((e.device, e.counter) for n in names for e in st.get(n, ()))

    def ops_by_seq(self, seqs: Sequence[int]) -> list[Op]:
        out: list[Op] = []
        for chunk in _chunks(sorted(seqs)):
            marks = ",".join("?" * len(chunk))
            out.extend(self._ops(f"WHERE ops.seq IN ({marks}) ORDER BY ops.seq", chunk))
        return out

    def _ops(self, where: str, params: Sequence[Any]) -> list[Op]:
        out = []
        for (site, counter, hlc, coll, record, field, kind, value, pred, aid) in self.conn.execute(
            "SELECT site, counter, hlc, coll, record, field, kind, value, pred, author FROM ops " + where,
            params,
        ):
            user, unit, tier = self._author(aid)
            out.append(Op(
                self.device_of(site), counter, hlc, coll, record, field, kind,
                _json_decode(value) if value is not None else None,
                tuple((d, c) for d, c in _json_decode(pred)) if pred else (),
                user, unit, tier,
            ))
        return out

    def ops_since(self, seq: int, limit: int = 10_000) -> list[tuple[int, Op]]:
        "Ops accepted after local sequence ``seq``, in order, with their sequence numbers"
        rows = self.conn.execute(
            "SELECT seq FROM ops WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        seqs = [r[0] for r in rows]
        return list(zip(seqs, self.ops_by_seq(seqs)))

    def record_ops(self, record: str) -> list[Op]:
        return self._ops("WHERE record = ? ORDER BY seq", (record,))

    def live_seqs(self, records: Iterable[str]) -> list[int]:
        "The local sequence numbers of these records' live ops"
        seqs: list[int] = []
        for chunk in _chunks(list(records)):
            marks = ",".join("?" * len(chunk))
            for (state,) in self.conn.execute(f"SELECT state FROM records WHERE id IN ({marks})", chunk):
                for entries in _state_decode(state).values():
                    seqs.extend(e.seq for e in entries)
        return seqs

    def live_ops(self, records: Iterable[str]) -> list[Op]:
        "The live ops of these records: enough for another replica to hold the same state"
        return self.ops_by_seq(self.live_seqs(records))

    def packed(self, seqs: Sequence[int], dead: Collection[int] = ()) -> OpBatch:
        """The ops at these sequence numbers packed for the wire straight from their rows, without
        building ``Op`` objects; ``dead`` names the sequence numbers to flag as superseded"""
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(sorted(set(seqs))):
            marks = ",".join("?" * len(chunk))
            rows.extend(self.conn.execute(
                "SELECT seq, site, counter, hlc, coll, record, field, kind, value, pred, author FROM ops"
                f" WHERE seq IN ({marks}) ORDER BY seq", chunk))
        return pack_rows(rows, self.device_of, self._author, dead)

    def max_seq(self) -> int:
        (n,) = self.conn.execute("SELECT coalesce(max(seq), 0) FROM ops").fetchone()
        return int(n)

    def count_ops(self) -> int:
        (n,) = self.conn.execute("SELECT count(*) FROM ops").fetchone()
        return int(n)

    def high_water(self) -> dict[str, HighWater]:
        return {
            dev: HighWater(dev, c, m, h)
            for dev, c, m, h in self.conn.execute(
                "SELECT device, contiguous, max_counter, last_hlc FROM sites WHERE max_counter > 0"
            )
        }

    def missing_counters(self, device: str, limit: int = 1000) -> list[tuple[int, int]]:
        "Gaps in a device's op sequence as inclusive (first, last) ranges"
        sid = self.conn.execute("SELECT id FROM sites WHERE device = ?", (device,)).fetchone()
        if sid is None:
            return []
        gaps, expect = [], 1
        for (c,) in self.conn.execute("SELECT counter FROM ops WHERE site = ? ORDER BY counter", sid):
            if c > expect:
                gaps.append((expect, c - 1))
                if len(gaps) >= limit:
                    break
            expect = c + 1
        return gaps

    def last_hlc(self) -> int:
        (n,) = self.conn.execute("SELECT coalesce(max(last_hlc), 0) FROM sites").fetchone()
        return int(n)

    def conflicts(
        self, *, unit: str | None = None, units: tuple[str, str] | None = None, record: str | None = None
    ) -> list[Conflict]:
        "Open conflicts with every competing value and its author"
        where, params = _where(unit=unit, units=units, record=record)
        sql = "SELECT record, field, coll, unit FROM conflicts" + where
        sql += " ORDER BY seq, record, field"
        out = []
        for rid, name, coll, u in self.conn.execute(sql, params).fetchall():
            st = self.state(rid)
            if name == DELETED:
                c = self.schema.collections.get(coll)
                ufield = c.unit_field if c else "unit"
                entries = [e for n, es in st.items() if n != ufield and n not in SURVIVES_DELETE for e in es]
            else:
                entries = st.get(name, [])
            entries = sorted(entries, key=Entry.key, reverse=True)
            ops = {o.id: o for o in self.ops_by_seq([e.seq for e in entries])}
            cands = []
            for e in entries:
                o = ops[(e.device, e.counter)]
                cands.append(LiveOp(e.device, e.counter, e.hlc, TIER_NAME.get(e.tier, str(e.tier)),
                                    e.value, o.user, o.unit, e.seq))
            winner = None
            if name == DELETED:
                winner = max(st.get(DELETED, []), key=Entry.key).value if st.get(DELETED) else None
            elif entries:
                winner = entries[0].value
            out.append(Conflict(rid, coll, u, name, winner, cands))
        return out

    def history(self, record: str) -> list[Change]:
        "Every change to a record: who, which device, tier, when, old and new value"
        ops = self.record_ops(record)
        by_id = {o.id: o for o in ops}
        seqs = [r[0] for r in self.conn.execute("SELECT seq FROM ops WHERE record = ? ORDER BY seq", (record,))]
        out = []
        for seq, o in zip(seqs, ops):
            old = [by_id[p].value for p in o.pred if p in by_id and by_id[p].field == o.field]
            out.append(Change(
                seq, o.site, o.counter, o.hlc, o.user, o.unit, TIER_NAME.get(o.tier, str(o.tier)),
                o.field, {SET: "set", ADD: "add", REMOVE: "remove"}.get(o.kind, str(o.kind)), old, o.value,
            ))
        return out

    def moves_since(self, seq: int) -> list[tuple[int, str, str | None, str | None]]:
        return [
            (s, r, a, b)
            for s, r, a, b in self.conn.execute(
                "SELECT seq, record, old_unit, new_unit FROM moves WHERE seq > ? ORDER BY seq", (seq,)
            )
        ]

    def digest(self) -> dict[str, tuple[Any, ...]]:
        """Everything that must be equal across converged replicas: each record's values, deleted flag,
        live op ids and open conflicts. Local sequence numbers are left out."""
        out: dict[str, tuple[Any, ...]] = {}
        conf: dict[str, list[str]] = defaultdict(list)
        for r, f in self.conn.execute("SELECT record, field FROM conflicts ORDER BY record, field"):
            conf[r].append(f)
        for rid, coll, unit, deleted, data, state in self.conn.execute(
            "SELECT id, coll, unit, deleted, data, state FROM records"
        ):
            st = _state_decode(state)
            live = tuple(sorted(
                (n, e.device, e.counter) for n, es in st.items() for e in es
            ))
            out[rid] = (coll, unit, bool(deleted), _json_decode(data), live, tuple(conf.get(rid, ())))
        return out


def _where(*, units: tuple[str, str] | None = None, **equal: str | None) -> tuple[str, list[str]]:
    "A WHERE clause for the filters given: columns equal to values, and ``unit`` within a code range"
    clauses = [f"{col} = ?" for col, v in equal.items() if v is not None]
    params = [v for v in equal.values() if v is not None]
    if units is not None:
        clauses.append("unit BETWEEN ? AND ?")
        params.extend(units)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


chunks = _chunks
