"""A full disk is a 507 ``storage_full`` wherever the node meets it, never a 500; and the size cap that
stands in for a full disk (CUNSYNC_MAX_DB_MB) refuses growth with SQLite's own SQLITE_FULL. A read-only
database (a file system remounted read-only) is a 503 ``storage_read_only``, and ``cunsync serve`` refuses
to start on one.

The scenario over a real node and real tablets is ``full_disk`` in ``scenarios.py``; here the app runs
in-process (httpx's ASGI transport), and the one seam is the node method a route calls, made to raise
the errors a real full disk raises. A read-only database is SQLite's ``PRAGMA query_only``, which refuses
every write with the error a read-only file gets (tests run as root, whom no file mode stops).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from client.cli import cli
from e2e_harness import TOWNSHIP, V1
from server import cli as server_cli, node as server_node
from server.app import create_app
from server.cli_common import open_node
from server.node import Node
from server.storage import cap_database, storage_error
from sync.disk import is_disk_full, is_read_only
from sync.errors import SyncError
from sync.hlc import pack, wall_ms
from sync.ops import Op, uuid7
from sync.store import Store
from sync.types import SET
from sync.wire import PROTOCOL_VERSION, SyncRequest, pack_ops


def _real_sqlite_full() -> sqlite3.OperationalError:
    "The error SQLite itself raises when a database cannot grow"
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x)")
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError) as info:
            for _ in range(100):
                conn.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
        return info.value
    finally:
        conn.close()


def _whoami(node: Node, path: str = "/api/whoami") -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(node), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await client.get(path, headers={"authorization": "Bearer t"})

    # in a thread of its own: other tests (Playwright's) may leave an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(call())).result()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "township.db", TOWNSHIP)
    yield n
    n.close()


@pytest.mark.parametrize("exc", [
    pytest.param(_real_sqlite_full(), id="SQLITE_FULL"),
    pytest.param(OSError(errno.ENOSPC, "No space left on device"), id="ENOSPC"),
    pytest.param(OSError(errno.EDQUOT, "Disk quota exceeded"), id="EDQUOT"),
])
def test_a_full_disk_on_any_route_is_507_storage_full(
    node: Node, exc: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_disk_full(exc)

    def full(token: str | None) -> None:
        raise exc

    monkeypatch.setattr(node, "authenticate", full)
    r = _whoami(node)
    assert r.status_code == 507
    err = r.json()["error"]
    assert err["code"] == "storage_full"
    assert "free disk space" in err["message"] and "nothing was written" in err["message"]


def test_other_database_errors_stay_500_internal(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert not is_disk_full(locked) and not is_disk_full(OSError(errno.EIO, "I/O error"))

    def broken(token: str | None) -> None:
        raise locked

    monkeypatch.setattr(node, "authenticate", broken)
    r = _whoami(node)
    assert (r.status_code, r.json()["error"]["code"]) == (500, "internal")


def test_the_cap_stops_growth_with_sqlite_full_and_leaves_what_was_there(tmp_path: Path) -> None:
    db = tmp_path / "capped.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES ('kept')")
        pages = cap_database(conn, 0.05)  # 50 KiB
        assert pages == int(0.05 * 2**20) // conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("BEGIN")
        with pytest.raises(sqlite3.OperationalError) as info:
            for _ in range(1000):
                conn.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
        assert is_disk_full(info.value)
        if conn.in_transaction:  # (SQLite may already have rolled it back, as it did here)
            conn.execute("ROLLBACK")
        assert conn.execute("SELECT x FROM t").fetchall() == [("kept",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert cap_database(conn, 0) == 0  # no cap asked: nothing changes
    finally:
        conn.close()


# -- a read-only database ---------------------------------------------------------------------------

def _read_only(conn: sqlite3.Connection) -> None:
    "SQLite refuses this connection's writes as it does those to a file it could open only for reading"
    conn.execute("PRAGMA query_only = ON")


def _real_sqlite_read_only() -> sqlite3.OperationalError:
    "The error SQLite itself raises at a write to a database it could open only for reading"
    conn = sqlite3.connect(":memory:")
    try:
        _read_only(conn)
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute("CREATE TABLE t (x)")
        return info.value
    finally:
        conn.close()


def test_a_read_only_database_refuses_a_sync_with_503_and_writes_nothing(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = node.add_device(V1, "王芳")
    dev = node.authenticate(token)
    rid, hlc = uuid7(), pack(wall_ms())
    ops = [Op(dev.device, i + 1, hlc + i, "person", rid, field, SET, value, (), dev.user, dev.unit, dev.rank)
           for i, (field, value) in enumerate((("unit", V1), ("name", "张秀英")))]
    def refused(*args: object, **kw: object) -> None:
        raise _real_sqlite_read_only()

    # on a file system remounted read-only, SQLite begins the transaction and refuses its first write
    monkeypatch.setattr(node.store, "apply", refused)

    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))

    assert (e.value.status, e.value.code) == (503, "storage_read_only")
    assert "read-only" in e.value.message and "Nothing was written" in e.value.message
    assert node.store.count_ops() == 0


def test_a_read_only_database_on_any_route_is_503_storage_read_only(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    exc = _real_sqlite_read_only()
    assert is_read_only(exc) and not is_disk_full(exc) and not is_read_only(_real_sqlite_full())

    def read_only(token: str | None) -> None:
        raise exc

    monkeypatch.setattr(node, "authenticate", read_only)
    r = _whoami(node)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "storage_read_only"


def _file_system_turns_read_only(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's file system is remounted read-only under it (ext4's errors=remount-ro): the operating
    system refuses to open its database for writing; SQLite's open connection still reads, and fails at a
    write with an I/O error (as on a real one: SQLITE_IOERR_WRITE, "disk I/O error")"""
    real_open = os.open

    def refusing(path: str, flags: int, *args: int, **kw: int) -> int:
        # closing a descriptor of the database would drop SQLite's locks on it: it is never opened
        assert os.fspath(path) != node.store.path, "the database file opened beside SQLite"
        if os.fspath(path).startswith(node.store.path) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args, **kw)

    def io_error(*args: object, **kw: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(os, "open", refusing)
    monkeypatch.setattr(node.store, "apply", io_error)


def test_health_says_a_file_system_turned_read_only_and_a_sync_is_refused_as_such(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = node.add_device(V1, "王芳")
    dev = node.authenticate(token)
    rid = uuid7()
    req = SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([
        Op(dev.device, 1, pack(wall_ms()), "person", rid, "unit", SET, V1, (), dev.user, dev.unit, dev.rank)]))
    assert _whoami(node, "/api/health").status_code == 200
    # an I/O error on a file system that can be written is no read-only one
    assert storage_error(sqlite3.OperationalError("disk I/O error"), node.store.path) is None
    seq = node.store.max_seq()

    _file_system_turns_read_only(node, monkeypatch)

    changes = node.store.conn.total_changes
    r = _whoami(node, "/api/health")
    assert node.store.conn.total_changes == changes  # polled often: it writes nothing, even rolled back
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "storage_read_only" and "cannot be written" in err["message"]
    with pytest.raises(SyncError) as e:
        node.sync(dev, req)
    assert (e.value.status, e.value.code) == (503, "storage_read_only")
    assert node.store.max_seq() == seq


def test_serve_refuses_to_start_on_a_database_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "township.db")
    Node(db, TOWNSHIP).close()

    def opened_read_only(db: str, unit: str | None = None) -> Node:
        node = open_node(db, unit)
        _read_only(node.store.conn)
        return node

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("the node served a database it cannot write")

    monkeypatch.setattr(server_cli, "open_node", opened_read_only)
    monkeypatch.setattr(server_cli, "create_app", never)
    r = CliRunner().invoke(cli, ["serve", "--db", db, "--unit", TOWNSHIP, "--bind", _free_bind()])
    assert r.exit_code == 1, r.output
    assert f"{db}: the node's database cannot be written" in r.output and "Traceback" not in r.output


