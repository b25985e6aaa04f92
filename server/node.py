"""The node: one township (or county, or city) replica, the devices enrolled to it, and the sync
exchange with tablets, independent of HTTP.

One exchange: check the caller and every op it sends, apply the batch in one transaction, acknowledge,
then answer with the ops since the caller's cursor that lie in its scope. A fresh tablet first receives
the current state of its village (the live ops of its records, page by page), not the whole history.

A tablet's scope is its village's records, plus the reference data (``unit``, ``catalogue``, ``notice``,
``task``) of the units above it, which it reads but may not write. A **link device** is the credential
an upper node (county, city) holds on this node: its unit is that upper node's unit, its tier that
node's tier. It may push reference data and escalation ops authored at its own node or relayed from
above (never by a lower tier), and it pulls only escalation ops from below: never a person, need or
service (see ``server/relay.py`` for the upper node's side).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import re
import secrets
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from sync import units as unitlib
from sync.disk import is_disk_full, read_only_file_system
from sync.edit import Editor
from sync.errors import (
    BadRequest,
    ClockAhead,
    CollectionForbidden,
    DeviceExists,
    EnrolmentMismatch,
    InvalidValue,
    NotFound,
    ReadOnly,
    StorageFull,
    SyncError,
    TooManyAttempts,
    DeviceRevoked,
    ForgedOp,
    OutOfScope,
    TooLarge,
    Unauthorized,
    VersionMismatch,
)
from sync.hlc import HLC, MAX_AHEAD_MS, pack, physical_ms
from sync.ops import Op
from sync.schema import ESCALATION_OPEN, LINK_COLLECTIONS, NEED_TRANSITIONS, REFERENCE_COLLECTIONS, SCHEMA
from sync.store import Store, chunks as _chunks, create_private, decode_state as _state_decode, no_cycles
from sync.types import DELETED, SET, TIER_RANK, Timestamp
from sync.wire import (
    MAX_UNSEEN,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Format,
    OpBatch,
    Spliced,
    SyncRequest,
    SyncResponse,
    compress,
    encode,
    pack_ops,
    spliced_body,
    unpack_ops,
)

from . import storage
from .duplicates import half_merged
from .pullcache import PullCache

_json = msgspec.json.Encoder().encode
#: an op row's dead flag, in a query of ``ops o``: some op named it in ``pred`` before it came here
_DEAD = ("EXISTS (SELECT 1 FROM superseded s WHERE s.site = o.site AND s.counter = o.counter"
         " AND s.record = o.record)")


def _not_own(after: int, pushed: tuple[int, int], own: int) -> list[tuple[str, list[Any]]]:
    """The ops after seq ``after`` but for the seqs a device's batch just took (``pushed``, low and high)
    and any other of its own, as one or two ranges of seq, each a condition with its parameters: the
    index on (unit, seq) then steps over the batch, where ``seq NOT BETWEEN`` walked through all of it
    (10,000 ops of a push, for each request)"""
    lo, hi = pushed
    if hi < lo or hi <= after:  # nothing pushed, or all of it before ``after``
        return [("seq > ? AND site != ?", [after, own])]
    ranges = [("seq > ? AND site != ?", [hi, own])]
    if lo > after + 1:
        ranges.insert(0, ("seq > ? AND seq < ? AND site != ?", [after, lo, own]))
    return ranges

_counter = operator.attrgetter("counter")
_hlc = operator.attrgetter("hlc")
_value = operator.attrgetter("value")


def _index(ops: Sequence[Op], op: Op) -> int:
    "Where ``op`` (this very object) is in ``ops``: for an error that names it"
    return next(i for i, o in enumerate(ops) if o is op)


#: Most ops one request may carry.
MAX_BATCH = 10000
#: Most ops one response carries.
MAX_PULL = 5000
#: Records per bootstrap page.
BOOTSTRAP_PAGE = 1000

_DEVICES_SQL = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user TEXT NOT NULL, unit TEXT NOT NULL,
    tier TEXT NOT NULL, created_at INTEGER NOT NULL, last_seen INTEGER, last_sync INTEGER,
    app_version TEXT, skew_ms INTEGER, pushed INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0, wipe INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS enrolments (
    code_hash TEXT PRIMARY KEY, unit TEXT NOT NULL, user TEXT NOT NULL, tier TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, device TEXT, reattach TEXT);
CREATE TABLE IF NOT EXISTS auth_failures (client TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS auth_failures_client ON auth_failures (client, at);
CREATE INDEX IF NOT EXISTS moves_new_unit ON moves (new_unit, seq);
CREATE INDEX IF NOT EXISTS moves_old_unit ON moves (old_unit, seq);
"""


def _migrate_devices(store: Store) -> None:
    "Columns added to ``devices`` since it was first made: add them to an existing database"
    with store.transaction() as c:
        have = {row[1] for row in c.execute("PRAGMA table_info(devices)")}
        if "pending" not in have:
            # what the tablet last said it still held unsent (SyncRequest.pending)
            c.execute("ALTER TABLE devices ADD COLUMN pending INTEGER NOT NULL DEFAULT 0")
        if "reattach" not in {row[1] for row in c.execute("PRAGMA table_info(enrolments)")}:
            # the one tablet a code re-attaches (``Node.create_enrolment``)
            c.execute("ALTER TABLE enrolments ADD COLUMN reattach TEXT")


@dataclass(frozen=True)
class Device:
    device: str
    user: str
    unit: str
    tier: str
    revoked: bool = False
    wipe: bool = False

    @property
    def rank(self) -> int:
        return TIER_RANK[self.tier]

    @property
    def scope(self) -> tuple[str, str]:
        return unitlib.descendant_range(self.unit)

    @property
    def ancestors(self) -> tuple[str, ...]:
        "The units above this device's: their reference data is in its scope, read-only"
        return unitlib.ancestors(self.unit)


#: One sync exchange as ``Node.sync_bodies`` takes it: the caller, its request, the answer's format, and
#: whether the answer may be gzipped.
Exchange = tuple[Device, SyncRequest, Format, bool]
#: What an exchange gets: the answer's body and whether it is gzipped, or the error it met.
Answer = tuple[bytes, bool] | Exception


def _spliced(fmt: Format, gzip_ok: bool) -> bool:
    "Whether an answer in ``fmt`` may be spliced from a scope's stream (``Spliced``): MessagePack in gzip"
    return fmt == "msgpack" and gzip_ok


def _ancestor_or_self(code: object, of: str) -> bool:
    "Whether ``code`` is a valid unit code naming ``of`` or a unit above it"
    if not isinstance(code, str):
        return False
    try:
        return unitlib.normalize_code(code) == code and unitlib.is_under(of, code)
    except unitlib.UnitCodeError:
        return False


def written_as_node(op: Op) -> bool:
    """Whether an op is written as the node of its author unit, at that unit's tier: by device
    ``node-<unit>``, or ``node-<unit>~<epoch>`` once that node was restored from a backup. What crosses a
    link is written so. ``op.unit`` must be a valid unit code."""
    return op.tier == TIER_RANK[unitlib.tier_of(op.unit)] and op.site.split("~")[0] == f"node-{op.unit}"


#: The reference and link collections as SQL lists, for ``coll IN (...)`` (here and in ``server.relay``)
REFERENCE_SQL = ",".join(f"'{c}'" for c in REFERENCE_COLLECTIONS)
LINK_SQL = ",".join(f"'{c}'" for c in LINK_COLLECTIONS)


#: Enrolment codes use Crockford's base32 without look-alike characters: easy to read out and type.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Failed enrolment attempts a client may make in ``FAILURE_WINDOW`` seconds before it must wait.
MAX_FAILURES = 10
FAILURE_WINDOW = 15 * 60
#: The device id a tablet may re-attach under: one of a tablet's, never a node's or a link's
TABLET_DEVICE = re.compile(r"tab-[0-9A-Za-z_-]{1,60}")


def normalize_code(code: str) -> str:
    "An enrolment code as typed: case, spaces, dashes and look-alikes (O→0, I/L→1) forgiven"
    c = code.upper().replace("-", "").replace(" ", "").replace("O", "0").replace("I", "1").replace("L", "1")
    return c


@dataclass(frozen=True)
class Enrolment:
    code: str
    unit: str
    user: str
    tier: str
    expires_at: int

    @property
    def display(self) -> str:
        return f"{self.code[:5]}-{self.code[5:]}"


def hash_token(token: str) -> str:
    # tokens are 256-bit random strings, so a fast hash is enough; passwords use scrypt
    return hashlib.sha256(token.encode()).hexdigest()


