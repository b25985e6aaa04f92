"""The tablet: a local store a village worker edits with no network, and the sync loop that moves its
ops to the township node and the village's ops back.

Everything the worker enters is an op in the local SQLite file the moment it is saved; the loop only
ever adds to that file, and a tablet keeps its own ops until the node's current epoch acknowledges them.
"""

from __future__ import annotations

import os
import time
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from sync.edit import Editor
from sync.errors import ClockAhead, DeviceRevoked, MalformedBody, TooLarge
from sync.hlc import HLC, MAX_AHEAD_MS, physical_ms, wall_ms
from sync import reference
from sync.ops import Op
from sync.schema import RECORD_COLLECTIONS
from sync.store import (
    Conflict, Record, Store, WrongKey, create_private, is_encrypted, key_literal, no_cycles,
)
from sync.wire import (
    MAX_UNSEEN,
    MSGPACK,
    PROTOCOL_VERSION,
    EnrolRequest,
    EnrolResponse,
    Deflated,
    SyncRequest,
    SyncResponse,
    decode,
    deflate_ops,
    encode,
    fewer_ops,
    refusal,
    request_body,
    unpack_ops,
)

from . import dblock
from .dblock import Busy, DatabaseLock

APP_VERSION = "0.1.0"
T = TypeVar("T")


class WhoAmI(msgspec.Struct):
    "What ``/api/whoami`` says of the device a token belongs to (the fields a tablet keeps)"

    device: str
    user: str
    unit: str
    tier: str


#: Most own ops sent per request.
PUSH_BATCH = 10000
#: Own ops in a sync's first request. Each full request after it may double, up to ``PUSH_BATCH``: the node
#: starts on a short first batch while the next, longer one is packed.
FIRST_PUSH = 2000


@dataclass
class _Batch:
    "A push batch: own ops, encoded and deflated, with their counters"

    ops: Deflated
    counters: list[int]
    unsent: int  # own ops after the batch's last
    size: int  # the most it could hold: it is full when it holds that many


def _read_batch(store: Store, device: str, after: int, size: int) -> _Batch:
    with store.lock:  # the store's connection is shared: whoever else reads it meanwhile waits
        batch, counters = store.packed_own(device, after, size)
        unsent = store.own_after(device, counters[-1] if counters else after)
    return _Batch(deflate_ops(batch), counters, unsent, size)  # zlib lets other threads run meanwhile


class _Packing:
    "The next push batch (``_read_batch``), read, packed and deflated in a thread of its own"

    def __init__(self, store: Store, device: str, after: int, size: int) -> None:
        self.after = after
        self._out: _Batch | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(store, device, size), name="cunsync-pack",
                                        daemon=True)
        self._thread.start()

    def _run(self, store: Store, device: str, size: int) -> None:
        try:
            self._out = _read_batch(store, device, self.after, size)
        except BaseException as e:  # handed to whoever asks for the result
            self._error = e

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> _Batch:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


class NodeUnreachable(Exception):
    "The node could not be reached after every retry; nothing was lost, sync again later"


class SyncFailed(Exception):
    "The node refused the request; the message says why and what to do"

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class NotEnrolled(Exception):
    "This tablet database has not been set up with `cunsync tablet init`"


class AlreadyEnrolled(Exception):
    "This tablet database is set up already; setting it up again would strand its unsent work"


class PinError(Exception):
    "The PIN that encrypts a tablet's database was wrong, missing or too short; nothing was changed"


class WrongPin(PinError):
    "The PIN does not open this tablet's database; nothing was changed"


class PinRequired(WrongPin):
    "The tablet's database is encrypted and no PIN was given"


class NotEncrypted(PinError):
    "A PIN was given for a tablet database that was set up without one"


class WeakPin(PinError, ValueError):
    "A new PIN is too short"


class DatabaseInUse(PinError):
    "The PIN cannot be changed while anything else has the tablet's database open; nothing was changed"


class PinChanging(PinError):
    "The tablet's PIN is being changed; its database opens again once that is done"


#: The shortest PIN a tablet's database can be encrypted with (a 6-digit PIN has only 10^6 values)
MIN_PIN_LENGTH = 6


