"""The end-to-end harness: a real node (hypercorn, as ``cunsync serve``) in a subprocess on 127.0.0.1,
and helpers that look straight into SQLite files to check what a node or a tablet holds.

    NodeProcess    one node subprocess on a fixed port and database: start(), stop() (SIGTERM),
                   kill() (SIGKILL, like pulling the plug), start() again on the same port and database
    node_digest    the node's ``Store.digest()``, or only the records that belong to one village
    op_count       how many ops a database holds
    device_ops     (ops, distinct counters, lowest, highest counter) of one device's ops in a database
    integrity      ``PRAGMA integrity_check``
    populate       a tablet's worker registers residents, each with a need and a service
    enrolment_code a one-time enrolment code the township makes for a worker's tablet
    no_sleep       a back-off that does not wait
    PoorLink       a real HTTP transport that loses answers, or stops reaching the node, when told to

Fixtures built on these live in ``conftest.py``.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from client.tablet import Tablet
from server.node import Node, hash_token
from sync.store import Store

ROOT = Path(__file__).resolve().parents[2]

TOWNSHIP = "510903001000"  # 育才路街道
V1, V2, V3 = "510903001001", "510903001002", "510903001003"  # 育才社区, 广场社区, 和平社区
VILLAGES = (V1, V2, V3)

#: ``enrol(unit, user, tier="village") -> (device, token)`` (the fixture)
Enrol = Callable[..., tuple[str, str]]
#: ``make_tablet(token, name=None, **kw) -> Tablet`` (the fixture)
MakeTablet = Callable[..., Tablet]

#: How long a node may take to answer /api/health after it is started.
START_TIMEOUT = 15.0


def no_sleep(seconds: float) -> None:
    "A tablet's back-off that does not wait"


#: Ports ``free_port`` handed out, each held bound (not listening) until this process exits.
_RESERVED: list[socket.socket] = []


@atexit.register
def _release_ports() -> None:
    for s in _RESERVED:
        s.close()


def free_port() -> int:
    """A free port on 127.0.0.1. On Linux it stays this process's: kept bound, without listening, until
    the process exits, so nothing else asking the kernel for a free port (another pytest-xdist worker,
    another test run on the machine) or connecting out is given it before the server binds it, or
    between a node's kill and its restart. Servers bind with SO_REUSEADDR (hypercorn, ``cunsync``'s own
    bind check), which Linux allows while no socket listens there; a client finds nothing listening, as
    on any port where nothing runs. (BSD and macOS refuse a second bind even so: there the port is
    released at once, as before.)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    if sys.platform == "linux":
        _RESERVED.append(s)
    else:
        s.close()
    return port