def _closed_everywhere(db: str | Path) -> bool:
    """Whether no connection has the node database ``db`` open (a serving node's above all), or there is no
    such file. SQLite takes a database out of WAL mode only then; this does, for a restore that replaces it."""
    if not Path(db).exists():
        return True
    conn = sqlite3.connect(str(db), timeout=0)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as e:  # other than busy: no node database, which nothing serves
        return e.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    finally:
        conn.close()
    return True


class Node:
    """A node's store and devices. Thread-safe: every store access holds the store's lock."""

    def __init__(self, path: str | Path | None, unit: str, *, clock: HLC | None = None,
                 max_db_mb: float = 0, cache_mb: float | None = None) -> None:
        self.unit = unitlib.normalize_code(unit)
        self.tier = unitlib.tier_of(self.unit)
        # opening a database of an older version brings it up to date, which writes: a full or read-only
        # disk is the node's storage error (``cunsync serve`` says so and does not start), never a traceback
        with storage.storage_errors(None if path is None else str(path)):
            self.store = Store(path, checkpoint_thread=True)
        try:
            with storage.storage_errors(self.store.path):
                self._open(clock, max_db_mb, cache_mb)
        except BaseException:
            self.store.close()
            raise

    def _open(self, clock: HLC | None, max_db_mb: float, cache_mb: float | None) -> None:
        "The rest of ``__init__``, on the opened store: the node's own tables brought up to date, its state read"
        self.store.conn.executescript(_DEVICES_SQL)
        _migrate_devices(self.store)
        # a size cap (cunsync passes CUNSYNC_MAX_DB_MB): for tests and small disks; see server.storage
        storage.cap_database(self.store.conn, max_db_mb)
        if cache_mb is not None:  # cunsync passes CUNSYNC_CACHE_MB; the store's own default otherwise
            self.store.conn.execute(f"PRAGMA cache_size=-{max(1, int(cache_mb * 1024))}")
        self.pulls = PullCache(self.store)
        self.clock = clock or HLC()
        self.clock.last = max(self.clock.last, self.store.last_hlc())
        #: ``reference_ms``' last answer, and the monotonic clock then (None: not read since starting)
        self._wall_high = self._wall_saved = int(self.store.meta("wall_high") or 0)
        self._wall_high_at: int | None = None
        epoch = self.store.meta("epoch")
        if epoch is None:
            epoch = secrets.token_hex(8)
            self.store.set_meta("epoch", epoch)
        self.epoch = epoch
        if self.store.meta("unit") is None:
            self.store.set_meta("unit", self.unit)
        # the device the node's own ops are written as: a node restored from a backup writes as a new
        # one (``restore``), since it cannot know which of its counters it used after the backup
        self.device_id = self.store.meta("device_id") or f"node-{self.unit}"
        from .auth import Accounts

        self.accounts = Accounts(self.store, self.unit)
        secret = self.store.meta("session_secret")
        if secret is None:
            secret = secrets.token_urlsafe(32)
            self.store.set_meta("session_secret", secret)
        self.session_secret = secret

    def close(self) -> None:
        self.store.close()

    def reference_ms(self) -> int:
        """The time, in ms, that ops are checked against for being stamped ahead: this node's system clock,
        but never earlier than its last answer moved on by the time elapsed since (the monotonic clock), so
        a system clock set back (an NTP step, a wrong setting, a flat clock battery) refuses no tablet whose
        clock is right. The last answer is kept in meta at the next write, to within a minute: after a
        restart, it holds until the system clock passes it. Not the hybrid clock: that takes in the
        tablets' clocks, and a tablet a few minutes ahead could walk it, and the limit, ever further ahead."""
        mono = time.monotonic_ns() // 1_000_000
        since = mono - self._wall_high_at if self._wall_high_at is not None else 0
        self._wall_high = max(self.clock.clock() + self.clock.offset_ms, self._wall_high + since)
        self._wall_high_at = mono
        return self._wall_high

    def _keep_reference(self) -> None:
        "Inside a write's transaction: note the latest clock reading when it moved on a minute or more"
        if self._wall_high - self._wall_saved >= 60_000:
            self.store.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('wall_high', ?)",
                                    (str(self._wall_high),))
            self._wall_saved = self._wall_high

    def check_writable(self) -> None:
        """Raise 503 ``storage_read_only`` unless the node can write its database. SQLite opens a database it
        cannot write (its file, folder or file system read-only) for reading and says so only at the first
        write: ``cunsync serve`` checks before it answers anything. Writes nothing (a write rolled back)."""
        with self.store.lock:
            conn = self.store.conn
            conn.execute("SAVEPOINT check_writable")
            try:
                with storage.storage_errors(self.store.path):
                    conn.execute("UPDATE meta SET value = value WHERE key = 'unit'")
            finally:
                conn.execute("ROLLBACK TO check_writable")
                conn.execute("RELEASE check_writable")

    def check_file_system(self) -> None:
        """Raise 503 ``storage_read_only`` if the file system holding the database has turned read-only since
        the node opened it (``sync.disk``: ``check_writable`` cannot see that, and a sync fails on it).
        Cheap, for ``/api/health``, which monitors poll: no write, no lock, no query."""
        if self.store.path != ":memory:":
            refused = read_only_file_system(self.store.path)
            if refused is not None:
                raise storage.read_only(refused)

    def backup(self, to: str | Path) -> int:
        """A consistent copy of the node's database while it keeps serving (SQLite's online backup).
        A new file is created private (0600), as the database is. Returns the copy's size in bytes.

        The copy is made as ``<to>.partial``, flushed to disk, then renamed to ``to``: a file under the
        backup's name is always a whole backup. If the copy fails (a full backup disk, say), the partial
        file is removed and the error says why."""
        to = Path(to)
        if not to.parent.is_dir():
            raise BadRequest(f"the folder {to.parent} does not exist; create it, or back up elsewhere",
                             code="no_such_folder")
        partial = to.with_name(to.name + ".partial")
        leftovers = [partial, *(Path(f"{partial}{suffix}") for suffix in ("-journal", "-wal", "-shm"))]
        try:
            for leftover in leftovers:  # of a backup killed before
                leftover.unlink(missing_ok=True)
            create_private(partial)
            dst = sqlite3.connect(str(partial))
            try:
                with self.store.lock:
                    self.store.conn.backup(dst)
            finally:
                dst.close()
            with open(partial, "rb") as copy:
                os.fsync(copy.fileno())
            os.replace(partial, to)
        except (sqlite3.Error, OSError) as e:
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)
            if is_disk_full(e):
                raise StorageFull(f"the backup disk is full: {to.parent} has no room for a backup of this node "
                                  f"({e}); no partial backup was left there. Free space on it (remove old "
                                  "backups), or back up elsewhere", details={"to": str(to)}) from None
            raise BadRequest(f"the backup could not be written to {to} ({e}); no partial backup was left there. "
                             "Check that the folder is writable by this user and its disk is sound, or back up "
                             "elsewhere", code="backup_failed", details={"to": str(to)}) from None
        return to.stat().st_size

    @staticmethod
    def restore(db: str | Path, backup: str | Path) -> str:
        """Bring a backup back as the node's database (the node must be stopped) and start a new epoch:
        tablets then fetch their village again and re-send every op the backup lacks. Returns the epoch."""
        src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        try:
            try:
                (ok,) = src.execute("PRAGMA integrity_check").fetchone()
                ours = ok != "ok" or src.execute("SELECT 1 FROM meta WHERE key = 'epoch'").fetchone() is not None
            except sqlite3.DatabaseError:  # not an SQLite file, or one without a node's meta table
                ours = False
            if not ours:
                raise BadRequest(f"{backup} is not a cunsync node backup; nothing was restored", code="not_a_backup")
            if ok != "ok":
                raise BadRequest(f"{backup} fails SQLite's integrity check: {ok}")
            tmp = Path(f"{db}.restoring")
            tmp.unlink(missing_ok=True)
            create_private(tmp)  # private (0600), as the database it replaces
            dst = sqlite3.connect(str(tmp))
            try:
                src.backup(dst)
                epoch = secrets.token_hex(8)
                dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
                # staff signed out since the backup stay signed out: every session starts again
                if dst.execute("SELECT 1 FROM sqlite_master WHERE name = 'staff_sessions'").fetchone():
                    dst.execute("DELETE FROM staff_sessions")
                # the node's own ops after the backup live on in tablets, under counters the backup does not
                # know: writing on from its counter would reuse their ids with other content
                (unit,) = src.execute("SELECT value FROM meta WHERE key = 'unit'").fetchone() or ("",)
                if unit:
                    dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('device_id', ?)",
                                (f"node-{unit}~{epoch}",))
                dst.commit()
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move into place
            finally:
                dst.close()
        finally:
            src.close()
        if not _closed_everywhere(db):
            tmp.unlink()
            raise BadRequest(f"{db} is open in another process, most likely the node serving it: stop the node "
                             "first (`sudo systemctl stop cunsync`), then restore; nothing was restored",
                             code="database_in_use", details={"db": str(db)})
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, db)
        return epoch

    def editor(self, user: str = "staff") -> Editor:
        "An editor for staff working on the node itself; ops carry the node's tier"
        return Editor(self.store, device=self.device_id, user=user, unit=self.unit, tier=self.tier,
                      clock=self.clock)

    # -- devices --------------------------------------------------------------------------------

    def add_device(self, unit: str, user: str, *, device: str | None = None, tier: str = "village") -> tuple[str, str]:
        """Enrol a device for a unit under this node; returns (device id, token). The token is shown once.

        A device for a unit *above* this node, at that unit's tier, is a link device: the credential the
        upper node uses to sync with this one (see ``is_link``)."""
        code = unitlib.normalize_code(unit)
        if tier not in TIER_RANK:
            raise BadRequest(f"unknown tier {tier!r}; one of {', '.join(TIER_RANK)}", code="invalid_tier")
        upper = TIER_RANK[tier] > TIER_RANK[self.tier]
        if upper:
            # a link device for the node above: its unit is this node's ancestor at that tier
            if unitlib.tier_of(code) != tier or not unitlib.is_under(self.unit, code):
                raise OutOfScope(f"a {tier} link device names the {tier} above this node's unit {self.unit};"
                                 f" {code} is not it", details={"unit": code, "node": self.unit})
        elif not unitlib.is_under(code, self.unit):
            raise OutOfScope(f"unit {code} is not under this node's unit {self.unit}",
                             details={"unit": code, "node": self.unit})
        device = device or ("link-" if upper else "tab-") + secrets.token_hex(6)
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as c:
            if c.execute("SELECT 1 FROM devices WHERE device = ?", (device,)).fetchone():
                raise BadRequest(f"there is a device {device!r} already; choose another id, or leave it out",
                                 code="device_exists", details={"device": device})
            c.execute(
                "INSERT INTO devices (device, token_hash, user, unit, tier, created_at) VALUES (?,?,?,?,?,?)",
                (device, hash_token(token), user, code, tier, int(time.time())),
            )
        return device, token

    def create_enrolment(self, unit: str, user: str, *, tier: str = "village", hours: int = 72,
                         reattach: str | None = None) -> Enrolment:
        """A one-time code a tablet exchanges for its device credential. Only its hash is stored.

        ``reattach``: the code re-attaches that tablet only (its device id, shown on its sync page), one
        this node does not know since it was restored from a backup; it enrols no other tablet. Refused
        (``DeviceExists``, nothing written) for a tablet this node knows: ``enrol`` would refuse its code."""
        code = unitlib.normalize_code(unit)
        if not unitlib.is_under(code, self.unit):
            raise OutOfScope(f"unit {code} is not under this node's unit {self.unit}",
                             details={"unit": code, "node": self.unit})
        if not user.strip():
            raise BadRequest("an enrolment names the worker who carries the tablet")
        if tier == "village" and unitlib.tier_of(code) != "village":
            raise BadRequest(f"a village tablet is enrolled for a village or community, not {code}: its scope "
                             "would be every village under that unit", details={"unit": code})
        if reattach is not None and not TABLET_DEVICE.fullmatch(reattach):
            raise BadRequest(f"a tablet re-attaches under its device id, tab-… (its sync page shows "
                             f"it), not {reattach!r}", code="invalid_device", details={"device": reattach})
        secret = "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))
        now = int(time.time())
        enr = Enrolment(secret, code, user.strip(), tier, now + hours * 3600)
        with self.store.transaction() as c:
            if reattach is not None and self._knows(c, reattach):
                raise DeviceExists(
                    f"this node knows tablet {reattach} already, so it would refuse a code to re-attach it; no "
                    "code was made. A tablet the node knows syncs with the token it has; one that was reset "
                    "starts afresh with a code for a new tablet", details={"device": reattach})
            c.execute("INSERT INTO enrolments (code_hash, unit, user, tier, created_at, expires_at, reattach)"
                      " VALUES (?,?,?,?,?,?,?)",
                      (hash_token(secret), code, enr.user, tier, now, enr.expires_at, reattach))
        return enr

    def enrol(self, code: str, *, client: str = "", reattach: Device | None = None) -> tuple[Device, str]:
        """Exchange a one-time enrolment code for a device and its token. A client that fails too often
        must wait; a used or expired code is refused.

        ``reattach``: a tablet this node no longer knows (it was restored from a backup older than the
        tablet's enrolment) names its device id and the worker, unit and tier it holds; the device is
        created under that id, so the tablet keeps its data and re-sends its ops. Refused, nothing written
        and the code still valid, for a device id this node knows (``DeviceExists``: it never hands out a
        token for a device it knows) and for a code made for another worker, unit or tier."""
        now = int(time.time())
        with self.store.transaction() as c:
            (fails,) = c.execute("SELECT count(*) FROM auth_failures WHERE client = ? AND at > ?",
                                 (client, now - FAILURE_WINDOW)).fetchone()
            if fails >= MAX_FAILURES:
                raise TooManyAttempts(f"too many wrong enrolment codes from this client; wait "
                                      f"{FAILURE_WINDOW // 60} minutes", details={"retry_after": FAILURE_WINDOW})
            row = c.execute("SELECT unit, user, tier, expires_at, used_at, reattach FROM enrolments"
                            " WHERE code_hash = ?", (hash_token(normalize_code(code)),)).fetchone()
            problem = None
            if row is None:
                problem = ("invalid_enrolment_code", "no such enrolment code; check it, or ask the township "
                           "for a new one")
            elif row[4] is not None:
                problem = ("enrolment_used", "this enrolment code was already used; ask the township for a new one")
            elif row[3] < now:
                problem = ("enrolment_expired", "this enrolment code has expired; ask the township for a new one")
            if problem is not None:
                # recorded and committed before the refusal, so the count holds across attempts
                c.execute("INSERT INTO auth_failures VALUES (?, ?)", (client, now))
            else:
                assert row is not None
                unit, user, tier, bound = row[0], row[1], row[2], row[5]
                if (reattach.device if reattach is not None else None) != bound:
                    raise EnrolmentMismatch(
                        f"this code re-attaches tablet {bound} only; nothing was written and the code is still "
                        "valid" if bound else "this code enrols a new tablet; to re-attach tablet "
                        f"{reattach.device if reattach else ''}, ask the township for a code made for it "
                        "(`cunsync enrol create --reattach <its device id>`)", details={"reattach": bound})
                if reattach is not None:
                    self._check_reattach(c, reattach, Device(reattach.device, user, unit, tier))
                device, token = self.add_device(unit, user, tier=tier,
                                                device=reattach.device if reattach is not None else None)
                c.execute("UPDATE enrolments SET used_at = ?, device = ? WHERE code_hash = ?",
                          (now, device, hash_token(normalize_code(code))))
        if problem is not None:
            raise Unauthorized(problem[1], code=problem[0])
        return Device(device, user, unit, tier), token

    @staticmethod
    def _check_reattach(c: sqlite3.Connection, tablet: Device, code: Device) -> None:
        "Refuse a re-attaching tablet (as it describes itself) that the code (as the node made it) is not for"
        if not TABLET_DEVICE.fullmatch(tablet.device):
            raise BadRequest(f"a tablet re-attaches under its own device id (tab-…), not {tablet.device!r}",
                             code="invalid_device", details={"device": tablet.device})
        if Node._knows(c, tablet.device):
            raise DeviceExists(
                f"this node knows device {tablet.device} already, so it does not re-attach it; nothing was "
                "written and the code is still valid. If the tablet's token is refused, the device was revoked "
                "or its token replaced: ask the township", details={"device": tablet.device})
        # unknown; or re-attached already, its answer lost: that device's token was never received
        c.execute("DELETE FROM devices WHERE device = ?", (tablet.device,))
        mine, theirs = (tablet.user, tablet.unit, tablet.tier), (code.user, code.unit, code.tier)
        if mine != theirs:
            raise EnrolmentMismatch(
                f"this code is for {code.user} in unit {code.unit} ({code.tier}); tablet {tablet.device} is "
                f"{tablet.user}'s in unit {tablet.unit} ({tablet.tier}). Ask the township for a code for that "
                "worker and unit; nothing was written and the code is still valid",
                details={"code": dict(zip(("user", "unit", "tier"), theirs)),
                         "tablet": dict(zip(("user", "unit", "tier"), mine))})

    def authenticate(self, token: str | None) -> Device:
        if not token:
            raise Unauthorized("no device token; send 'Authorization: Bearer <token>' from enrolment")
        dev = self._device_by("token_hash", hash_token(token))
        if dev is None:
            raise Unauthorized("unknown device token; ask the township for a new enrolment code and re-attach "
                               "this tablet with it (`cunsync tablet init --code`, or the tablet app's sync page): "
                               "it keeps its data")
        return dev

    @staticmethod
    def _knows(c: sqlite3.Connection, device: str) -> bool:
        """Whether this node knows ``device``, so that it never re-attaches it: it holds ops from it, or the
        device, unless that device re-attached already and its answer was lost (never seen since, nothing
        sent: its token was never received)"""
        if c.execute("SELECT 1 FROM sites WHERE device = ?", (device,)).fetchone():
            return True
        row = c.execute(
            "SELECT last_seen IS NULL AND NOT revoked AND EXISTS (SELECT 1 FROM enrolments e"
            " WHERE e.reattach = d.device AND e.used_at IS NOT NULL) FROM devices d WHERE device = ?",
            (device,)).fetchone()
        return row is not None and not row[0]

    def device(self, device: str) -> Device | None:
        "One enrolled device, revoked or not"
        return self._device_by("device", device)

    def _device_by(self, column: str, value: str) -> Device | None:
        with self.store.lock:
            row = self.store.conn.execute(
                f"SELECT device, user, unit, tier, revoked, wipe FROM devices WHERE {column} = ?", (value,)
            ).fetchone()
        return Device(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5])) if row else None

    def is_link(self, dev: Device) -> bool:
        "Whether a device is an upper node's link credential: its unit lies above this node's"
        return dev.unit != self.unit and unitlib.is_under(self.unit, dev.unit)

    def revoke(self, device: str, *, wipe: bool = False) -> None:
        with self.store.transaction() as c:
            if not c.execute("UPDATE devices SET revoked = 1, wipe = ? WHERE device = ?", (int(wipe), device)).rowcount:
                raise NotFound(f"this node knows no device {device!r} (see `cunsync device list`); one enrolled "
                               "after the backup this node was restored from cannot sync here anyway",
                               details={"device": device})

    def devices(self) -> list[dict[str, Any]]:
        with self.store.lock:
            cur = self.store.conn.execute(
                "SELECT device, user, unit, tier, created_at, last_seen, last_sync, app_version, skew_ms,"
                " pushed, pending, revoked, wipe FROM devices ORDER BY unit, device"
            )
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            hw = self.store.high_water()
            for r in rows:
                h = hw.get(r["device"])
                r["contiguous"] = h.contiguous if h else 0
                r["max_counter"] = h.max_counter if h else 0
                r["gaps"] = self.store.missing_counters(r["device"], limit=20) if h and h.gaps else []
        return rows

    # -- the exchange ---------------------------------------------------------------------------

    def check_protocol(self, req: SyncRequest) -> None:
        if not MIN_PROTOCOL_VERSION <= req.protocol <= PROTOCOL_VERSION:
            raise VersionMismatch(
                f"this node speaks sync protocol {MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION}, the client "
                f"sent {req.protocol}; " + ("update the tablet app" if req.protocol < MIN_PROTOCOL_VERSION
                                           else "this node needs updating before the tablet can sync"),
                details={"client": req.protocol, "min": MIN_PROTOCOL_VERSION, "max": PROTOCOL_VERSION},
            )
        if req.schema_version > SCHEMA.version:
            # older schemas are fine (their ops still apply); a newer one may write what this node cannot check
            raise VersionMismatch(
                f"the client writes schema version {req.schema_version}, this node knows up to {SCHEMA.version}; "
                "this node needs updating before the tablet can sync (nothing was written; the tablet keeps "
                "its ops)", details={"client_schema": req.schema_version, "schema": SCHEMA.version},
            )

    def sync(self, dev: Device, req: SyncRequest) -> SyncResponse:
        "One round trip: push, acknowledge, pull. Any request may be retried."
        with no_cycles():
            out = self._sync(dev, req)
        assert isinstance(out, SyncResponse)
        return out

    def sync_body(self, dev: Device, req: SyncRequest, fmt: Format = "msgpack",
                  gzip_ok: bool = True) -> tuple[bytes, bool]:
        """``sync``, answered as an HTTP body in ``fmt``: (body, whether it is gzipped). A MessagePack
        answer in gzip takes its ops from the scope's stream (``server.pullcache``) when it can."""
        out = self.sync_bodies([(dev, req, fmt, gzip_ok)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def sync_bodies(self, exchanges: Sequence[Exchange],
                    answered: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        """Several exchanges that arrived together, each answered as ``sync_body`` answers it, or with
        the error it met. Their pushes are written in one transaction, one commit for all (a herd of
        tablets syncing at once waits on one disk flush instead of one each); then each is answered in
        turn, and handed to ``answered`` (with its index) as soon as it is. A request refused before
        anything was written is refused alone. If writing fails, the transaction is rolled back and each
        exchange runs again alone, so one cannot fail another."""
        out: list[Answer | None] = [None] * len(exchanges)

        def done(i: int, answer: Answer) -> None:
            out[i] = answer
            if answered is not None:
                answered(i, answer)

        with no_cycles(), self.store.lock:
            if len(exchanges) > 1:
                pushed: list[tuple[int, int]] = [(0, -1)] * len(exchanges)
                try:
                    with self.store.transaction():
                        for i, (dev, req, _, _) in enumerate(exchanges):
                            try:
                                ops, now = self._refuse(dev, req)
                            except SyncError as e:
                                done(i, e)
                                continue
                            pushed[i] = self._write(dev, req, ops, now)
                except Exception:  # rolled back: those not refused run alone below and meet their own errors
                    pass
                else:
                    for i, (dev, req, fmt, gzip_ok) in enumerate(exchanges):
                        if out[i] is None:
                            try:
                                answer: Answer = self._body(
                                    self._answer(dev, req, pushed[i], spliced=_spliced(fmt, gzip_ok)), fmt, gzip_ok)
                            except Exception as e:
                                answer = e
                            done(i, answer)
            for i, (dev, req, fmt, gzip_ok) in enumerate(exchanges):
                if out[i] is None:
                    try:
                        answer = self._body(self._sync(dev, req, spliced=_spliced(fmt, gzip_ok)), fmt, gzip_ok)
                    except Exception as e:
                        answer = e
                    done(i, answer)
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    @staticmethod
    def _body(resp: SyncResponse | Spliced, fmt: Format, gzip_ok: bool) -> tuple[bytes, bool]:
        "An answer as an HTTP body in ``fmt``: (body, whether it is gzipped)"
        if isinstance(resp, Spliced):
            return spliced_body(resp), True
        payload = encode(resp, fmt)
        if gzip_ok and len(payload) > 512:
            return compress(payload), True
        return payload, False

    def _sync(self, dev: Device, req: SyncRequest, *, spliced: bool = False) -> SyncResponse | Spliced:
        with self.store.lock:
            ops, now = self._refuse(dev, req)
            with self.store.transaction():
                pushed = self._write(dev, req, ops, now)
            return self._answer(dev, req, pushed, spliced=spliced)

    def _refuse(self, dev: Device, req: SyncRequest) -> tuple[list[Op], int]:
        """The request's ops, once it is known that they may be written, and the node's ``reference_ms`` they
        were checked against (``_write`` notes the device's visit at it): raises if not. Writes nothing"""
        self.check_protocol(req)
        if dev.revoked and dev.wipe:
            raise DeviceRevoked("this tablet was revoked and is to erase its local data; nothing was "
                                "written. Ask the township to enrol it again", details={"wipe": True})
        if dev.revoked and self.is_link(dev):
            # the push of a tablet revoked without wipe is kept (a worker's data is never lost); a link
            # holds no worker's data, so a revoked one writes nothing
            raise DeviceRevoked(f"this link credential was revoked on the node {self.unit}; nothing was written. "
                                "Ask its admin for a new link credential (`cunsync device add --unit <upper "
                                "unit> --tier <upper tier>`) and store it with `cunsync link add`")
        if req.device != dev.device:
            raise ForgedOp(f"request names device {req.device!r} but the token belongs to {dev.device!r}")
        ops, _dead = unpack_ops(req.ops)
        now = self.reference_ms()
        if ops and req.epoch and req.epoch != self.epoch and min(map(_counter, ops)) > self._acked(dev.device) + 1:
            # restored from a backup since the device's last answer, and lacking its ops before these:
            # write nothing; the answer's lower acknowledgement makes it send them again, in order (its
            # records registered after the backup come first, so their later edits are not refused)
            return [], now
        if len(ops) > MAX_BATCH:
            raise TooLarge(f"{len(ops)} ops in one request; send at most {MAX_BATCH}",
                           details={"limit": MAX_BATCH})
        self._check_ops(dev, ops, pack(now))
        return ops, now

    def _write(self, dev: Device, req: SyncRequest, ops: list[Op], now: int) -> tuple[int, int]:
        """Apply a request's checked ops and note the device's visit at ``now``, the time ``_refuse`` checked
        them against (a skew against a clock that never goes back), inside the caller's transaction.
        Returns the seqs the ops took (the device's own ops, not to be sent back to it)."""
        self._keep_reference()
        pushed: tuple[int, int] = (0, -1)
        try:
            if ops:
                applied = self.store.apply(ops)
                if applied.new:
                    pushed = (applied.first_seq, applied.last_seq)
                self.clock.observe(max(o.hlc for o in ops))
                if applied.new:
                    self._follow_merges(ops)
                    self._follow_restores(ops)
                    self._follow_removals(ops)
                    if self.is_link(dev):
                        self._follow_withdrawals(ops)
                        self._follow_needs(ops)
                self._seen(dev, req, now, pushed=applied.new)
            else:
                self._seen(dev, req, now, pushed=0)
        except (sqlite3.Error, OSError) as e:
            # a full or read-only disk: rolled back, nothing written
            err = storage.storage_error(e, self.store.path)
            if err is not None:
                raise err from None
            raise
        return pushed

    def _follow_merges(self, ops: Sequence[Op]) -> None:
        """Needs and services that name a resident merged into another since (a tablet recorded them
        before it heard of the merge) move to the kept resident and its village, as the merge moved the
        others: by ops of this node, in the name of the staff member who merged. Not those of a resident an
        older version left half-merged (current) whose merge leads to no current resident: the tablets show
        her as a resident of her own, and staff keep her so (保留为独立居民)"""
        named = {op.value for op in ops if op.field == "person" and op.kind == SET
                 and op.coll in ("need", "service") and isinstance(op.value, str)}
        merged: dict[str, int] = {}  # whether each is deleted, by id
        for chunk in _chunks(sorted(named)):
            merged.update(self.store.conn.execute(
                "SELECT id, deleted FROM records WHERE coll = 'person'"
                f" AND id IN ({','.join('?' * len(chunk))}) AND ref_merged_into IS NOT NULL", chunk).fetchall())
        if not merged:
            return
        for rid in sorted({op.record for op in ops if op.field == "person" and op.value in merged}):
            rec = self.store.get(rid)
            drop = rec.data.get("person") if rec is not None else None
            if not isinstance(drop, str) or drop not in merged:
                continue  # a later op named another resident
            keep = self.store.resolve_id(drop)
            target = self.store.get(keep)
            if target is None or target.coll != "person":
                continue
            if not merged[drop] and target.deleted:
                continue  # she is current, left half-merged by an older version, her merge leading nowhere: hers
            self.editor(self._last_author(drop, "merged_into")).move_to(rid, keep)

    def _follow_restores(self, ops: Sequence[Op]) -> None:
        """A resident merged into another that a push restores (a tablet of an older version offered 恢复 on
        the conflict card of a merged-away resident; ``Editor.restore`` now refuses) is deleted again: by an op
        of this node at township tier, in the name of the staff member who merged, as staff confirm a delete
        on the conflicts page. The restore is taken, not refused (a refused batch is never written and would
        be resent for ever, stranding the tablet's queue); the delete's ``pred`` names every live op of the
        record, the restore's and the worker's late values among them, so every replica holds it deleted and
        merged with no conflict left open, and those values stay in the op log and the record's history.
        One whose merge leads nowhere (the kept resident removed, never synced here, or merged back into
        it) is left current: deleting it could leave none of her records current. The 疑似重复 page lists it
        as half-merged (``server.duplicates``) for staff to sort out (保留为独立居民); the kept resident's page
        lists the late values of one deleted again (``duplicates.late_changes``)."""
        restored = sorted({op.record for op in ops
                           if op.coll == "person" and op.field == DELETED and op.value is False})
        current = [rec for rec in map(self.store.get, restored) if rec is not None and not rec.deleted]
        for half in half_merged(self.store, current):
            if half.kept is not None:
                self.editor(self._last_author(half.rec.id, "merged_into")).delete(half.rec.id)

    def _follow_removals(self, ops: Sequence[Op]) -> None:
        """A need of a resident taken out of the township's records (迁出/注销, ``server.workbench``) that
        arrives open (a tablet recorded or reopened it offline, before it heard of the removal) is cancelled,
        and its open escalations withdrawn, as the removal did with her other needs: by ops of this node in
        the name of the staff member who removed her, so every tablet, the roll-up and the county see it.
        Cancelled, not hidden or deleted: the worker's need and its history stay, and staff may reopen it
        should she come back. A county's step on an escalation is not followed here: the removal withdrew
        the escalations of all her needs, and one the county's concurrent step kept open is withdrawn again
        by ``_follow_withdrawals``, which knows the removal's answer; an escalation no removal withdrew (one
        left open by an older version) is the county's to answer."""
        from .escalations import REMOVED_ANSWER, withdraw_open  # which imports this module

        needs = {op.record for op in ops if op.coll == "need" and op.field in ("person", "status")}
        for chunk in _chunks(sorted(needs)):
            gone = self.store.conn.execute(
                "SELECT n.id, json_extract(n.data, '$.status'), p.id FROM records n JOIN records p"
                f" ON p.id = json_extract(n.data, '$.person') WHERE n.id IN ({','.join('?' * len(chunk))})"
                " AND n.coll = 'need' AND NOT n.deleted AND p.deleted AND json_extract(p.data, '$.merged_into') IS NULL",
                chunk).fetchall()
            for need, status, person in gone:
                ed = self.editor(self._last_author(person, DELETED))
                if "已取消" in NEED_TRANSITIONS.get(status or "待处理", ()):  # still open: 待处理, 已分派, 服务中
                    ed.update(need, {"status": "已取消"})
                withdraw_open(ed, need, REMOVED_ANSWER)

    def _follow_withdrawals(self, ops: Sequence[Op]) -> None:
        """A withdrawal (已撤回) of this node's that a county's concurrent step (已受理, a department) overrode
        by tier is written again, with its reason (the escalation's answer: the county's open steps write
        none), in the name of the staff member who withdrew it. The township withdrew it because the need
        was met, its summary was wrong and the need went up again as a newer escalation, or its resident
        was removed: the county's step, made before it heard of that, has nothing left to act on, and two
        open escalations of one need would wait for two answers. A department the county assigned goes
        with it (the county's page shows it withdrawn, and the newer escalation open to assign again).
        A county step that closes it (已办结, 已退回) stands: the county's answer says more."""
        from .escalations import withdraw_again  # which imports this module

        for rid in sorted({op.record for op in ops if op.coll == "escalation" and op.field == "status"}):
            esc = self.store.get(rid)
            if esc is None or esc.data.get("status") not in ESCALATION_OPEN:
                continue
            ours = [e for e in self.store.state(rid).get("status", [])
                    if e.value == "已撤回" and e.tier == TIER_RANK[self.tier]]
            if ours:
                (withdrawal,) = self.store.ops_by_seq([max(ours, key=lambda e: e.hlc).seq])
                withdraw_again(self.editor(withdrawal.user), esc)

    def _follow_needs(self, ops: Sequence[Op]) -> None:
        """An escalation stays in its need's village. A county's first step on an escalation re-asserts the
        village at county tier (``server.escalations``); made while a merge here moved the need, it wins
        over this node's move, and the escalation would stay behind. This node's op, made after it, wins."""
        for rid in sorted({op.record for op in ops if op.coll == "escalation" and op.field == "unit"}):
            esc = self.store.get(rid)
            need = self.store.get(esc.data.get("need", "")) if esc is not None else None
            if esc is None or need is None or need.coll != "need" or not need.unit or esc.unit == need.unit:
                continue
            self.editor(self._last_author(need.id, "unit")).update(rid, {"unit": need.unit})

    def _last_author(self, record: str, field: str) -> str:
        "Who last wrote this field of the record: the follow-ups above write in that staff member's name"
        return next((op.user for op in reversed(self.store.record_ops(record)) if op.field == field), "staff")

    def _answer(self, dev: Device, req: SyncRequest, pushed: tuple[int, int], *,
                spliced: bool) -> SyncResponse | Spliced:
        "What an exchange whose push is written (and committed) answers: the acknowledgement and the pull"
        acked = self._acked(dev.device)
        if dev.revoked:
            # a revoked tablet without wipe may still push what it holds, but pulls nothing
            return SyncResponse(protocol=PROTOCOL_VERSION, acked=acked, ops=pack_ops([]),
                                cursor=req.cursor, more=False, server_time=self.clock.now(),
                                epoch=self.epoch, revoked=True)
        out = self._pull(dev, req, pushed, spliced=spliced)
        if req.unseen:
            resp = out.response if isinstance(out, Spliced) else out
            resp.removed = [*resp.removed, *self._gone(dev, req.unseen)]
        return out

    def _gone(self, dev: Device, records: list[str]) -> list[str]:
        """Of records a tablet holds that its bootstrap did not bring, those this node holds outside the
        device's scope: they left it. One this node lacks (another tablet registered it after the backup
        this node was restored from, and has not sent it again) or holds without a unit stays there."""
        lo, hi = dev.scope
        return [r for r, u in self._units(records[:MAX_UNSEEN]).items()
                if u is not None and not lo <= u <= hi and u not in dev.ancestors]

    def _seen(self, dev: Device, req: SyncRequest, now: int, *, pushed: int) -> None:
        skew = req.client_time - now if req.client_time else None
        self.store.conn.execute(
            "UPDATE devices SET last_seen = ?, last_sync = ?, app_version = ?, skew_ms = ?,"
            " pushed = pushed + ?, pending = ? WHERE device = ?",
            (now // 1000, now // 1000, req.app_version or None, skew, pushed, req.pending, dev.device),
        )

    def _acked(self, device: str) -> int:
        row = self.store.conn.execute("SELECT contiguous FROM sites WHERE device = ?", (device,)).fetchone()
        return int(row[0]) if row else 0

    def _check_ops(self, dev: Device, ops: Sequence[Op], server_time: Timestamp) -> None:
        """Refuse the whole batch if any op is forged, invalid, out of scope or too far in the future.

        "The future" is ``server_time``, the node's ``reference_ms``: its system clock, which a clock set back
        does not take back. A refusal reports that time, so the tablet's one re-stamp to it passes."""
        now = physical_ms(server_time)
        if self.is_link(dev):
            self._check_link_ops(dev, ops, server_time)
            return
        lo, hi = dev.scope
        device, user, author_unit, rank = dev.device, dev.user, dev.unit, dev.rank
        # the checks run on the whole batch, or on its ops grouped by field; the error names the first op
        # that fails the check that failed (a batch is refused whole, so which comes first hardly matters)
        if {(op.site, op.user, op.unit, op.tier) for op in ops} - {(device, user, author_unit, rank)}:
            for i, op in enumerate(ops):
                if op.site != device:
                    raise ForgedOp(f"ops[{i}] claims device {op.site!r}; this token is {dev.device!r}",
                                   details={"op": i})
                if op.user != user or op.unit != author_unit or op.tier != rank:
                    raise ForgedOp(f"ops[{i}] claims author {op.user}/{op.unit}/tier {op.tier}; this device "
                                   f"writes as {dev.user}/{dev.unit}/{dev.tier}", details={"op": i})
        if ops and min(map(_counter, ops)) < 1:
            i, op = next((i, op) for i, op in enumerate(ops) if op.counter < 1)
            raise ForgedOp(f"ops[{i}] has counter {op.counter}; counters start at 1", details={"op": i})
        if ops and physical_ms(max(map(_hlc, ops))) - now > MAX_AHEAD_MS:
            i, op = next((i, op) for i, op in enumerate(ops) if physical_ms(op.hlc) - now > MAX_AHEAD_MS)
            ahead = physical_ms(op.hlc) - now
            # which of its ops the node holds: an answer lost on the way leaves the tablet thinking they
            # are unsent, and it must not re-stamp them (the node would refuse them as forged from then on)
            row = self.store.conn.execute("SELECT contiguous, max_counter FROM sites WHERE device = ?",
                                          (device,)).fetchone()
            acked, held = row if row else (0, 0)
            raise ClockAhead(
                f"ops[{i}] is stamped {ahead // 60000} minutes ahead of the node's clock; correct the "
                "tablet's clock (the tablet re-stamps its unsent ops automatically)",
                details={"op": i, "ahead_ms": ahead, "server_time": server_time, "acked": acked,
                         "held": held},
            )
        # values are checked per field, all of a batch's values of one field at once
        groups: defaultdict[tuple[str, str, int], list[Op]] = defaultdict(list)
        for op in ops:
            groups[op.coll, op.field, op.kind].append(op)
        new_units: dict[str, str] = {}
        village = dev.tier == "village"
        for (coll, name, kind), group in groups.items():
            SCHEMA.field(coll, name)  # the field must exist, even to clear it
            if coll == "escalation" or (village and coll in LINK_COLLECTIONS):
                # an escalation is written by a node (staff on its pages, or a link's): an upper node takes
                # no other author's escalation ops, so one from a tablet would stop the link
                i = _index(ops, group[0])
                raise ReadOnly(f"ops[{i}] writes {coll}: tablets read reference data and escalations but "
                               "do not write them; the township, county or city authors them",
                               details={"op": i, "collection": coll})
            if village and (coll, name) == ("person", "merged_into"):
                i = _index(ops, group[0])
                raise ReadOnly(f"ops[{i}] writes merged_into: residents are merged by township staff",
                               details={"op": i, "field": name})
            is_unit = name == SCHEMA.collections[coll].unit_field
            if is_unit:
                cleared = next((op for op in group if op.value is None), None)
                if cleared is not None:
                    i = _index(ops, cleared)
                    raise InvalidValue(f"ops[{i}] clears a record's unit; a record always belongs to a unit "
                                       "(to hand it to another village, set that village's unit)",
                                       details={"op": i, "field": name})
            # the kind is checked for every op, a cleared value too: a register takes None unless required
            SCHEMA.validate_many(coll, name, kind, list(map(_value, group)), self.store.catalogue_codes)
            if is_unit:
                for op in group:
                    if not (lo <= op.value <= hi):
                        i = _index(ops, op)
                        raise OutOfScope(f"ops[{i}] puts a record in unit {op.value}, outside this device's "
                                         f"unit {dev.unit}", details={"op": i, "unit": op.value})
                    new_units.setdefault(op.record, op.value)
        self._check_replays(dev, ops)
        colls: dict[str, str] = {}
        for i, op in enumerate(ops):
            if colls.setdefault(op.record, op.coll) != op.coll:
                raise ForgedOp(f"ops[{i}] names record {op.record} a {op.coll}; another op of the batch names it a "
                               f"{colls[op.record]}", details={"op": i, "record": op.record})
        records = list(colls)
        known: dict[str, str | None] = {}
        for rid, (coll, unit) in self._held(records).items():
            if coll != colls[rid]:  # its ops would be checked as one collection's and applied to another
                i = next(i for i, op in enumerate(ops) if op.record == rid)
                raise ForgedOp(f"ops[{i}] names record {rid} a {colls[rid]}; it is a {coll}",
                               details={"op": i, "record": rid})
            known[rid] = unit
        for rid in records:
            unit = known.get(rid)
            if unit is not None:  # held, in a unit (one held without a unit is as new)
                if lo <= unit <= hi:
                    continue
                if self._was_in_scope(rid, lo, hi) or self._seen_by_others(rid, device):
                    continue  # edited offline before it moved away: keep the edit
                raise OutOfScope(f"record {rid} is not in unit {dev.unit}", details={"record": rid})
            if rid not in new_units and not self._lost_here(dev):
                raise OutOfScope(f"record {rid} is new to the node and names no unit; send its "
                                 "unit op first", details={"record": rid})

    def _check_link_ops(self, dev: Device, ops: Sequence[Op], server_time: Timestamp) -> None:
        """Refuse the whole batch unless every op is reference data or an escalation, authored by a node at
        the link's unit or above it (relayed) and written as that node, within this node's reach.

        Reach: an escalation's village lies under this node; a reference record's unit is this node's,
        one above it, or one under it (a ``unit`` record names the unit it describes)."""
        now = physical_ms(server_time)
        lo, hi = unitlib.descendant_range(self.unit)
        above = set(unitlib.ancestors(self.unit))
        new_units: dict[str, str] = {}
        by_site: dict[str, list[Op]] = {}
        for i, op in enumerate(ops):
            if op.coll not in LINK_COLLECTIONS:
                raise CollectionForbidden(
                    f"ops[{i}] writes {op.coll}: a link from an upper node carries reference data and "
                    "escalations only, never persons, needs or services", details={"op": i, "collection": op.coll})
            if not _ancestor_or_self(op.unit, dev.unit):
                raise ForgedOp(f"ops[{i}] claims author unit {op.unit!r}; this link relays ops of {dev.unit} and "
                               "the units above it, never of a lower tier", details={"op": i})
            if not written_as_node(op):
                raise ForgedOp(f"ops[{i}] claims device {op.site!r} at tier {op.tier} for unit {op.unit}; ops "
                               f"relayed over a link are written by node-{op.unit} at its unit's tier",
                               details={"op": i})
            if op.counter < 1:
                raise ForgedOp(f"ops[{i}] has counter {op.counter}; counters start at 1", details={"op": i})
            ahead = physical_ms(op.hlc) - now
            if ahead > MAX_AHEAD_MS:
                raise ClockAhead(f"ops[{i}] is stamped {ahead // 60000} minutes ahead of this node's clock; "
                                 "correct the upper node's clock", details={
                                     "op": i, "ahead_ms": ahead, "server_time": server_time})
            if op.value is None and op.field == SCHEMA.collections[op.coll].unit_field:
                raise InvalidValue(f"ops[{i}] clears a record's unit; a record always belongs to a unit",
                                   details={"op": i, "field": op.field})
            SCHEMA.validate(op.coll, op.field, op.kind, op.value, self.store.catalogue_codes)
            if op.field == SCHEMA.collections[op.coll].unit_field and op.value is not None:
                if not self._within_reach(op.coll, op.value, lo, hi, above):
                    raise OutOfScope(f"ops[{i}] puts a {op.coll} record in unit {op.value}, outside this node's "
                                     "reach", details={"op": i, "unit": op.value})
                new_units.setdefault(op.record, op.value)
            by_site.setdefault(op.site, []).append(op)
        for site, site_ops in by_site.items():
            self._check_replays_of(site, site_ops)
        colls = {op.record: op.coll for op in ops}
        records = list(colls)
        known = self._held(records)
        for rid in records:
            if rid in known:
                coll, unit = known[rid]
                if coll != colls[rid] or unit is None or not self._within_reach(coll, unit, lo, hi, above):
                    raise OutOfScope(f"record {rid} is not a {colls[rid]} record within this node's reach",
                                     details={"record": rid})
            elif rid not in new_units:
                raise OutOfScope(f"record {rid} is new to this node and names no unit; send its unit op first",
                                 details={"record": rid})

    @staticmethod
    def _within_reach(coll: str, unit: str, lo: str, hi: str, above: set[str]) -> bool:
        if lo <= unit <= hi:
            return True
        return coll in REFERENCE_COLLECTIONS and unit in above

    def _check_replays(self, dev: Device, ops: Sequence[Op]) -> None:
        """A retried op is harmless; an op id the node holds with other content is forged or replayed"""
        self._check_replays_of(dev.device, ops)

    def _check_replays_of(self, device: str, ops: Sequence[Op]) -> None:
        "``ops`` are all the device's: an op sent twice in the batch is dropped when applied, if the same"
        if len(set(map(_counter, ops))) < len(ops):
            first: dict[int, Op] = {}
            for op in ops:
                was = first.setdefault(op.counter, op)
                if was is not op and _json(was) != _json(op):
                    raise ForgedOp(f"op {op.site}#{op.counter} comes twice in this batch with different content; "
                                   "a device never reuses a counter", details={"counter": op.counter})
        row = self.store.conn.execute(
            "SELECT id, max_counter FROM sites WHERE device = ?", (device,)).fetchone()
        if row is None or not ops:
            return
        sid, top = row
        held = [op for op in ops if op.counter <= top]
        if not held:
            return
        lo, hi = min(o.counter for o in held), max(o.counter for o in held)
        stored = {c: (h, r, f, k, v) for c, h, r, f, k, v in self.store.conn.execute(
            "SELECT counter, hlc, record, field, kind, value FROM ops WHERE site = ? AND counter BETWEEN ? AND ?",
            (sid, lo, hi))}
        for op in held:
            have = stored.get(op.counter)
            if have is None:
                continue
            value = _json(op.value).decode() if op.value is not None else None
            if have != (op.hlc, op.record, op.field, op.kind, value):
                raise ForgedOp(f"op {op.site}#{op.counter} was already received with other content; a device "
                               "never reuses a counter", details={"counter": op.counter})

    def _was_in_scope(self, rid: str, lo: str, hi: str) -> bool:
        row = self.store.conn.execute(
            "SELECT 1 FROM moves WHERE record = ? AND (new_unit BETWEEN ? AND ? OR old_unit BETWEEN ? AND ?)"
            " LIMIT 1", (rid, lo, hi, lo, hi)
        ).fetchone()
        return row is not None

    def _lost_here(self, dev: Device) -> bool:
        """Whether a record new to the node that names no unit may be an edit of one the node lost: on a
        node restored from a backup, from a village tablet. Two tablets that each edited the other's
        resident registered after the backup would otherwise refuse each other's batches for ever. A
        tablet knows only records the node once sent it (of its village then) and its own; the ops are
        held without a unit, and sent to no one, until the record's own ops come again."""
        return "~" in self.device_id and dev.tier == "village"

    def _seen_by_others(self, rid: str, device: str) -> bool:
        """Whether an op of the record held here names one of the device's ops in ``pred``, before the
        node held that op: another device saw the device's op in the record's history. After a restore,
        the township's move of a record can come back before the village tablet's ops that made it"""
        row = self.store.conn.execute(
            "SELECT 1 FROM superseded d JOIN sites s ON s.id = d.site WHERE d.record = ? AND s.device = ? LIMIT 1",
            (rid, device)).fetchone()
        return row is not None

    def _pull(self, dev: Device, req: SyncRequest, pushed: tuple[int, int] = (0, -1), *,
              spliced: bool = False) -> SyncResponse | Spliced:
        """The ops and records the device is to receive after its cursor. ``pushed``: the seqs its own
        batch just took, passed over without reading their rows (they would be skipped as its own).
        ``spliced``: the answer may be a ``Spliced`` one, its ops taken from the scope's stream."""
        if self.is_link(dev):
            return self._pull_link(dev, req)
        lo, hi = dev.scope
        # the reference data of the units above the device: at most three units, matched by equality
        above = dev.ancestors
        above_sql = (f" OR (r.unit IN ({','.join('?' * len(above))}) AND r.coll IN ({REFERENCE_SQL}))"
                     if above else "")
        limit = max(1, min(req.limit, MAX_PULL))
        conn = self.store.conn
        server_time = self.clock.now()
        trusted = self._trusted(req)
        cursor = req.cursor if trusted else 0
        page = req.page if trusted else ""
        if cursor == 0 or page:
            # bootstrap: the current state of the scope, a page of records at a time
            bootstrap = "next" if page else "first"
            if cursor == 0:
                # the state as it is now, and from then on the ops after this request's own: what the node
                # wrote after them in the same transaction (``_follow_merges``) follows as ops, moves and all
                cursor = pushed[0] - 1 if pushed[0] > 1 and pushed[1] >= pushed[0] else self.store.max_seq()
                if cursor == 0:  # an empty node: nothing to send
                    return SyncResponse(
                        protocol=PROTOCOL_VERSION, acked=self._acked(dev.device), ops=pack_ops([]),
                        cursor=0, more=False, server_time=server_time, epoch=self.epoch, bootstrap=bootstrap)
            page_size = max(1, min(BOOTSTRAP_PAGE, limit // 8))  # ~8 live ops per record
            rows = conn.execute(
                "SELECT id, state FROM records r WHERE (unit BETWEEN ? AND ?" + above_sql + ") AND id > ?"
                " ORDER BY id LIMIT ?", (lo, hi, *above, page, page_size),
            ).fetchall()
            seqs = [e.seq for _, st in rows for es in _state_decode(st).values() for e in es]
            done = len(rows) < page_size
            return SyncResponse(
                protocol=PROTOCOL_VERSION, acked=self._acked(dev.device), ops=self.store.packed(seqs),
                cursor=cursor, more=not done or self.store.max_seq() > cursor,
                server_time=server_time, epoch=self.epoch,
                cursor_check=self._cursor_check(cursor), page="" if done else rows[-1][0], bootstrapping=not done,
                bootstrap=bootstrap,
            )
        top = self.store.max_seq()
        row = conn.execute("SELECT id FROM sites WHERE device = ?", (dev.device,)).fetchone()
        own = row[0] if row else -1
        if spliced:
            out = self._pull_streamed(dev, cursor, top, own, pushed, limit, server_time)
            if out is not None:
                return out
        # the tablet's own ops are not echoed back: it has them
        # an op that came after an op of its record naming it in pred (``superseded`` keeps those) is
        # flagged dead, so a tablet that already holds the superseding op, or never gets it, drops it;
        # an op superseded after it came is followed, in seq order, by the op that supersedes it
        # an op is in scope by the unit its record had once the op was applied (``ops.unit``, indexed
        # with seq): a record that moved in since arrives whole below, and one that moved out is removed
        # only the sequence numbers here: ``Store.packed`` keeps ops decoded for the next tablet's pull
        sql, params = self._scope_query(dev, f"seq, {_DEAD}", _not_own(cursor, pushed, own), limit)
        rows = conn.execute(sql, params).fetchall()
        seqs = [r[0] for r in rows]
        dead_seqs = {r[0] for r in rows if r[1]}
        more = len(seqs) == limit
        new_cursor = seqs[-1] if more else top
        # (with a full page, the cursor stops at the last op sent; ops skipped as the tablet's own
        # before it are behind the cursor, and none after it are skipped)
        moved_in, removed = self._moves(dev, cursor, new_cursor)
        if moved_in:
            # a record that moved in comes with all its ops, not only its live ones: a tablet that kept it
            # after it left (for an unsent edit) holds live ops that others superseded meanwhile, and only
            # the ops that name them in ``pred`` retire them there (``packed`` sorts and drops repeats)
            seqs += [s for rid in dict.fromkeys(moved_in) for s in self.store.record_seqs(rid)]
        return SyncResponse(
            protocol=PROTOCOL_VERSION, acked=self._acked(dev.device), ops=self.store.packed(seqs, dead_seqs),
            cursor=new_cursor, more=more, server_time=server_time, epoch=self.epoch, removed=removed,
            cursor_check=self._cursor_check(new_cursor),
        )

    @staticmethod
    def _scope_parts(dev: Device, cols: str, after: list[tuple[str, list[Any]]],
                     limit: int) -> list[tuple[str, list[Any]]]:
        """The queries of the ops in a device's scope (``cols`` of ``ops o``) that meet one of the
        conditions ``after`` (each with its parameters; disjoint ranges of seq), each in seq order, at most
        ``limit``: its village's, and the reference data of the units above it"""
        lo, hi = dev.scope
        above = dev.ancestors
        in_scope = "unit = ?" if lo == hi else "unit BETWEEN ? AND ?"
        parts = []
        for cond, params in after:
            parts.append((f"SELECT {cols} FROM ops o WHERE {in_scope} AND {cond} ORDER BY seq LIMIT ?",
                          [*([lo] if lo == hi else [lo, hi]), *params, limit]))
            if above:
                parts.append((f"SELECT {cols} FROM ops o WHERE unit IN ({','.join('?' * len(above))})"
                              f" AND coll IN ({REFERENCE_SQL}) AND {cond} ORDER BY seq LIMIT ?",
                              [*above, *params, limit]))
        return parts

    def _scope_query(self, dev: Device, cols: str, after: list[tuple[str, list[Any]]],
                     limit: int) -> tuple[str, list[Any]]:
        "``_scope_parts`` as one query, in seq order, at most ``limit``"
        parts = self._scope_parts(dev, cols, after, limit)
        sql = " UNION ALL ".join(f"SELECT * FROM ({q})" for q, _ in parts) + " ORDER BY 1 LIMIT ?"
        return sql, [*(p for _, ps in parts for p in ps), limit]

    def _moves(self, dev: Device, cursor: int, new_cursor: int) -> tuple[list[str], list[str]]:
        """Records that moved into the device's scope after ``cursor`` up to ``new_cursor`` (they arrive
        whole), and those that left it (removed on the tablet)"""
        lo, hi = dev.scope
        moved_in: list[str] = []
        removed: list[str] = []
        for rid, old_unit, new_unit in self.store.conn.execute(
            "SELECT record, old_unit, new_unit FROM moves WHERE seq > ? AND seq <= ? ORDER BY seq", (cursor, new_cursor)
        ):
            into = new_unit is not None and lo <= new_unit <= hi
            out_of = old_unit is not None and lo <= old_unit <= hi
            if into and not out_of:
                moved_in.append(rid)
            elif out_of and not into:
                removed.append(rid)
        if removed:
            still = {r for r, u in self._units(removed).items() if u is not None and lo <= u <= hi}
            removed = [r for r in dict.fromkeys(removed) if r not in still]
        return moved_in, removed

    def _pull_streamed(self, dev: Device, cursor: int, top: int, own: int, pushed: tuple[int, int],
                       limit: int, server_time: int) -> Spliced | None:
        """The same answer as the query's, from the scope's stream of ops kept in wire form
        (``server.pullcache``); None when the stream cannot give it"""
        conn = self.store.conn

        def read(after: int, most: int) -> list[tuple[Any, ...]]:
            lo, hi = dev.scope
            above = dev.ancestors
            written = self.store.written_after(after, top, lambda unit: lo <= unit <= hi or unit in above)
            if written is not None:  # this node wrote them lately: no need to read them back
                parts = [rows if lo <= unit <= hi else [r for r in rows if r[4] in REFERENCE_COLLECTIONS]
                         for unit, rows in written.items()]
                parts = [p for p in parts if p]
                return (parts[0] if len(parts) == 1 else sorted(itertools.chain(*parts)))[:most]
            # each part of the scope by its own query, merged here: sorting the wide rows of one UNION
            # ALL in SQL took half as long again
            rows: list[tuple[Any, ...]] = []
            for sql, params in self._scope_parts(dev, f"{Store.OP_COLUMNS}, {_DEAD}", [("seq > ?", [after])],
                                                 most):
                rows += conn.execute(sql, params).fetchall()
            return sorted(rows)[:most]  # by seq, the first column

        def others(after: int) -> bool:
            sql, params = self._scope_query(dev, "seq", _not_own(after, pushed, own), 1)
            return conn.execute(sql, params).fetchone() is not None

        stream = self.pulls.stream(dev.unit, cursor, top, own, read, others)  # a scope follows from its unit
        if stream is None:
            return None
        taken = stream.take(cursor, own, limit)
        more = len(taken) == limit
        new_cursor = stream.seqs[taken[-1]] if more else top
        moved_in, removed = self._moves(dev, cursor, new_cursor)
        if moved_in:
            return None  # their ops are not in the stream: the query answers, with their whole history
        dead = stream.dead
        batch = OpBatch(list(stream.devices), list(stream.authors), [],
                        [k for k, j in enumerate(taken) if dead[j]])
        resp = SyncResponse(
            protocol=PROTOCOL_VERSION, acked=self._acked(dev.device), ops=batch, cursor=new_cursor, more=more,
            server_time=server_time, epoch=self.epoch, removed=removed,
            cursor_check=self._cursor_check(new_cursor),
        )
        return Spliced(resp, len(taken), stream.parts(taken))

    def _pull_link(self, dev: Device, req: SyncRequest) -> SyncResponse:
        """What an upper node pulls over its link: the escalation ops of this node's villages written
        below the link's tier (its own and relayed ops it already holds), from its cursor on, in order.
        Escalations are few, so there is no bootstrap: a new link or a new epoch starts from the top."""
        lo, hi = unitlib.descendant_range(self.unit)
        limit = max(1, min(req.limit, MAX_PULL))
        conn = self.store.conn
        server_time = self.clock.now()
        trusted = self._trusted(req)
        cursor = req.cursor if trusted else 0
        top = self.store.max_seq()
        rows = conn.execute(
            f"SELECT o.seq, {_DEAD} FROM ops o JOIN records r ON r.id = o.record JOIN authors a ON a.id = o.author"
            " WHERE o.seq > ? AND o.coll = 'escalation' AND r.coll = 'escalation' AND r.unit BETWEEN ? AND ?"
            " AND a.tier < ? ORDER BY o.seq LIMIT ?", (cursor, lo, hi, dev.rank, limit),
        ).fetchall()
        seqs = [r[0] for r in rows]
        more = len(seqs) == limit
        new_cursor = seqs[-1] if more else top
        return SyncResponse(
            protocol=PROTOCOL_VERSION, acked=self._acked(dev.device),
            ops=self.store.packed(seqs, {r[0] for r in rows if r[1]}), cursor=new_cursor, more=more,
            server_time=server_time, epoch=self.epoch, cursor_check=self._cursor_check(new_cursor),
        )

    def _trusted(self, req: SyncRequest) -> bool:
        "Whether a client's cursor is of this node's epoch and is the one this node last answered it"
        return req.epoch == self.epoch and (not req.cursor_check
                                            or self._cursor_check(req.cursor) == req.cursor_check)

    def _cursor_check(self, seq: int) -> str:
        row = self.store.conn.execute(
            "SELECT s.device, o.counter FROM ops o JOIN sites s ON s.id = o.site WHERE o.seq = ?", (seq,)
        ).fetchone()
        return f"{row[0]}:{row[1]}" if row else ""

    def _held(self, records: list[str]) -> dict[str, tuple[str, str | None]]:
        "The collection and unit of each of these records held here"
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(records):
            marks = ",".join("?" * len(chunk))
            for rid, coll, unit in self.store.conn.execute(
                    f"SELECT id, coll, unit FROM records WHERE id IN ({marks})", chunk):
                out[rid] = (coll, unit)
        return out

    def _units(self, records: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for chunk in _chunks(records):
            marks = ",".join("?" * len(chunk))
            out.update(self.store.conn.execute(f"SELECT id, unit FROM records WHERE id IN ({marks})", chunk))
        return out