def _check_new_pin(pin: str) -> None:
    if len(pin.strip()) < MIN_PIN_LENGTH:
        raise WeakPin(f"a PIN needs at least {MIN_PIN_LENGTH} characters")


def _open_store(path: str, pin: str | None) -> Store:
    """The tablet's store: encrypted with the PIN (see ``sync.store.open_connection`` for how the key is
    derived from it), or plaintext when there is no PIN. The PIN is passed on, never kept."""
    encrypted = is_encrypted(path)
    if pin is None:
        if encrypted:
            raise PinRequired(f"{path} is encrypted; give the worker's PIN to open it")
        return Store(path)
    if not encrypted and os.path.exists(path) and os.path.getsize(path) > 0:
        raise NotEncrypted(f"{path} was set up without a PIN and is not encrypted: open it without one, "
                           f"or encrypt it with `cunsync tablet pin --db {path}`")
    if not encrypted:
        _check_new_pin(pin)
    try:
        return Store(path, key=pin)
    except WrongKey:
        raise WrongPin(f"the PIN is wrong: it does not open {path}; nothing was changed") from None


def _encrypt_plaintext(path: str, pin: str) -> None:
    """Encrypt a plaintext tablet database in place: ``sqlcipher_export`` into a new encrypted file
    beside it, which then replaces the original (atomically; a crash leaves the plaintext one)."""
    from sqlcipher3 import dbapi2 as sqlcipher

    tmp = path + ".encrypting"
    for leftover in (tmp, tmp + "-journal"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    create_private(tmp)  # it replaces the database: private (0600), as that one is
    conn = sqlcipher.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        salt = os.urandom(16)
        conn.execute(f"ATTACH DATABASE ? AS encrypted KEY {key_literal(pin, salt, with_salt=True)}", (tmp,))
        conn.execute("SELECT sqlcipher_export('encrypted')")
        conn.execute("DETACH DATABASE encrypted")
    finally:
        conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):  # the plaintext database's, checkpointed above
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


@dataclass
class SyncReport:
    rounds: int = 0
    sent: int = 0
    received: int = 0
    removed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    retries: int = 0
    seconds: float = 0.0
    conflicts: int = 0
    skew_ms: int = 0
    round_ms: list[float] = field(default_factory=list)
    #: the node's own time for each round trip, as its ``Server-Timing`` header gives it (nodes before
    #: 2026-11-27 send none)
    node_ms: list[float] = field(default_factory=list)


Progress = Callable[[SyncReport, SyncResponse], None]


def _server_ms(header: str) -> float | None:
    "The ``dur`` of a ``Server-Timing`` header's first metric, in ms; None if it gives none"
    for part in header.split(",")[0].split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name == "dur":
            try:
                return float(value)
            except ValueError:
                return None
    return None