class NodeProcess:
    """A township node served by hypercorn in a subprocess, as an operator runs it.

    Its output goes to ``<db>.log``; a node that dies or never answers raises with that output.
    """

    #: How the node is started: ``cunsync`` itself; a test may run another entry point (a launcher that
    #: changes something first, such as the schema) that ends by calling the same ``cli()``.
    PROGRAM = ("-c", "from client.cli import cli; cli()")

    def __init__(self, db: Path, unit: str = TOWNSHIP, *, port: int | None = None,
                 env: dict[str, str] | None = None, program: tuple[str, ...] | None = None) -> None:
        self.env = dict(env or {})  # extra environment, e.g. CUNSYNC_MAX_DB_MB; may change between starts
        self.program = program or self.PROGRAM
        self.db = Path(db)
        self.unit = unit
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.db.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> NodeProcess:
        "Start the node (again: same port, same database) and wait until /api/health answers"
        assert not self.running, "the node is already running"
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, *self.program, "serve",
                 "--db", str(self.db), "--unit", self.unit, "--bind", f"127.0.0.1:{self.port}"],
                cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with status {self.proc.returncode} before answering "
                                   f"/api/health; its output:\n{self.output()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the node did not answer /api/health within {START_TIMEOUT} s; "
                                   f"its output:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def kill(self) -> None:
        "SIGKILL: no shutdown, no checkpoint, like a power cut"
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        "SIGTERM: the node shuts down cleanly"
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(
                    f"the node did not stop on SIGTERM; its output:\n{self.output()}") from None

    def health(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/api/health", timeout=5.0)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


# -- looking into databases -----------------------------------------------------------------------

Digest = dict[str, tuple[Any, ...]]


def node_digest(db: Path, unit: str | None = None) -> Digest:
    "The node's digest (see ``Store.digest``), or only the records that belong to ``unit``"
    with Store(db) as s:
        d = s.digest()
    if unit is None:
        return d
    return {rid: v for rid, v in d.items() if v[1] == unit}


def _query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return tuple(conn.execute(sql, params).fetchone())
    finally:
        conn.close()


def op_count(db: Path) -> int:
    return int(_query(db, "SELECT count(*) FROM ops")[0])


def device_ops(db: Path, device: str) -> tuple[int, int, int, int]:
    "(ops, distinct counters, lowest counter, highest counter) of one device's ops in a database"
    n, distinct, lo, hi = _query(
        db,
        "SELECT count(*), count(DISTINCT o.counter), coalesce(min(o.counter), 0),"
        " coalesce(max(o.counter), 0) FROM ops o JOIN sites s ON s.id = o.site WHERE s.device = ?",
        (device,),
    )
    return int(n), int(distinct), int(lo), int(hi)


def integrity(db: Path) -> str:
    return str(_query(db, "PRAGMA integrity_check")[0])


# -- what workers enter ---------------------------------------------------------------------------

def enrolment_code(db: Path, unit: str = V1, user: str = "王芳", hours: int = 72, reattach: str | None = None) -> str:
    "A one-time enrolment code for a worker's tablet (or to re-attach one), as the township prints it"
    n = Node(db, TOWNSHIP)
    try:
        return n.create_enrolment(unit, user, hours=hours, reattach=reattach).display
    finally:
        n.close()


def known_reattach_code(db: Path, device: str, unit: str = V1, user: str = "王芳") -> str:
    """A code to re-attach a tablet the node knows, which ``Node.create_enrolment`` refuses to make
    (``device_exists``): a code for a new tablet, then bound to ``device`` in the node's table, to test that
    the node refuses such a code when it is used (a code made before the node knew the tablet)"""
    n = Node(db, TOWNSHIP)
    try:
        enr = n.create_enrolment(unit, user)
        with n.store.transaction() as c:
            c.execute("UPDATE enrolments SET reattach = ? WHERE code_hash = ?", (device, hash_token(enr.code)))
        return enr.display
    finally:
        n.close()


def populate(tab: Tablet, people: int, tag: str) -> list[str]:
    """Register ``people`` residents on a tablet, each with a need and a service delivered for it, in
    one local transaction; returns the new record ids (person, need, service, person, ...)."""
    ids: list[str] = []
    with tab.store.transaction():
        for i in range(people):
            p = tab.create("person", {"name": f"{tag}居民{i}", "gender": "女" if i % 2 else "男",
                                      "birth_date": "1942-03-08",
                                      "groups": ["老年人", "独居"][: 1 + i % 2]})
            n = tab.create("need", {"person": p, "category": "养老服务", "status": "待处理",
                                    "urgency": "一般", "description": f"{tag}助餐{i}"})
            s = tab.create("service", {"person": p, "need": n, "service_type": "养老服务",
                                       "served_at": "2024-05-01T09:30", "minutes": 30 + i})
            ids += [p, n, s]
    return ids


class PoorLink(httpx.BaseTransport):
    """A tablet's link to the node over real HTTP, with the faults a poor one has: the next ``lose`` sync
    answers are lost after the node sent them (it committed the push), and from sync request number
    ``reach_until`` on, nothing reaches the node"""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = 0
        self.reach_until: int | None = None
        self.syncs = 0  # sync requests that reached the node

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sync = request.url.path == "/api/sync"
        if sync and self.reach_until is not None and self.syncs >= self.reach_until:
            raise httpx.ConnectError("connection refused: the link is down", request=request)
        resp = self.inner.handle_request(request)
        if sync:
            self.syncs += 1
            if self.lose:
                self.lose -= 1
                resp.read()
                resp.close()
                raise httpx.ReadError("connection reset: the answer was lost on the way", request=request)
        return resp

    def close(self) -> None:
        self.inner.close()
