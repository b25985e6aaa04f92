"""The SQLite store every tablet and node uses: the op log, the live ops of every record, materialised
records, open conflicts, per-site high-water marks and a local sequence for pull cursors.

Tables (sqlite-utils can open any of them):

    ops         every op ever accepted, in arrival order; ``seq`` is the local sequence for cursors;
                ``unit`` is its record's unit once the op's batch was applied: pulls find a village's
                new ops through the index on (unit, seq); ``value`` and ``pred`` are JSON, ``pred`` an
                array of [device, counter] or empty ('' since 2026-11-27, NULL in older rows)
    sites       the compact local numbering of devices, with each one's high-water marks
    authors     (user, unit, tier) triples ops were written by
    superseded  op ids some op named in ``pred`` (scoped to that op's record) that were not live here
                then: ops not held yet, which then arrive dead (and ops superseded twice)
    records     the current record: winning values as JSON, its live ops, deleted, unit, conflicts,
                ``log``: the sequence numbers of all its ops, a JSON array (``json_each`` reads it in SQL), and
                ``ref_person``, ``ref_need``, ``ref_merged_into``: the records it names (``REF_FIELDS``)
    conflicts   the open conflicts, one row per (record, field)
    moves       each change of a record's unit from one unit to another, for scope changes on tablets;
                from NULL when a record held without a unit (its first ops came late) gets one
    kept_own    a tablet's own ops of records that left its scope (``forget``): kept so that it can
                send them again to a node restored from a backup that lacks them

The merge rule lives here, in ``materialize``: a register's live ops are those no op of the record names
in ``pred``; the visible value is the winner by (tier rank, hlc, device, counter); a review field whose
live ops hold different values is an open conflict; a set field holds the elements of its live adds; a
record is deleted when its ``_deleted`` register says so, and a delete that did not see a concurrent edit
of another field leaves a conflict on ``_deleted``.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import itertools
import operator
import os
import re
import sqlite3
import threading
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, cast

import msgspec
import sqlite_utils

from .ops import Op
from .schema import SCHEMA, Schema
from .wire import OpBatch, Prepared, pack_prepared, prepare_rows
from .types import ADD, DELETED, REMOVE, SET, SURVIVES_DELETE, TIER_NAME, OpId

_json_encode = msgspec.json.Encoder().encode
_json_encode_into = msgspec.json.Encoder().encode_into
_json_decode = msgspec.json.decode
#: a record's stored values with each value left encoded: a patch re-encodes only what it changes
_values_decode = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_CHUNK = 500
#: a ``kept_own k`` row whose op is not in ``ops`` again (its record came back)
_NOT_HELD = "NOT EXISTS (SELECT 1 FROM ops o WHERE o.site = k.site AND o.counter = k.counter)"
_counter = operator.attrgetter("counter")
_seq_of = operator.itemgetter(0)
_hlc = operator.attrgetter("hlc")
#: How many of the records a store wrote last it keeps in memory by default (``Store(recent_records=)``):
#: about 1.6 KB each (the ingest benchmark's records, 2026-11-28), some 30 MB in all.
RECENT_RECORDS = 20_000
#: About how many of the op rows it inserted last a store keeps for ``Store.written_after``.
WRITTEN_OPS = 20_000


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
_state_encode_into = msgspec.msgpack.Encoder().encode_into
_state_decode = msgspec.msgpack.Decoder(State).decode
#: Decode a ``records.state`` blob: the record's live ops by field.
decode_state = _state_decode


@dataclass
class Materialized:
    data: dict[str, Any]
    deleted: bool
    unit: str | None
    conflicts: list[str]


def materialize(coll: str, state: State, schema: Schema = SCHEMA) -> Materialized:
    "The visible record that a record's live ops make: the whole merge rule in one place"
    data: dict[str, Any] = {}
    conflicts: list[str] = []
    ufield = _unit_field(schema, coll)
    for name, entries in state.items():
        if len(entries) == 1 and name != DELETED:  # most fields: _field_value's first case, inline
            e = entries[0]
            if e.kind == SET:
                data[name] = e.value
                continue
            if e.kind == ADD:
                data[name] = [e.value]
                continue
        if not entries or name == DELETED:
            continue
        has, value, conflict = _field_value(schema, coll, name, entries)
        if has:
            data[name] = value
        if conflict:
            conflicts.append(name)
    deleted = False
    dels = state.get(DELETED)
    if dels:
        deleted = max(dels, key=Entry.key).value is True
        # a delete keeps the record's unit (so it stays in its village's scope) and any merge redirect
        others_live = deleted and any(
            entries and name not in (DELETED, ufield) and name not in SURVIVES_DELETE
            for name, entries in state.items())
        if (len(dels) > 1 and _distinct(dels)) or others_live:
            conflicts.append(DELETED)
    unit = data.get(ufield)
    return Materialized(data, deleted, unit if isinstance(unit, str) else None, sorted(conflicts))


def _field_value(schema: Schema, coll: str, name: str, entries: list[Entry]) -> tuple[bool, Any, bool]:
    """One field's visible value from its live ops: (whether it has one, the value, whether it is an
    open conflict). A register shows its winner, and conflicts when it is marked for review and its
    live ops hold different values; a set shows the elements of its live adds."""
    if len(entries) == 1:
        e = entries[0]
        if e.kind == SET:
            return True, e.value, False
        if e.kind == ADD:
            return True, [e.value], False
        return False, None, False
    regs = [e for e in entries if e.kind == SET]
    if regs:
        conflict = len(regs) > 1 and schema.needs_review(coll, name) and _distinct(regs)
        return True, max(regs, key=Entry.key).value, conflict
    adds = [e for e in entries if e.kind == ADD]
    if adds:
        elems = {_json_encode(e.value): e.value for e in adds}
        return True, [elems[k] for k in sorted(elems)], False
    return False, None, False


def _unit_field(schema: Schema, coll: str) -> str:
    c = schema.collections.get(coll)
    return c.unit_field if c else "unit"


def _distinct(entries: list[Entry]) -> bool:
    first = _json_encode(entries[0].value)
    return any(_json_encode(e.value) != first for e in entries[1:])


#: A record's state as ``apply`` holds it: a field's live ops stay encoded (``msgspec.Raw``) until the
#: batch touches that field, and are written back as they were read.
LazyState = dict[str, Any]
_lazy_decode = msgspec.msgpack.Decoder(dict[str, msgspec.Raw]).decode
_entries_decode = msgspec.msgpack.Decoder(list[Entry]).decode


def _json_bound(obj: Any) -> bytearray:
    """``obj`` as JSON for a column its statement writes as ``CAST(? AS TEXT)``: msgspec's UTF-8 goes in
    as it is. Made a ``str`` first, a record's values (about 200 bytes, Chinese text) took 2 µs to decode
    and as long again for sqlite3 to encode back (2026-11-28). A ``bytearray``, as ``_state_blob`` says."""
    buf = bytearray()
    _json_encode_into(obj, buf)
    return buf


def _state_blob(state: LazyState) -> bytearray:
    """A state encoded for the ``records.state`` column. As a ``bytearray``: Python's sqlite3 binds one
    straight away, where it first looks ``bytes`` up in its adapters (about 3,300 instructions more a
    row, 2026-11-28)"""
    blob = bytearray()
    _state_encode_into(state, blob)
    return blob


#: A touched record as stored: coll, unit, unit_seq, open conflicts, deleted, values (JSON), log (JSON)
_Old = tuple[str, "str | None", int, int, int, "str | bytearray", str]
#: A record as ``Store._stored`` gives it and keeps it: what ``_save_records`` needs, state blob, seq
_Kept = tuple[_Old, "bytes | bytearray", int]


def _drop(state: LazyState, name: str, ids: set[OpId]) -> bool:
    """Remove the live ops ``ids`` names from field ``name`` of ``state``; those found leave ``ids``.
    Returns whether any was found."""
    lst = state.get(name)
    if lst is None:
        return False
    if type(lst) is msgspec.Raw:
        lst = state[name] = _entries_decode(lst)
    kept = []
    for e in lst:
        i = (e.device, e.counter)
        if i in ids:
            ids.discard(i)
        else:
            kept.append(e)
    if len(kept) == len(lst):
        return False
    if kept:
        state[name] = kept
    else:
        del state[name]
    return True


@dataclass
class Record:
    id: str
    coll: str
    unit: str | None
    deleted: bool
    data: dict[str, Any]
    conflicts: list[str]
    seq: int

    @property
    def merged_into(self) -> str | None:
        """The resident this one was merged into, if it is a resident merged away (its ``merged_into`` is set,
        whether or not its delete still stands); else None. ``Store.resolve_id`` follows a chain of merges."""
        kept = self.data.get("merged_into") if self.coll == "person" else None
        return kept if isinstance(kept, str) and kept else None


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


#: The fields by which a record names another that ``Store.records(naming=...)`` finds through an index,
#: with the collections whose records name others by it. Each has a column of its own, ``ref_<field>``: the
#: field's value when the record is of one of those collections and the value is an id (a non-empty string),
#: else NULL, with a partial index on the non-NULL ones. Written by ``_save_records`` only when the field
#: changed: an edit of anything else names no ``ref_`` column, so SQLite leaves their indexes alone. (Indexes
#: on ``json_extract(data, ...)``, as they were first, were rewritten on every edit of ``data``: about 3.5 µs
#: of SQLite's CPU an op of the ingest benchmark, 2026-12-03.)
REF_FIELDS: dict[str, tuple[str, ...]] = {
    "person": ("need", "service"), "need": ("service", "escalation"), "merged_into": ("person",)}
#: By collection, the ``REF_FIELDS`` its records name others by, each with its place among them
_REFS_OF: dict[str, list[tuple[int, str]]] = {}
for _i, (_f, _cs) in enumerate(REF_FIELDS.items()):
    for _c in _cs:
        _REFS_OF.setdefault(_c, []).append((_i, _f))
#: What a record naming none by any of them binds: '' made NULL in SQL (``NULLIF``), as sqlite3 binds None
#: by a slower path (about 2,000 instructions more a value, callgrind, 2026-12-03)
_NO_REFS = ('',) * len(REF_FIELDS)
_REF_INDEXES = [f"CREATE INDEX IF NOT EXISTS records_ref_{f} ON records (ref_{f}) WHERE ref_{f} IS NOT NULL"
                for f in REF_FIELDS]
_REF_SET = ", ".join(f"ref_{f} = NULLIF(?, '')" for f in REF_FIELDS)
_INSERT_RECORDS = ("INTO records (id, coll, unit, deleted, conflicts, data, state, seq, unit_seq, log, "
                   + ", ".join(f"ref_{f}" for f in REF_FIELDS) + ")")
_INSERT_RECORD = "(?,?,?,?,?,CAST(? AS TEXT),?,?,?,?" + ",NULLIF(?,'')" * len(REF_FIELDS) + ")"


def _refs(coll: str, data: dict[str, Any]) -> tuple[str, ...]:
    """A record's ``ref_`` columns, in ``REF_FIELDS`` order, from its values (which may still be encoded): the
    id it names, or '' (``_NO_REFS``)"""
    found: list[str] | None = None  # most records name none: no list made for them
    for i, f in _REFS_OF.get(coll, ()):
        v = data.get(f)
        if type(v) is msgspec.Raw:
            v = _json_decode(v)
        if isinstance(v, str) and v:
            if found is None:
                found = list(_NO_REFS)
            found[i] = v
    return _NO_REFS if found is None else tuple(found)


#: The tables, as a new database gets them
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
    value TEXT, pred TEXT, author INTEGER NOT NULL, unit TEXT, UNIQUE (site, counter));
CREATE TABLE IF NOT EXISTS superseded (
    site INTEGER NOT NULL, counter INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (site, counter, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, coll TEXT NOT NULL, unit TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL, state BLOB NOT NULL,
    seq INTEGER NOT NULL, unit_seq INTEGER NOT NULL DEFAULT 0, log TEXT NOT NULL DEFAULT '[]',
    ref_person TEXT, ref_need TEXT, ref_merged_into TEXT);
CREATE TABLE IF NOT EXISTS conflicts (
    record TEXT NOT NULL, field TEXT NOT NULL, coll TEXT NOT NULL, unit TEXT, seq INTEGER NOT NULL,
    PRIMARY KEY (record, field));
CREATE TABLE IF NOT EXISTS moves (
    seq INTEGER NOT NULL, record TEXT NOT NULL, old_unit TEXT, new_unit TEXT);
CREATE TABLE IF NOT EXISTS kept_own (
    site INTEGER NOT NULL, counter INTEGER NOT NULL, hlc INTEGER NOT NULL, coll TEXT NOT NULL,
    record TEXT NOT NULL, field TEXT NOT NULL, kind INTEGER NOT NULL, value TEXT, pred TEXT,
    author INTEGER NOT NULL, PRIMARY KEY (site, counter)) WITHOUT ROWID;
"""
_TABLES = [sql.strip() for sql in _SCHEMA_SQL.split(";") if sql.strip()]
#: The indexes (a database made by an older version gains those it lacks on open: ``Store._migrate``)
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS records_unit ON records (unit, coll)",
    "CREATE INDEX IF NOT EXISTS records_coll ON records (coll, unit)",
    "CREATE INDEX IF NOT EXISTS conflicts_unit ON conflicts (unit)",
    "CREATE INDEX IF NOT EXISTS moves_seq ON moves (seq)",
    "CREATE INDEX IF NOT EXISTS ops_unit ON ops (unit, seq)",
    *_REF_INDEXES,
]
#: The names of the tables and indexes
_OBJECTS = set(re.findall(r"IF NOT EXISTS (\w+)", ";".join(_TABLES + _INDEXES)))


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