class Tablet:
    """A tablet's local database and its link to the node.

    ``client`` is the httpx client the sync loop uses; tests inject one over a real socket or over
    Starlette's ``TestClient``. ``sleep`` is injected so back-off can be tested without waiting.

    ``pin`` is the worker's PIN: with it, a new database is created encrypted (SQLCipher, key derived
    from the PIN) and an encrypted one is opened; a wrong PIN raises ``WrongPin`` and changes nothing.
    Without it, the database is plaintext, as tablets set up before PINs were. The PIN is not kept.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], int] = wall_ms,
        pin: str | None = None,
    ) -> None:
        self.path = str(path)
        try:  # held until ``close``: no PIN change meanwhile (``client.dblock``)
            self._lock = DatabaseLock(self.path)
        except Busy:
            raise PinChanging(f"the PIN of {self.path} is being changed; try again when `cunsync tablet pin` "
                              "has finished") from None
        try:
            self.store = _open_store(self.path, pin)
        except BaseException:
            self._lock.release()
            raise
        self._client = client
        self.sleep = sleep
        offset = int(self.store.meta("offset_ms", "0") or 0)
        self.clock = HLC(self.store.last_hlc(), clock=clock, offset_ms=offset)
        #: Entered around a clock correction and its re-stamp, with the new offset: the tablet pages, which
        #: write through a connection of their own, take their clock along and write nothing meanwhile.
        self.correcting: Callable[[int], AbstractContextManager[object]] = lambda offset: nullcontext()

    def close(self) -> None:
        try:
            if self._client is not None and self._owns_client:
                self._client.close()
            self.store.close()
        finally:
            self._lock.release()

    _owns_client = False

    def __enter__(self) -> Tablet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up ---------------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, server: str, token: str, *, client: httpx.Client | None = None,
             pin: str | None = None, **kw: Any) -> Tablet:
        "Set up a tablet database for the device a token belongs to, encrypted with ``pin`` if given"
        tab = cls(path, client=client, pin=pin, **kw)
        with tab._setting_up():
            tab._set("server", server.rstrip("/"))
            tab._set("token", token)
            r = tab._answer(tab.client.get(tab.url("/api/whoami"), headers=tab._auth()))
            who = tab._read(r, lambda: decode(r.content, WhoAmI, "json"))
            for k, v in (("device", who.device), ("user", who.user), ("unit", who.unit), ("tier", who.tier)):
                tab._set(k, v)
        return tab

    @classmethod
    def enrol(cls, path: str | Path, server: str, code: str, *, client: httpx.Client | None = None,
              pin: str | None = None, **kw: Any) -> Tablet:
        """Set up a tablet with a one-time enrolment code from the township, encrypted with ``pin`` if given.
        A tablet set up already is re-attached instead (``reattach``), with all its data."""
        tab = cls(path, client=client, pin=pin, **kw)
        if tab.enrolled:
            try:
                tab.reattach(code, server=server)
            except BaseException:
                tab.close()
                raise
            return tab
        with tab._setting_up():
            tab._set("server", server.rstrip("/"))
            r = tab._answer(tab.client.post(
                tab.url("/api/enrol"), content=encode(EnrolRequest(code=code), "json"),
                headers={"content-type": "application/json"}))
            got = tab._read(r, lambda: decode(r.content, EnrolResponse, "json"))
            for k, v in (("token", got.token), ("device", got.device), ("user", got.user), ("unit", got.unit),
                         ("tier", got.tier)):
                tab._set(k, v)
        return tab

    def reattach(self, code: str, *, server: str = "") -> None:
        """Attach this tablet again, under its device id, to a node that no longer knows it (one restored
        from a backup older than the tablet's enrolment refuses its token: 401 ``unauthorized``), with a
        one-time enrolment code from the township; ``server``: the node's address, if it changed. The
        tablet keeps everything it holds and takes its new token; the node holds none of its ops, so its
        next sync re-sends them all. The code must be one made for this tablet (``cunsync enrol create
        --reattach <device>``). The node refuses a device it knows (``device_exists``) and a code made for
        a new tablet, for another tablet, worker, unit or tier (``enrolment_mismatch``); then nothing
        changes here."""
        server = server.rstrip("/") or self._get("server")
        claim = EnrolRequest(code=code, device=self.device, user=self._get("user"), unit=self.unit,
                             tier=self._get("tier", "village"))
        r = self._answer(self.client.post(server + "/api/enrol", content=encode(claim, "json"),
                                          headers={"content-type": "application/json"}))
        got = self._read(r, lambda: decode(r.content, EnrolResponse, "json"))
        if got.device != self.device:
            raise SyncFailed(r.status_code, "reattach_unsupported", f"the node at {server} is too old to "
                             f"re-attach a tablet: it enrolled a new device {got.device} (tell the township to "
                             "revoke it) and this tablet is unchanged. Update the node, then ask for a new code")
        with self.store.transaction():
            for k, v in (("server", server), ("token", got.token), ("acked", "0")):
                self._set(k, v)

    @contextmanager
    def _setting_up(self) -> Iterator[None]:
        "Set-up steps: refused for a tablet set up already; on any failure the half-made tablet is closed"
        try:
            self._refuse_if_enrolled()
            yield
        except BaseException:
            self.close()
            raise

    def _answer(self, r: httpx.Response) -> httpx.Response:
        "A set-up request's answer, which must be 200"
        if r.status_code != 200:
            self._raise(r)
        return r

    def _read(self, r: httpx.Response, read: Callable[[], T]) -> T:
        "A set-up answer's body, or a clear error if something other than a cunsync node answered"
        try:
            return read()
        except MalformedBody:
            raise SyncFailed(r.status_code, "bad_answer", f"{r.url} did not answer as a cunsync node does "
                             "(is the township server's address right?); nothing was set up") from None

    def _refuse_if_enrolled(self) -> None:
        if self.enrolled:
            device, unit, pending = self._get("device"), self._get("unit"), self.pending()
            raise AlreadyEnrolled(
                f"{self.path} is set up already, as tablet {device} for unit {unit}. It holds "
                f"{self.store.own_after(device, 0)} changes of its own, {pending} of them not acknowledged by "
                "its node (a node restored from a backup may lack any of them); setting it up again would "
                "strand them. Sync it with `cunsync sync`; if the node refuses its token (unknown device token), "
                f"ask the township for a new enrolment code and re-attach this tablet, keeping all its data: "
                f"`cunsync tablet init --db {self.path} --server URL --code CODE`")

    def change_pin(self, new: str) -> None:
        """Encrypt this tablet's database with a new PIN; the old one stops opening it.

        An encrypted database is re-encrypted page by page (``PRAGMA rekey``, one transaction: a crash
        leaves the old PIN or the new one working) and its WAL is checkpointed and truncated. A
        plaintext database (set up without a PIN) is copied into a new encrypted file that replaces it;
        flash storage may keep the old plaintext blocks until they are reused. The PIN is not kept.

        Refused with ``DatabaseInUse``, nothing changed, while any other ``Tablet`` has the database
        open, in this process or another (the tablet app's would go on writing to the replaced file, or
        with the old key); tablets opened while it runs are refused with ``PinChanging``.
        """
        _check_new_pin(new)
        with self.store.lock, ExitStack() as alone:
            if self.store.conn.in_transaction:
                raise RuntimeError("change the PIN outside a transaction")
            try:
                alone.enter_context(self._lock.exclusive())
            except Busy:
                raise DatabaseInUse(
                    f"{self.path} is open elsewhere (in the tablet app, `cunsync tablet ui`, or another cunsync "
                    "command), which would lose what it saves after a PIN change. Close the tablet app first "
                    "(stop it, or lock it on its page), then change the PIN; nothing was changed") from None
            if self.store.encrypted:
                conn = self.store.conn
                (salt,) = conn.execute("PRAGMA cipher_salt").fetchone()
                conn.execute(f"PRAGMA rekey = {key_literal(new, bytes.fromhex(salt))}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return
            self.store.close()
            _encrypt_plaintext(self.path, new)
            self.store = Store(self.path, key=new)

    def wipe(self) -> None:
        "Erase this tablet's local data: the node revoked it with wipe"
        self.close()
        for suffix in ("", "-wal", "-shm", dblock.SUFFIX):
            p = Path(self.path + suffix)
            if p.exists():
                p.unlink()

    def _set(self, key: str, value: str) -> None:
        self.store.set_meta(key, value)

    def _get(self, key: str, default: str = "") -> str:
        return self.store.meta(key, default) or default

    @property
    def enrolled(self) -> bool:
        return bool(self._get("device"))

    @property
    def device(self) -> str:
        d = self._get("device")
        if not d:
            raise NotEnrolled(f"{self.path} is not set up; run `cunsync tablet init --server URL --token T`")
        return d

    @property
    def unit(self) -> str:
        return self._get("unit")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
            self._owns_client = True
        return self._client

    def url(self, path: str) -> str:
        return self._get("server") + path

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._get('token')}"}

    # -- working offline ------------------------------------------------------------------------

    @property
    def editor(self) -> Editor:
        return Editor(self.store, device=self.device, user=self._get("user"), unit=self.unit,
                      tier=self._get("tier", "village"), clock=self.clock)

    def create(self, coll: str, values: Mapping[str, Any], *, record: str | None = None) -> str:
        "Create a record; ``record``: its id, made here unless given (a form shown earlier made it)"
        vals = dict(values)
        if coll != "unit":
            vals.setdefault("unit", self.unit)
            # the unit op goes first, so the node sees a new record's unit in the first batch
            vals = {"unit": vals.pop("unit"), **vals}
        return self.editor.create(coll, vals, record=record)

    def update(self, record: str, values: Mapping[str, Any]) -> list[Op]:
        return self.editor.update(record, values)

    def delete(self, record: str) -> list[Op]:
        return self.editor.delete(record)

    def resolve(self, record: str, field: str, value: Any) -> list[Op]:
        return self.editor.resolve(record, field, value)

    def get(self, record: str) -> Record | None:
        return self.store.get(record)

    def list(self, coll: str, *, include_deleted: bool = False) -> list[Record]:
        return self.store.records(coll, include_deleted=include_deleted)

    def listed(self, coll: str, *, where: str = "", params: Mapping[str, Any] | None = None, order: str = "id",
               limit: int, fields: tuple[str, ...] = (), keep: Callable[[dict[str, Any]], bool] | None = None
               ) -> tuple[list[Record], int]:
        """A list page's records: the first ``limit`` current records of ``coll`` in ``order`` (an SQL
        ORDER BY over ``data``) that meet ``where`` (SQL, with named ``params``) and, if given, ``keep``,
        a test in Python of their ``fields`` (None for a field missing or null); and how many meet them.
        Only the records shown are decoded: those ``keep`` looks at are read field by field."""
        base = f"FROM records WHERE coll = :coll AND deleted = 0{f' AND ({where})' if where else ''}"
        args = {**(params or {}), "coll": coll}
        conn = self.store.conn
        if keep is None:
            (total,) = conn.execute(f"SELECT count(*) {base}", args).fetchone()
            ids = [i for (i,) in conn.execute(f"SELECT id {base} ORDER BY {order} LIMIT {int(limit)}", args)]
        else:
            picked = ", ".join(f"json_extract(data, '$.{f}')" for f in fields)
            ids = [row[0] for row in conn.execute(f"SELECT id, {picked} {base} ORDER BY {order}", args)
                   if keep(dict(zip(fields, row[1:])))]
            total, ids = len(ids), ids[:limit]
        return self.store.records_by_id(ids), total

    def search(self, coll: str, text: str) -> list[Record]:
        "Records whose name, ID number or phone contains the text"
        t = text.strip().lower()
        out = []
        for r in self.store.records(coll):
            hay = " ".join(str(r.data.get(k, "")) for k in ("name", "id_number", "phone", "description"))
            if t in hay.lower():
                out.append(r)
        return out

    def conflicts(self) -> list[Conflict]:
        return self.store.conflicts()

    # -- reference data and escalations: synced from above, read-only here ----------------------

    def notices(self) -> list[dict[str, Any]]:
        "Notices from the township, county and city, newest first"
        return reference.notices(self.store)

    def tasks(self) -> list[dict[str, Any]]:
        "Tasks set by the township, county and city, the soonest due first"
        return reference.tasks(self.store)

    def report_task(self, task: str, status: str, note: str | None = None) -> str:
        "Record this village's progress on a task (``reference.report_task``); returns the report's id"
        return reference.report_task(self.editor, task, self.unit, status, note)

    def task_reports(self) -> dict[str, dict[str, Any]]:
        "This village's reports on the tasks, by task id"
        return {task: r for (task, unit), r in reference.task_reports(self.store).items() if unit == self.unit}

    def catalogue(self, kind: str, *, include_retired: bool = False) -> list[dict[str, Any]]:
        "A synced catalogue (``need_category`` or ``service_type``) in its order"
        return reference.catalogue(self.store, kind, include_retired=include_retired)

    def need_categories(self) -> list[str]:
        "The need categories to offer: the built-in list and the synced catalogue's (``reference.offered``)"
        return reference.need_categories(self.store)

    def service_types(self) -> list[str]:
        "The service types to offer: the built-in list and the synced catalogue's (``reference.offered``)"
        return reference.service_types(self.store)

    def escalation(self, need: str) -> dict[str, Any] | None:
        "The latest escalation (吹哨报到) of a need: status, department, answer; None if never escalated"
        return self.escalations().get(need)

    def escalations(self) -> dict[str, dict[str, Any]]:
        "The latest escalation (吹哨报到) of each need ever escalated, by the need's id"
        latest: dict[str, dict[str, Any]] = {}
        for e in reference.escalations(self.store):  # newest first
            latest.setdefault(str(e.get("need")), e)
        return latest

    def acked(self) -> int:
        return int(self._get("acked", "0"))

    def pending(self) -> int:
        "Own ops the node has not acknowledged yet"
        return self.store.own_after(self._get("device"), self.acked())

    def status(self) -> dict[str, Any]:
        last = self._get("last_sync")
        return {
            "device": self._get("device"), "user": self._get("user"), "unit": self.unit,
            "server": self._get("server"), "pending": self.pending(), "acked": self.acked(),
            "last_sync": int(last) if last else None, "cursor": int(self._get("cursor", "0")),
            "records": {c: len(self.store.records(c)) for c in RECORD_COLLECTIONS},
            "conflicts": len(self.store.conflicts()), "clock_offset_ms": self.clock.offset_ms,
        }

    # -- sync -----------------------------------------------------------------------------------

    def sync(self, *, progress: Progress | None = None, retries: int = 6, backoff: float = 0.5,
             max_rounds: int = 100_000, limit: int = 5000) -> SyncReport:
        """Push pending ops and pull the village's changes until nothing waits either way.

        Each round trip's result is committed before the next starts, so an interrupted sync resumes
        where it stopped. A node that cannot be reached is retried with exponential back-off. While the
        node works on a full batch, a second thread reads and packs the next one.
        """
        report = SyncReport()
        t0 = time.perf_counter()
        restamped = False
        ahead: _Packing | None = None
        most = PUSH_BATCH  # own ops a request may carry: less for a node whose limit is lower
        try:
            for _ in range(max_rounds):
                after = self.acked()
                batch = ahead.result() if ahead is not None and ahead.after == after else \
                    _read_batch(self.store, self.device, after, min(FIRST_PUSH, most))
                ahead = None
                pending = batch.counters
                req = self._request(batch, limit)
                url, auth = self.url("/api/sync"), self._auth()
                if len(pending) == batch.size:
                    ahead = _Packing(self.store, self.device, pending[-1], min(2 * batch.size, most))
                t_round = time.perf_counter()
                try:
                    resp = self._post(request_body(req, batch.ops), report, retries, backoff, url, auth)
                except SyncFailed as e:
                    if ahead is not None:
                        ahead.wait()
                        ahead = None
                    if e.code == DeviceRevoked.code and isinstance(e.details, dict) and e.details.get("wipe"):
                        self.wipe()
                        raise SyncFailed(e.status, e.code, "this tablet was revoked by the township and its "
                                         "local data has been erased", e.details) from None
                    if e.code == ClockAhead.code and not restamped and isinstance(e.details, dict):
                        held = e.details.get("held")  # the node's highest counter of this tablet's
                        self._correct_clock(int(e.details.get("server_time", 0)),
                                            held=held if isinstance(held, int) else 0)
                        restamped = True
                        continue
                    if (e.code == TooLarge.code or e.status == 413) and len(pending) > 1:
                        # send fewer, down to one op, for the rest of this sync
                        most = fewer_ops(e.details, len(pending))
                        continue
                    raise
                report.round_ms.append((time.perf_counter() - t_round) * 1000)
                report.rounds += 1
                if ahead is not None:
                    ahead.wait()  # it reads the store: let it finish before this round writes
                with no_cycles():
                    ops, dead = unpack_ops(resp.ops)
                with self.store.transaction():
                    self.store.apply(ops, dead=dead)
                    acked_before = self.acked()
                    # what a node acknowledged before, too: a database from before ``acked_ever`` was
                    # kept has it only in ``acked``, which a restored node's answer lowers below
                    ever = max(acked_before, resp.acked)
                    if ever > self._acked_ever():
                        self._set("acked_ever", str(ever))
                    for k, v in (("acked", resp.acked), ("cursor", resp.cursor), ("page", resp.page),
                                 ("epoch", resp.epoch), ("last_sync", int(time.time())),
                                 ("cursor_check", resp.cursor_check)):
                        self._set(k, str(v))
                    # a record kept for its unsent edits after it left, whose ops come again, is back in
                    # the village (moved back while this tablet was away): it stays
                    received = {op.record for op in ops}
                    leaving = [r for r in self._get("leaving").split(",") if r and r not in received]
                    gone = resp.removed  # among them, those a bootstrap did not bring (see _bootstrap_page)
                    if req.unseen:  # asked and answered
                        self._set("unseen", ",".join(self._get("unseen").split(",")[len(req.unseen):]))
                    if resp.bootstrap:
                        self._bootstrap_page(resp, received, asked=bool(req.unseen))
                    leaving += gone
                    if leaving:
                        self._forget(leaving)
                    elif self._get("leaving"):
                        self._set("leaving", "")
                report.sent += max(0, min(len(pending), resp.acked - acked_before))
                report.received += len(ops)
                report.removed += len(gone)
                offset = self.clock.offset_ms
                self._track_clock(resp.server_time, report)
                if self.clock.offset_ms != offset:
                    ahead = None  # the clock was corrected and unsent ops re-stamped: pack them again
                if progress is not None:
                    progress(report, resp)
                if resp.revoked and not self.store.has_own_after(self.device, self.acked()):
                    raise SyncFailed(403, DeviceRevoked.code, "this tablet was revoked by the township: what "
                                     "it held has been handed in, and it receives nothing more",
                                     {"wipe": False, "sent": report.sent})
                if not resp.more and not self.store.has_own_after(self.device, self.acked()) \
                        and not self._get("unseen"):
                    break
                if not resp.more and pending and acked_before <= resp.acked < pending[0]:
                    # the node took nothing of what we sent and has nothing for us: stop, don't spin. (A
                    # node restored from a backup acknowledges less than before: send again from there)
                    break
        finally:
            if ahead is not None:
                ahead.wait()
        report.seconds = time.perf_counter() - t0
        report.conflicts = len(self.store.conflicts())
        return report

    def _request(self, batch: _Batch, limit: int) -> SyncRequest:
        "A round trip's request for ``batch`` (its ops travel beside it, deflated): where the pull stands"
        return SyncRequest(
            protocol=PROTOCOL_VERSION, device=self.device, cursor=int(self._get("cursor", "0")),
            page=self._get("page"), epoch=self._get("epoch"), limit=limit,
            client_time=self.clock.clock(), app_version=APP_VERSION,
            schema_version=self.store.schema.version, cursor_check=self._get("cursor_check"),
            pending=batch.unsent, unseen=[r for r in self._get("unseen").split(",") if r][:MAX_UNSEEN],
        )

    def _post(self, body: bytes, report: SyncReport, retries: int, backoff: float, url: str,
              auth: dict[str, str]) -> SyncResponse:
        "One round trip; it reads nothing from the store while it waits (the packer may be reading it)"
        headers = {**auth, "content-type": MSGPACK, "content-encoding": "gzip",
                   "accept": MSGPACK, "accept-encoding": "gzip"}
        delay = backoff
        for attempt in range(retries + 1):
            try:
                r = self.client.post(url, content=body, headers=headers)
            except httpx.TransportError as e:
                if attempt == retries:
                    with self.store.lock:  # after the packer
                        pending = self.pending()
                    raise NodeUnreachable(
                        f"the node at {url.removesuffix('/api/sync')} did not answer ({type(e).__name__}); "
                        f"{pending} ops are kept on this tablet and will sync next time"
                    ) from None
            else:
                if r.status_code == 200:
                    report.bytes_up += len(body)
                    report.bytes_down += r.num_bytes_downloaded
                    node_ms = _server_ms(r.headers.get("server-timing", ""))
                    if node_ms is not None:
                        report.node_ms.append(node_ms)
                    with no_cycles():  # a page of ops decoded: objects by the thousand, none in a cycle
                        return decode(r.content, SyncResponse)
                if r.status_code not in (502, 503, 504, 507) or attempt == retries:
                    self._raise(r)
            report.retries += 1
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _raise(self, r: httpx.Response) -> None:
        err = refusal(r.status_code, r.content)
        raise SyncFailed(r.status_code, err.code, err.message, err.details)

    def _track_clock(self, server_time: int, report: SyncReport) -> None:
        skew = self.clock.clock() + self.clock.offset_ms - physical_ms(server_time)
        report.skew_ms = skew
        if abs(skew) > MAX_AHEAD_MS // 5:
            self._correct_clock(server_time)
        else:
            self.clock.observe(server_time)

    def _correct_clock(self, server_time: int, *, held: int = 0) -> None:
        """Trust the node's clock from now on, and re-stamp own ops that no node has held. ``held``: the
        highest of this tablet's counters the node says it holds (its refusal of a batch stamped ahead
        says so)."""
        if not server_time:
            return
        offset = physical_ms(server_time) - self.clock.clock()
        shift = offset - self.clock.offset_ms
        with self.correcting(offset):
            self.clock.offset_ms = offset
            self._set("offset_ms", str(offset))
            # An op a node has held keeps its clock: the node, and the tablets it passed the op to, hold
            # it with that clock. The local ``acked`` is not enough to know which those are: an answer
            # lost on the way back leaves it behind the node, and a node restored from a backup sends a
            # lower one.
            self.store.restamp(self.device, max(self.acked(), self._acked_ever(), held), shift, server_time)
            self.clock.last = server_time

    def _acked_ever(self) -> int:
        "The highest ``acked`` any node (of any epoch) has answered this tablet"
        return int(self._get("acked_ever", "0"))

    def _bootstrap_page(self, resp: SyncResponse, received: set[str], *, asked: bool) -> None:
        """Note the records a page of a bootstrap brought (in table ``bootstrap_seen``, so that an
        interrupted bootstrap goes on where it stopped). At its last page, note in ``unseen`` the records
        held here that no page brought and that the node took no op of this tablet's of since the bootstrap
        began (an op pushed meanwhile may be of a record whose place in the pages was already sent): the
        next request asks the node about them, and it answers, in ``removed``, those that left the village
        (before the backup it was restored from). One the node lacks stays: this may be its last copy.
        ``asked``: the request asked already (a node with no ops starts a bootstrap at every request)."""
        conn = self.store.conn
        conn.execute("CREATE TABLE IF NOT EXISTS bootstrap_seen (record TEXT PRIMARY KEY) WITHOUT ROWID")
        if resp.bootstrap == "first":
            conn.execute("DELETE FROM bootstrap_seen")
            self._set("bootstrap_acked", str(resp.acked))
        elif not self._get("bootstrap_acked"):
            return  # a bootstrap begun before this version: nothing to ask
        conn.executemany("INSERT OR IGNORE INTO bootstrap_seen VALUES (?)", [(r,) for r in received])
        if resp.page:
            return
        pushed = {r for (r,) in conn.execute(
            "SELECT DISTINCT o.record FROM ops o JOIN sites s ON s.id = o.site WHERE s.device = ? AND o.counter > ?",
            (self.device, int(self._get("bootstrap_acked"))))}
        unseen = [r for (r,) in conn.execute(
            "SELECT id FROM records WHERE id NOT IN (SELECT record FROM bootstrap_seen)") if r not in pushed]
        conn.execute("DELETE FROM bootstrap_seen")
        self._set("bootstrap_acked", "")
        if not asked:
            self._set("unseen", ",".join(unseen))

    def _forget(self, records: list[str]) -> None:
        "Drop records that left this village (they were not deleted); keep any with unsent edits"
        keep = {r[0] for r in self.store.conn.execute(
            "SELECT DISTINCT o.record FROM ops o JOIN sites s ON s.id = o.site"
            " WHERE s.device = ? AND o.counter > ?", (self.device, self.acked()))}
        self.store.forget([r for r in records if r not in keep], keep_own=self.device)
        # records kept for their unsent edits leave once the node has acknowledged them
        self._set("leaving", ",".join(dict.fromkeys(r for r in records if r in keep)))