def _free_bind() -> str:
    "An address with a port free to listen on"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(("exc", "said"), [
    pytest.param(_real_sqlite_read_only(), "the node's database cannot be written", id="read-only"),
    pytest.param(_real_sqlite_full(), "the node's storage is full", id="full"),
])
def test_serve_refuses_to_start_when_bringing_an_older_database_up_to_date_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: sqlite3.OperationalError, said: str
) -> None:
    "The store's open, which brings a database of an older version up to date (new indexes), meets the disk's error"
    db = str(tmp_path / "township.db")
    Node(db, TOWNSHIP).close()

    class Upgrading(Store):
        def __init__(self, *args: object, **kw: object) -> None:
            raise exc

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("the node served a database it could not open")

    monkeypatch.setattr(server_node, "Store", Upgrading)
    monkeypatch.setattr(server_cli, "create_app", never)
    r = CliRunner().invoke(cli, ["serve", "--db", db, "--unit", TOWNSHIP, "--bind", _free_bind()])
    assert r.exit_code == 1, r.output
    assert f"Error: {db}: {said}" in r.output and "Traceback" not in r.output


def test_a_database_that_cannot_be_opened_is_not_called_no_node_database(tmp_path: Path) -> None:
    "SQLite cannot open it (here a folder; on a read-only file system, a WAL database without its -shm)"
    db = tmp_path / "township.db"
    db.mkdir()
    with pytest.raises(click.ClickException) as e:
        open_node(str(db))
    assert f"cannot open {db} (unable to open database file)" in e.value.message
    assert "not a cunsync node database" not in e.value.message and "read-only" in e.value.message
