"""A full disk is a 507 ``storage_full`` wherever the node meets it, never a 500; and the size cap that
stands in for a full disk (CUNSYNC_MAX_DB_MB) refuses growth with SQLite's own SQLITE_FULL.

The scenario over a real node and real tablets is ``full_disk`` in ``scenarios.py``; here the app runs
in-process (httpx's ASGI transport), and the one seam is the node method a route calls, made to raise
the errors a real full disk raises.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from e2e_harness import TOWNSHIP
from server.app import create_app
from server.node import Node
from server.storage import cap_database, is_disk_full


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


def _whoami(node: Node) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(node), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await client.get("/api/whoami", headers={"authorization": "Bearer t"})

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