def create_private(path: str | Path) -> None:
    """Create ``path`` as an empty file only its owner may read and write (0600), whatever the umask,
    unless it exists already (then it is left as it is). A database holds residents' personal data and
    a node's secrets; SQLite opens an empty file as a new database, and gives the ``-wal``, ``-shm`` and
    ``-journal`` files it makes beside a database the database file's mode, so they are private too."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # no such folder, or not allowed: SQLite's own open fails and says so, as it did before


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

    A database file that does not exist yet is created private first (``create_private``).
    """
    if path not in ("", ":memory:") and not path.startswith("file:"):
        create_private(path)
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


@contextmanager
def no_cycles() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that makes many small objects and drops
    them at its end, none of them in a cycle (a batch applied, a pull packed): the collector would
    only walk them, and the ops ``Store.packed`` keeps, again and again. It resumes afterwards."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class Checkpointer:
    """Copies a WAL database's committed pages back into its file (a passive checkpoint) from a thread
    and a connection of its own, soon after each commit that pokes it, at most every ``PAUSE`` seconds.

    Left to SQLite, the commit that takes the WAL past ``wal_autocheckpoint`` pages runs the checkpoint
    itself before it returns: on a node, every 80 MB of writes, one tablet's round trip waited for all
    of it (about 0.1 s in the middle of a 10,000-record push). Run here, it overlaps the next request,
    on the other core; the writer's own autocheckpoint stays as the fallback. A passive checkpoint
    takes no lock a writer or reader waits for; pages that readers still need are left for the next."""

    PAUSE = 0.2

    def __init__(self, path: str) -> None:
        self._conn = open_connection(path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cunsync-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        if not self._wake.is_set():  # a commit while it works or pauses: it checkpoints once after
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # a busy or failing disk: the writer's autocheckpoint is still there
            self._stop.wait(self.PAUSE)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._conn.close()


class Store:
    """One replica's SQLite database. Used unchanged by tablets and nodes.

    Writes are serialised by a lock and run in ``BEGIN IMMEDIATE`` transactions, one per batch.
    """

    def __init__(
        self, path: str | Path | None = None, *, schema: Schema = SCHEMA, durable: bool = True,
        key: str | None = None, checkpoint_thread: bool = False, recent_records: int = RECENT_RECORDS,
    ) -> None:
        """Open (or create) the database at ``path``.

        With ``key`` (a tablet worker's PIN) the file is encrypted with SQLCipher, its page key derived
        from ``key`` as ``open_connection`` describes; a key that does not open an existing file raises
        ``WrongKey`` before anything is written. The key is not kept. Without ``key``, plain sqlite3.

        ``checkpoint_thread`` (a node's store, a plain file): the WAL is copied back into the database
        file by a ``Checkpointer`` of its own after commits, so that no commit waits for it.

        ``recent_records``: how many of the records it wrote last ``apply`` keeps in memory as stored, so
        that a batch editing them need not read them again (see ``_stored``); 0 keeps none.
        """
        self.path = str(path) if path is not None else ":memory:"
        self.schema = schema
        self.encrypted = key is not None
        self._checkpointer: Checkpointer | None = None
        conn = open_connection(self.path, key)
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        try:
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("PRAGMA cache_size=-65536")
            # a batch can write more pages than the default checkpoint size: don't checkpoint every commit
            conn.execute("PRAGMA wal_autocheckpoint=20000")
            self._migrate()
        except BaseException:
            conn.close()  # a read-only or full disk, say: nothing is left open
            raise
        self.lock = threading.RLock()
        self._sites: dict[str, int] = {}
        self._devices: dict[int, str] = {}
        self._authors: dict[tuple[str, str, int], int] = {}
        self._author_rows: dict[int, tuple[str, str, int]] = {}
        self._ready: dict[int, Prepared] = {}  # see ``packed``
        self._rewrites = 0  # see ``op_log_version``
        self._saved: Counter[str] = Counter()  # see ``records_version``
        self._turned_dead: list[int] = []  # see ``turned_dead``
        self._ready_version: tuple[int, int] | None = None
        # the op rows this connection inserted last: see ``written_after``
        self._written: list[list[Any]] = []  # each apply's rows, flat, _OP_WIDTH values a row
        self._written_wanted = False  # whether anyone asks: until then nothing is kept
        self._written_n = 0
        self._written_dead: set[tuple[int, int, str]] = set()  # (site id, counter, record) superseded
        self._written_rewrites = 0
        # the rows (``OP_COLUMNS``) of the first ``_written_built`` applies, by their record's unit
        self._written_rows: dict[str | None, list[tuple[Any, ...]]] = {}
        self._written_built = 0
        # the records this connection wrote last, as stored: see ``_stored``
        self._recent: dict[str, _Kept] = {}
        self._recent_max = recent_records
        self._data_version = -1
        self._checkpointer = (Checkpointer(self.path) if checkpoint_thread and key is None
                              and self.path != ":memory:" and not self.path.startswith("file:") else None)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.conn.close()

    def _migrate(self) -> None:
        """Create the tables and indexes, and bring a database made by an older version up to date, in one
        transaction: a failure (a read-only or full disk, say) leaves the file as it was, and raises. A
        database already up to date is only read. Nothing is lost"""
        conn = self.conn
        refs = [f"ref_{f}" for f in REF_FIELDS]

        def columns() -> tuple[set[str], set[str]]:
            return ({r[1] for r in conn.execute("PRAGMA table_info(records)")},
                    {r[1] for r in conn.execute("PRAGMA table_info(ops)")})

        def current() -> bool:
            if not _OBJECTS <= {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}:
                return False
            records, ops = columns()
            return "log" in records and "unit" in ops and records.issuperset(refs)

        if current():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in _TABLES:
                conn.execute(sql)
            records, ops = columns()  # another process may have migrated it while this one waited
            if "log" not in records:
                # before the log column, a record's ops were found through an index on ops (record)
                conn.execute("ALTER TABLE records ADD COLUMN log TEXT NOT NULL DEFAULT '[]'")
                conn.execute(
                    "UPDATE records SET log = (SELECT json_group_array(seq) FROM"
                    " (SELECT seq FROM ops WHERE ops.record = records.id ORDER BY seq))")
                conn.execute("DROP INDEX IF EXISTS ops_record")
            if "unit" not in ops:
                conn.execute("ALTER TABLE ops ADD COLUMN unit TEXT")
                conn.execute("UPDATE ops SET unit = (SELECT unit FROM records WHERE records.id = ops.record)")
            if not records.issuperset(refs):
                # before the ref_ columns (2026-12-03), indexes on json_extract(data, ...) found them
                for f in REF_FIELDS:
                    conn.execute(f"DROP INDEX IF EXISTS records_{f}")
                    if f"ref_{f}" not in records:
                        conn.execute(f"ALTER TABLE records ADD COLUMN ref_{f} TEXT")
                for f, colls in REF_FIELDS.items():
                    value = f"json_extract(data, '$.{f}')"
                    conn.execute(
                        f"UPDATE records SET ref_{f} = {value} WHERE coll IN ({','.join('?' * len(colls))})"
                        f" AND json_type(data, '$.{f}') = 'text' AND {value} != ''", colls)
            for sql in _INDEXES:
                conn.execute(sql)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
            (version,) = self.conn.execute("PRAGMA data_version").fetchone()
            if version != self._data_version:  # another connection wrote: what this one kept may be stale
                self._recent.clear()
                self._drop_written()
                self._data_version = version
            try:
                yield self.conn
                self.conn.execute("COMMIT")  # a commit that fails is rolled back like the rest
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._forget_ids()
                self._rewrites += 1  # what it noted in ``_turned_dead`` did not happen
                raise
            if self._checkpointer is not None:
                self._checkpointer.poke()

    def _forget_ids(self) -> None:
        # ids handed out inside a rolled-back transaction do not exist: drop the caches (the rows kept for
        # ``written_after`` go at the next apply: the caller counts a rewrite)
        self._recent.clear()
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

    def op_log_version(self) -> tuple[int, int]:
        """Changes whenever ops already held change, but for turning dead (``turned_dead``): their unit
        filled in, a clock re-stamped, an op dropped, a transaction rolled back, or anything committed by
        another connection. New ops alone leave it as it is. Caches of the op log
        (``server.pullcache``) compare it."""
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        return version, self._rewrites

    def records_version(self, coll: str) -> tuple[int, int, int]:
        """Changes whenever a record of ``coll`` may have changed: this connection wrote records of it
        (counted when written, so also in a transaction that then rolls back), or anything that changes
        ``op_log_version`` (another connection's commit, a rollback, records forgotten). Writes of other
        collections leave it as it is. Caches of what one collection's records give (the workbench's
        duplicates and residents list) compare it."""
        return (*self.op_log_version(), self._saved[coll])

    def turned_dead(self, mark: int) -> tuple[list[int], int]:
        """The sequence numbers of held ops that turned dead since ``mark`` (a later op named one in
        ``pred`` when it was no longer live, as concurrent edits do), and the mark for next time. A
        rolled-back transaction may have noted some that did not happen: it changes ``op_log_version``,
        so a caller that compares that first sees only committed ones."""
        return self._turned_dead[mark:], len(self._turned_dead)

    def author_of(self, aid: int) -> tuple[str, str, int]:
        "The (user, unit, tier) of an author id"
        return self._author(aid)

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
        with self.transaction(), no_cycles():
            return self._apply(ops, dead)

    def _apply(self, ops: Sequence[Op], dead: Collection[OpId]) -> Applied:
        result = Applied()
        if not ops:
            return result
        conn = self.conn
        op_sites = {op.site for op in ops}
        devices = set(op_sites)
        for op in ops:
            for d, _ in op.pred:
                devices.add(d)
        sites = self.site_ids(devices)

        # 1. drop duplicates, inside the batch and those already held; note the new ops that an op
        #    held here already superseded: they arrive dead
        by_site: dict[int, dict[int, Op]] = {}
        if len(op_sites) == 1:  # one device's batch, as a tablet pushes: its counters, each once
            one = dict(zip(map(_counter, ops), ops))
            if len(one) == len(ops):
                by_site[sites[ops[0].site]] = one
        if not by_site:
            by_site = defaultdict(dict)
            for op in ops:  # the first of an op sent twice in the batch
                by_site[sites[op.site]].setdefault(op.counter, op)
        new: list[Op] = []
        held_killed: set[tuple[int, int, str]] = set()
        for sid, batch in by_site.items():
            lo, hi = min(batch), max(batch)
            have = {r[0] for r in conn.execute(
                "SELECT counter FROM ops WHERE site = ? AND counter BETWEEN ? AND ?", (sid, lo, hi))}
            if have:
                fresh: Collection[int] = [c for c in batch if c not in have]
                new.extend(batch[c] for c in fresh)
                if fresh:
                    lo, hi = min(fresh), max(fresh)
            else:  # nothing held yet: all of it is new
                fresh = batch.keys()
                new.extend(batch.values())
            if fresh:
                held_killed.update((sid, r[0], r[1]) for r in conn.execute(
                    "SELECT counter, record FROM superseded WHERE site = ? AND counter BETWEEN ? AND ?",
                    (sid, lo, hi)))
        result.duplicates = len(ops) - len(new)
        if not new:
            return result

        # 2. what the batch supersedes: per record, per field of the op that names it
        kills: dict[str, dict[str, set[OpId]]] = {}
        batch_kills: set[tuple[str, int, str]] = set()
        for op in new:
            if op.pred:
                ids = kills.setdefault(op.record, {}).setdefault(op.field, set())
                for d, c in op.pred:
                    ids.add((d, c))
                    batch_kills.add((d, c, op.record))

        # 3. the touched records as stored; each field's live ops stay undecoded until needed
        old: dict[str, _Old] = {}
        states: dict[str, LazyState] = {}
        for rid, stored, blob, _ in self._stored({op.record for op in new}):
            old[rid] = stored
            states[rid] = _lazy_decode(blob)

        # 4. op rows and live entries
        (base,) = conn.execute("SELECT coalesce(max(seq), 0) FROM ops").fetchone()
        seq = base
        op_values: list[Any] = []  # the op rows' values one after another, _OP_WIDTH to a row
        colls: dict[str, str] = {}
        record_seq: dict[str, int] = {}
        logs: dict[str, list[str]] = {}
        touched: dict[str, set[str]] = {}
        author_ids: dict[tuple[str, str, int], int] = {}
        dead_set = set(dead)
        pending: set[tuple[int, int, str]] = set()
        encode_into = _json_encode_into  # as ``_json_bound`` does, inline
        last_key: tuple[str, str, int] | None = None
        aid = 0
        for op in new:
            seq += 1
            key = (op.user, op.unit, op.tier)
            if key != last_key:  # a batch mostly comes from one author
                aid = author_ids.get(key) or author_ids.setdefault(key, self._author_id(*key))
                last_key = key
            sid = sites[op.site]
            value = op.value
            value_json: bytearray | None = None
            if value is not None:
                value_json = bytearray()
                encode_into(value, value_json)
            pred = op.pred
            pred_json: bytearray | str = ""  # not NULL: sqlite3 binds None by a slower path
            if pred:
                pred_json = bytearray()
                encode_into(pred, pred_json)
            rid = op.record
            # the record's unit (the last item) is known once the batch is materialised
            op_values += (seq, sid, op.counter, op.hlc, op.coll, rid, op.field, op.kind,
                          value_json, pred_json, aid, None)
            record_seq[rid] = seq
            log = logs.get(rid)
            if log is None:
                log = logs[rid] = []
                if rid not in states:
                    states[rid] = {}
                    colls[rid] = op.coll
                else:
                    o = old.get(rid)
                    colls[rid] = o[0] if o else op.coll
                touched[rid] = {op.field}
            else:
                touched[rid].add(op.field)
            log.append(str(seq))
            if op.kind == REMOVE:
                continue
            if batch_kills and (op.site, op.counter, rid) in batch_kills:
                continue
            if held_killed and (sid, op.counter, rid) in held_killed:
                continue
            if dead_set and (op.site, op.counter) in dead_set:
                pending.add((sid, op.counter, rid))
                continue
            state = states[rid]
            entry = Entry(op.site, op.counter, op.hlc, op.tier, op.kind, value, seq)
            lst = state.get(op.field)
            if lst is None:
                state[op.field] = [entry]
            else:
                if type(lst) is msgspec.Raw:
                    lst = state[op.field] = _entries_decode(lst)
                lst.append(entry)

        # 5. superseded ops leave their records' live entries. One not found live there is either held
        #    and already superseded, or not held yet: it is noted, so that it arrives dead
        new_ids = {(op.site, op.counter) for op in new} if kills else set()
        named_gone: list[tuple[int, int, str]] = []
        for rid, by_field in kills.items():
            state = states[rid]
            fields = touched[rid]
            left: set[OpId] = set()
            for name, named in by_field.items():
                ids = set(named)
                if _drop(state, name, ids):
                    fields.add(name)
                left |= ids
            left -= new_ids  # ops of this batch never went live
            if left:
                for name in list(state):  # a delete names the live ops of every field
                    if _drop(state, name, left):
                        fields.add(name)
                    if not left:
                        break
                gone = [(sites[d], c, rid) for d, c in left]
                pending.update(gone)
                named_gone.extend(gone)
        if pending:
            conn.executemany("INSERT OR IGNORE INTO superseded VALUES (?,?,?)", pending)
        for sid, c, rid in named_gone:  # few: concurrent edits, and ops that come out of order
            row = conn.execute("SELECT seq FROM ops WHERE site = ? AND counter = ? AND record = ?",
                               (sid, c, rid)).fetchone()
            if row is not None:  # held, and dead from now on
                self._turned_dead.append(row[0])
        if len(self._turned_dead) > 100_000:  # a long-running node: start the list again
            self._turned_dead.clear()
            self._rewrites += 1  # whoever read the list reads the op log afresh

        # 6. materialise the touched records; each op row gets its record's unit
        units = self._save_records(states, colls, old, record_seq, touched, logs)
        for i in range(5, len(op_values), _OP_WIDTH):  # the record id is the 6th value, its unit the 12th
            op_values[i + 6] = units[op_values[i]]
        insert_values(conn, "INTO ops", _OP_WIDTH, op_values, _OP_ROW)
        self._note_written(op_values, pending, held_killed)

        # 7. per-site high-water marks
        for sid, batch in by_site.items():
            self._advance_site(sid, batch)
        result.new = len(new)
        result.records = len(states)
        result.first_seq = base + 1
        result.last_seq = seq
        return result

    def _stored(self, records: Iterable[str]) -> Iterator[tuple[str, _Old, bytes | bytearray, int]]:
        """The stored rows of these records: (id, what ``_save_records`` needs of it, state blob, seq).

        Those this connection wrote lately come from memory: reading a record back costs more than the
        rest of an edit's apply (about 11 µs a record, 2026-11-28). What is kept is exactly what was
        written; it goes when a transaction rolls back or another connection writes."""
        recent = self._recent
        missing = []
        for rid in records:
            kept = recent.get(rid)
            if kept is None:
                missing.append(rid)
            else:
                yield rid, kept[0], kept[1], kept[2]
        for chunk in _chunks(missing):
            marks = ",".join("?" * len(chunk))
            for rid, coll, unit, unit_seq, nconf, deleted, data, state, seq, log in self.conn.execute(
                "SELECT id, coll, unit, unit_seq, conflicts, deleted, data, state, seq, log FROM records"
                f" WHERE id IN ({marks})", chunk,
            ):
                yield rid, (coll, unit, unit_seq, nconf, deleted, data, log), state, seq

    def _keep(self, written: list[tuple[str, _Kept]]) -> None:
        "Keep the records just written for ``_stored``, the oldest going past ``recent_records``"
        if not self._recent_max:
            return
        recent = self._recent
        for rid, row in written:
            recent.pop(rid, None)  # to the end: the most recent last
            recent[rid] = row
        if len(recent) > self._recent_max:
            keep = max(1, self._recent_max * 3 // 4)
            self._recent = dict(itertools.islice(recent.items(), len(recent) - keep, None))

    def _save_records(
        self,
        states: dict[str, LazyState],
        colls: dict[str, str],
        old: dict[str, _Old],
        record_seq: dict[str, int],
        touched: dict[str, set[str]] | None = None,
        logs: dict[str, list[str]] | None = None,
    ) -> dict[str, str | None]:
        """Materialise records from their live ops and write them, their conflicts and their moves.

        ``touched`` names the fields whose live ops changed. A record that was stored without open
        conflicts and not deleted, and whose ``_deleted`` did not change, is patched: only the touched
        fields of its stored values are recomputed. Every other record is materialised whole.
        ``logs`` gives each record's new op sequence numbers, appended to its ``log``. Returns each
        record's unit."""
        conn = self.conn
        schema = self.schema
        inserts = []
        updates = []
        moved = []
        conflict_records: list[str] = []
        conflict_rows: list[tuple[str, str, str, str | None, int]] = []
        move_rows: list[tuple[int, str, str | None, str | None]] = []
        units: dict[str, str | None] = {}
        found_unit: list[tuple[str | None, str]] = []  # (unit, log) of records held before their unit
        written: list[tuple[str, _Kept]] = []
        self._saved.update({colls[rid] for rid in states})
        for rid, state in states.items():
            coll = colls[rid]
            o = old.get(rid)
            seq = record_seq[rid]
            fields = touched.get(rid) if touched is not None else None
            if o is not None and fields is not None and not o[3] and not o[4] and DELETED not in fields:
                data = _values_decode(o[5])
                conflicts = []
                for name in fields:
                    lst = state.get(name)
                    if lst is None:
                        data.pop(name, None)
                        continue
                    if type(lst) is msgspec.Raw:
                        lst = state[name] = _entries_decode(lst)
                    has, value, conflict = _field_value(schema, coll, name, lst)
                    if has:
                        data[name] = value
                    else:
                        data.pop(name, None)
                    if conflict:
                        conflicts.append(name)
                conflicts.sort()
                unit = o[1]
                ufield = _unit_field(schema, coll)
                if ufield in fields:
                    u = data.get(ufield)
                    unit = u if isinstance(u, str) else None
                deleted = False
            else:
                for name, lst in state.items():
                    if type(lst) is msgspec.Raw:
                        state[name] = _entries_decode(lst)
                m = materialize(coll, state, schema)
                data, unit, deleted, conflicts = m.data, m.unit, m.deleted, m.conflicts
            units[rid] = unit
            old_unit = o[1] if o else None
            unit_seq = o[2] if o else 0
            data_json = _json_bound(data)
            blob = _state_blob(state)
            added = logs.get(rid) if logs is not None else None
            if o is None:
                log = "[" + ",".join(added or ()) + "]"
            elif added:
                log = (o[6][:-1] + "," if o[6] != "[]" else "[") + ",".join(added) + "]"
            else:
                log = o[6]
            if unit != old_unit:
                unit_seq = seq
                if old_unit is not None:  # a record's first unit is not a move
                    move_rows.append((seq, rid, old_unit, unit))
                elif o is not None:
                    # unless ops of it were held before, without a unit: tablets whose cursors passed them
                    # get it whole, as a record that moved in
                    found_unit.append((unit, o[6]))
                    move_rows.append((seq, rid, None, unit))
            # what is kept holds the values as the UTF-8 JSON written: half the memory of the text
            kept: _Old = (coll, unit, unit_seq, len(conflicts), int(deleted), data_json, log)
            written.append((rid, (kept, blob, seq)))
            if o is None:
                inserts.append((rid, coll, unit, int(deleted), len(conflicts), data_json, blob, seq, unit_seq, log,
                                *_refs(coll, data)))
            elif unit != old_unit or fields is None or not fields.isdisjoint(REF_FIELDS):
                moved.append((unit, unit_seq, int(deleted), len(conflicts), data_json, blob, seq, log,
                              *_refs(coll, data), rid))
            else:
                updates.append((int(deleted), len(conflicts), data_json, blob, seq, log, rid))
            if (o and o[3]) or conflicts:
                conflict_records.append(rid)
                conflict_rows.extend((rid, f, coll, unit, seq) for f in conflicts)
        insert_rows(conn, _INSERT_RECORDS, inserts, _INSERT_RECORD)
        # an update that leaves the unit and the ref_ columns alone does not name them, so SQLite leaves
        # their indexes alone: most edits
        if updates:
            conn.executemany("UPDATE records SET deleted = ?, conflicts = ?, data = CAST(? AS TEXT),"
                             " state = ?, seq = ?, log = ? WHERE id = ?", updates)
        if moved:
            conn.executemany("UPDATE records SET unit = ?, unit_seq = ?, deleted = ?, conflicts = ?,"
                             f" data = CAST(? AS TEXT), state = ?, seq = ?, log = ?, {_REF_SET} WHERE id = ?", moved)
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
        if found_unit:
            # ops that arrived before their record's unit op take the unit now, so pulls find them
            self._rewrites += 1
            conn.executemany("UPDATE ops SET unit = ? WHERE seq IN (SELECT value FROM json_each(?))"
                             " AND unit IS NULL", found_unit)
        self._keep(written)
        return units

    def _advance_site(self, sid: int, batch: dict[int, Op]) -> None:
        contiguous, max_counter, last_hlc = self.conn.execute(
            "SELECT contiguous, max_counter, last_hlc FROM sites WHERE id = ?", (sid,)
        ).fetchone()
        max_counter = max(max_counter, max(batch))
        last_hlc = max(last_hlc, max(map(_hlc, batch.values())))
        if contiguous + 1 in batch:
            nxt = contiguous + 1
            while nxt in batch:
                nxt += 1
            # ops held from earlier batches (after a gap) may continue the run
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
        has left the device), keeping each at or under ``ceiling`` and keeping their order, which wins: each
        is at least one more than the one before. Used when a tablet learns its clock was wrong. Returns
        how many ops changed."""
        with self.transaction() as conn:
            self._rewrites += 1  # op rows change: the ops ``packed`` keeps go
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
            states: dict[str, LazyState] = {}
            colls: dict[str, str] = {}
            old: dict[str, _Old] = {}
            record_seq: dict[str, int] = {}
            for rid, o, blob, seq in self._stored(touched):
                st = _state_decode(blob)
                for es in st.values():
                    for e in es:
                        if e.device == device and e.counter in new_hlc:
                            e.hlc = new_hlc[e.counter]
                states[rid], colls[rid], record_seq[rid] = st, o[0], seq
                old[rid] = o
            self._save_records(states, colls, old, record_seq)  # whole: clocks decide winners
            conn.execute("UPDATE sites SET last_hlc = ? WHERE id = ?", (prev, sid))
            return len(rows)

    def forget(self, records: Sequence[str], *, keep_own: str | None = None) -> None:
        """Drop records and their ops from this replica: they left its scope (they were not deleted).
        If they come back, the node sends their ops whole. The ops device ``keep_own`` wrote (the
        tablet's own) are kept aside, in ``kept_own``: ``packed_own`` still sends them, to a node
        restored from a backup that lacks them. Nothing else reads them."""
        with self.transaction() as conn:
            self._rewrites += 1  # op rows go, and their sequence numbers may be used again
            for rid in records:
                self._recent.pop(rid, None)
            own = self._site_id(keep_own) if keep_own else None
            for chunk in _chunks(list(records)):
                marks = ",".join("?" * len(chunk))
                of_records = f"SELECT j.value FROM records r, json_each(r.log) j WHERE r.id IN ({marks})"
                if own is not None:
                    conn.execute("INSERT OR IGNORE INTO kept_own SELECT site, counter, hlc, coll, record, field, kind,"
                                 f" value, pred, author FROM ops WHERE site = ? AND seq IN ({of_records})",
                                 [own, *chunk])
                conn.execute(f"DELETE FROM ops WHERE seq IN ({of_records})", chunk)
                for table, col in (("records", "id"), ("conflicts", "record"), ("superseded", "record")):
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
        naming: tuple[str, str] | None = None,
    ) -> list[Record]:
        """Current records, by collection and by unit: one ``unit``, or a code range ``units``
        (``sync.units.descendant_range`` gives the range of every village under a township); with
        ``naming=(field, id)``, only those whose ``field`` (one of ``REF_FIELDS``: a need's or service's
        ``person``, a service's or escalation's ``need``, a merged resident's ``merged_into``) names the record ``id``,
        found through an index rather than by reading every record."""
        where, params = _where(coll=coll, unit=unit, units=units)
        source = "records"
        if naming is not None:
            field, rid = naming
            source, named = _naming(field)
            where += (" AND " if where else " WHERE ") + f"{named} = ?"
            params.append(rid)
        if not include_deleted:
            where += (" AND " if where else " WHERE ") + "deleted = 0"
        sql = f"SELECT id, coll, unit, deleted, data, seq, conflicts FROM {source}" + where
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._with_conflicts([self._record(r) for r in self.conn.execute(sql, params)])

    def count_naming(self, field: str, ids: Iterable[str], colls: Sequence[str],
                     units: tuple[str, str] | None = None) -> Counter[tuple[str, str]]:
        """How many current records of each of ``colls`` name each of ``ids`` by ``field`` (one of
        ``REF_FIELDS``), by (id, collection): through the field's index, as ``records(naming=...)``"""
        counts: Counter[tuple[str, str]] = Counter()
        for chunk in _chunks(sorted(ids)):
            where, params = _where(units=units)
            source, named = _naming(field)
            sql = (f"SELECT {named}, coll, COUNT(*) FROM {source}"
                   f"{where}{' AND' if where else ' WHERE'} {named} IN ({','.join('?' * len(chunk))}) AND deleted = 0"
                   f" AND coll IN ({','.join('?' * len(colls))}) GROUP BY 1, 2")
            for rid, coll, n in self.conn.execute(sql, (*params, *chunk, *colls)):
                counts[(rid, coll)] = n
        return counts

    def units_held(self, colls: Sequence[str], lo: str, hi: str) -> list[str]:
        """The units from ``lo`` to ``hi`` that hold a current record of one of ``colls``, in order: each found
        by one step along the ``(coll, unit)`` index from the one before, so a township's few dozen villages
        cost a few dozen lookups, not a read of its hundreds of thousands of records"""
        found: set[str] = set()
        for coll in colls:
            at, op = lo, ">="
            while True:
                (unit,) = self.conn.execute(
                    f"SELECT MIN(unit) FROM records WHERE coll = ? AND unit {op} ? AND unit <= ? AND deleted = 0",
                    (coll, at, hi)).fetchone()
                if unit is None:
                    break
                found.add(unit)
                at, op = unit, ">"
        return sorted(found)

    def records_by_id(self, ids: Sequence[str]) -> list[Record]:
        """The records of these ids in their order (deleted ones too; ids of none are left out): a page
        that picked and ordered its records' ids in SQL decodes only those it shows"""
        found: dict[str, Record] = {}
        for chunk in _chunks(list(ids)):
            found.update((row[0], self._record(row)) for row in self.conn.execute(
                "SELECT id, coll, unit, deleted, data, seq, conflicts FROM records"
                f" WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return self._with_conflicts([found[i] for i in ids if i in found])

    def _with_conflicts(self, records: list[Record]) -> list[Record]:
        "The records, each with its conflicted fields named (``_record`` leaves their count)"
        for rec in records:
            rec.conflicts = self._conflict_fields(rec.id) if rec.conflicts else []
        return records

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

    def last_value(self, record: str, field: str) -> Any:
        "The last value a field was set to, from the op log: what a deleted (or merged) record was called"
        for h in reversed(self.history(record)):
            if h.field == field and h.new is not None:
                return h.new
        return None

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
        "The ids of a record's live ops (of one field, or all), sorted; used only by tests"
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
        """Ops accepted after local sequence ``seq``, in order, with their sequence numbers (used only by tests
        and benchmarks)"""
        rows = self.conn.execute(
            "SELECT seq FROM ops WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        seqs = [r[0] for r in rows]
        return list(zip(seqs, self.ops_by_seq(seqs)))

    def record_seqs(self, record: str) -> list[int]:
        "The local sequence numbers of a record's ops, in order"
        row = self.conn.execute("SELECT log FROM records WHERE id = ?", (record,)).fetchone()
        return cast(list[int], _json_decode(row[0])) if row else []

    def record_ops(self, record: str) -> list[Op]:
        return self.ops_by_seq(self.record_seqs(record))

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
        "The live ops of these records: enough for another replica to hold the same state (used only by tests)"
        return self.ops_by_seq(self.live_seqs(records))

    def _note_written(self, rows: list[Any], superseded: set[tuple[int, int, str]],
                      held_superseded: set[tuple[int, int, str]]) -> None:
        """Keep an apply's op rows (flat) for ``written_after``, with what it noted superseded: ops of any
        apply kept (``superseded``), and its own new ops that were superseded before they came
        (``held_superseded``). A store nobody asks (a tablet's; a node's taking pushes alone) keeps
        nothing: the collector would walk the rows kept, 1.4% of a 10,000-record push's instructions."""
        if not self._written_wanted:
            return
        if self._rewrites != self._written_rewrites:
            self._drop_written()  # held ops changed, or a transaction rolled back
        self._written.append(rows)
        self._written_n += len(rows) // _OP_WIDTH
        self._written_dead |= held_superseded
        self._written_dead |= superseded
        gone = 0
        while self._written_n > WRITTEN_OPS and len(self._written) > 1:
            self._written_n -= len(self._written.pop(0)) // _OP_WIDTH
            gone += 1
        if gone and self._written_built >= gone:  # the oldest go from the rows built too
            self._written_built -= gone
            first = self._written[0][0]
            for unit, kept in list(self._written_rows.items()):
                cut = bisect.bisect_left(kept, first, key=_seq_of)
                if cut == len(kept):
                    del self._written_rows[unit]
                else:
                    del kept[:cut]
        elif gone:
            self._written_rows, self._written_built = {}, 0
        if len(self._written_dead) > 10 * WRITTEN_OPS:
            self._drop_written()

    def _drop_written(self) -> None:
        self._written, self._written_n, self._written_dead = [], 0, set()
        self._written_rows, self._written_built = {}, 0
        self._written_rewrites = self._rewrites

    def written_after(self, after: int, top: int,
                      wanted: Callable[[str], bool]) -> dict[str, list[tuple[Any, ...]]] | None:
        """The op rows after seq ``after``, up to ``top``, of the units ``wanted`` says yes to, from memory,
        when this connection inserted them all lately (about the last ``WRITTEN_OPS``) and ``top`` is the
        last: by their record's unit (``ops.unit``), in seq order, each row ``OP_COLUMNS`` and whether
        the op is superseded (as the ``superseded`` table says). None when memory cannot say: in a
        transaction, after a rollback, a rewrite of held ops or another connection's write, or when
        ``after`` lies before what is kept or ``top`` is not its last.

        A node catching up its pull streams after a commit reads back what it wrote; this spares it the
        reading."""
        self._written_wanted = True
        written = self._written
        if self.conn.in_transaction or not written or self._rewrites != self._written_rewrites:
            return None
        if self.conn.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            return None  # another connection wrote since: superseded marks may have changed too
        first, last = written[0][0], written[-1][-_OP_WIDTH]
        if not first - 1 <= after <= top or last != top or last - first + 1 != self._written_n:
            return None  # (the last: seqs not all this connection's, which the checks above rule out)
        by_unit = self._written_rows
        for flat in written[self._written_built:]:
            for i in range(0, len(flat), _OP_WIDTH):
                row = tuple(flat[i:i + _OP_WIDTH - 1])
                unit = flat[i + _OP_WIDTH - 1]
                rows = by_unit.get(unit)
                if rows is None:
                    by_unit[unit] = [row]
                else:
                    rows.append(row)
        self._written_built = len(written)
        dead = self._written_dead  # superseded marks can come later: looked up for the rows asked only
        out = {}
        for unit, rows in by_unit.items():
            if unit is None or rows[-1][0] <= after or not wanted(unit):
                continue
            if rows[0][0] <= after:
                rows = rows[bisect.bisect_right(rows, after, key=_seq_of):]
            out[unit] = [(*r, (r[1], r[2], r[5]) in dead) for r in rows]
        return out

    #: the columns of an op row as ``pack`` takes them
    OP_COLUMNS = "seq, site, counter, hlc, coll, record, field, kind, value, pred, author"
    #: Most ops ``packed`` keeps decoded
    READY_OPS = 50_000

    def op_rows(self, seqs: Iterable[int]) -> list[tuple[Any, ...]]:
        "The rows (``OP_COLUMNS``) of the ops at these sequence numbers, in order"
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(sorted(set(seqs))):
            marks = ",".join("?" * len(chunk))
            rows.extend(self.conn.execute(
                f"SELECT {self.OP_COLUMNS} FROM ops WHERE seq IN ({marks}) ORDER BY seq", chunk))
        return rows

    def pack(self, rows: Iterable[tuple[Any, ...]], dead: Collection[int] = ()) -> OpBatch:
        """Op rows (``OP_COLUMNS``) packed for the wire without building ``Op`` objects; ``dead`` names the
        sequence numbers to flag as superseded"""
        return pack_prepared(prepare_rows(rows), self.device_of, self._author, dead)

    def packed(self, seqs: Sequence[int], dead: Collection[int] = ()) -> OpBatch:
        """The ops at these sequence numbers, in order, packed for the wire.

        Ops read for a pull are kept decoded (up to ``READY_OPS`` of them), so the tablets of a village
        that pull the same new ops have them read and decoded once. An op row never changes once
        committed, except through ``restamp`` and ``forget``: they change ``op_log_version``, as a
        commit by another connection does, and that drops the kept ops."""
        with self.lock:
            version = self.op_log_version()
            ready = self._ready
            if version != self._ready_version:
                ready.clear()
                self._ready_version = version
            order = sorted(set(seqs))
            missing = [s for s in order if s not in ready]
            read = dict(prepare_rows(self.op_rows(missing))) if missing else {}
            items = [(s, p) for s in order if (p := ready.get(s) or read.get(s)) is not None]
            if read and not self.conn.in_transaction:  # only committed rows are kept
                ready.update(read)
                if len(ready) > self.READY_OPS:  # keep the newer half: the oldest read go first
                    self._ready = dict(list(ready.items())[len(ready) - self.READY_OPS // 2:])
            return pack_prepared(items, self.device_of, self._author, dead)

    def packed_own(self, device: str, after: int, limit: int) -> tuple[OpBatch, list[int]]:
        """A device's ops after counter ``after`` (at most ``limit``, in counter order) packed for the wire
        straight from their rows, with their counters; those ``forget`` kept aside among them"""
        sid = self._site_id(device)
        if sid is None:
            return OpBatch(), []
        sql = f"SELECT {self.OP_COLUMNS} FROM ops WHERE site = ? AND counter > ?"
        params: list[Any] = [sid, after]
        if self._kept_after(sid, after):  # rarely: only after a node was restored from a backup
            sql += (f" UNION ALL SELECT 0, site, counter, hlc, coll, record, field, kind, value, pred, author"
                    f" FROM kept_own k WHERE site = ? AND counter > ? AND {_NOT_HELD}")
            params += [sid, after]
        rows = self.conn.execute(sql + " ORDER BY counter LIMIT ?", [*params, limit]).fetchall()
        return self.pack(rows), [r[2] for r in rows]

    def own_after(self, device: str, counter: int) -> int:
        "How many ops a device wrote after ``counter``, those ``forget`` kept aside included"
        sid = self._site_id(device)
        if sid is None:
            return 0
        (n,) = self.conn.execute("SELECT count(*) FROM ops WHERE site = ? AND counter > ?", (sid, counter)).fetchone()
        if self._kept_after(sid, counter):
            (k,) = self.conn.execute(f"SELECT count(*) FROM kept_own k WHERE site = ? AND counter > ? AND {_NOT_HELD}",
                                     (sid, counter)).fetchone()
            n += k
        return int(n)

    def has_own_after(self, device: str, counter: int) -> bool:
        "Whether a device wrote any op after ``counter`` (``own_after`` > 0, without counting them all)"
        sid = self._site_id(device)
        if sid is None:
            return False
        return any(self.conn.execute(sql, (sid, counter)).fetchone() for sql in (
            "SELECT 1 FROM ops WHERE site = ? AND counter > ? LIMIT 1",
            f"SELECT 1 FROM kept_own k WHERE site = ? AND counter > ? AND {_NOT_HELD} LIMIT 1"))

    def _kept_after(self, site: int, counter: int) -> bool:
        return self.conn.execute("SELECT 1 FROM kept_own WHERE site = ? AND counter > ? LIMIT 1",
                                 (site, counter)).fetchone() is not None

    def _site_id(self, device: str) -> int | None:
        "A device's local number, if it has one (``site_ids`` gives new devices one)"
        row = self.conn.execute("SELECT id FROM sites WHERE device = ?", (device,)).fetchone()
        return None if row is None else int(row[0])

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
        sid = self._site_id(device)
        if sid is None:
            return []
        gaps, expect = [], 1
        for (c,) in self.conn.execute("SELECT counter FROM ops WHERE site = ? ORDER BY counter", (sid,)):
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
        seqs = self.record_seqs(record)
        ops = self.ops_by_seq(seqs)
        by_id = {o.id: o for o in ops}
        out = []
        for seq, o in zip(seqs, ops):
            old = [by_id[p].value for p in o.pred if p in by_id and by_id[p].field == o.field]
            out.append(Change(
                seq, o.site, o.counter, o.hlc, o.user, o.unit, TIER_NAME.get(o.tier, str(o.tier)),
                o.field, {SET: "set", ADD: "add", REMOVE: "remove"}.get(o.kind, str(o.kind)), old, o.value,
            ))
        return out

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


def _naming(field: str) -> tuple[str, str]:
    """The table as a query naming records by ``field`` (one of ``REF_FIELDS``) reads it, and the column to
    compare with the id: the field's index named, as without statistics SQLite would rather take
    records_coll's (coll, unit range)"""
    if field not in REF_FIELDS:
        raise ValueError(f"records naming another by {field!r}: only {', '.join(REF_FIELDS)} are indexed")
    return f"records INDEXED BY records_ref_{field}", f"ref_{field}"


def _where(*, units: tuple[str, str] | None = None, **equal: str | None) -> tuple[str, list[str]]:
    "A WHERE clause for the filters given: columns equal to values, and ``unit`` within a code range"
    clauses = [f"{col} = ?" for col, v in equal.items() if v is not None]
    params = [v for v in equal.values() if v is not None]
    if units is not None:
        clauses.append("unit BETWEEN ? AND ?")
        params.extend(units)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


#: Rows per statement in ``insert_values``.
_ROWS_PER_INSERT = 50
_insert_sql: dict[tuple[str, str, int], str] = {}
#: Values in a row of ``ops``, and the SQL of one: value and pred come as JSON in ``bytearray``s
_OP_WIDTH = 12
_OP_ROW = "(?,?,?,?,?,?,?,?,CAST(? AS TEXT),CAST(? AS TEXT),?,?)"


def insert_values(conn: sqlite3.Connection, into: str, width: int, values: list[Any],
                  row: str | None = None) -> None:
    """``INSERT {into} VALUES ...`` of rows of ``width`` values, given one row after another in
    ``values``, as ``executemany`` would insert them, in statements of 50 rows: SQLite then runs a
    fiftieth as many statements for the same rows (about a quarter less CPU for the store's op rows,
    measured alone). A row that breaks a constraint rolls the caller's whole transaction back (``INSERT
    OR ROLLBACK``): SQLite then keeps no statement journal to undo one statement alone, which cost the
    ingest benchmark about 0.8 KB of temporary-file writes an op and 7% of its CPU (2026-12-02).
    ``row``: the SQL of one row, ``(?,?,...)`` unless given (to cast a value, say); it has ``width``
    parameters."""
    one = row or "(" + ",".join("?" * width) + ")"
    step = width * _ROWS_PER_INSERT
    whole = len(values) - len(values) % step
    if whole:
        conn.executemany(_insert_statement(into, one, _ROWS_PER_INSERT),
                         [values[i:i + step] for i in range(0, whole, step)])
    if whole < len(values):
        conn.executemany(_insert_statement(into, one, 1),
                         [values[i:i + width] for i in range(whole, len(values), width)])


def insert_rows(
    conn: sqlite3.Connection, into: str, rows: Sequence[Sequence[Any]], row: str | None = None
) -> None:
    "``insert_values`` of rows given as rows, all of one width"
    if rows:
        insert_values(conn, into, len(rows[0]), list(itertools.chain.from_iterable(rows)), row)


def _insert_statement(into: str, one: str, rows: int) -> str:
    sql = _insert_sql.get((into, one, rows))
    if sql is None:
        sql = _insert_sql[(into, one, rows)] = f"INSERT OR ROLLBACK {into} VALUES " + ",".join([one] * rows)
    return sql


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


chunks = _chunks
