"""A node whose disk fills up: the size cap for tests and small disks, and how a full disk is reported.

A full disk reaches the node as SQLite's ``SQLITE_FULL`` ("database or disk is full": the file system
has no room, or the database reached ``PRAGMA max_page_count``) or as an ``OSError`` with ``ENOSPC`` or
``EDQUOT``. Either way the write's transaction is rolled back, so nothing was written, and the caller
gets ``StorageFull`` (507, ``storage_full``) instead of a 500: the tablet keeps its ops and sends them
again once the operator has made room.

``CUNSYNC_MAX_DB_MB`` (see ``server.config``) caps the database's size with ``PRAGMA max_page_count``:
for tests that need a full disk without filling one, and for a node on a small disk shared with other
things, which should refuse writes cleanly before the disk itself is full.
"""

from __future__ import annotations

import errno
import sqlite3

from sync.errors import StorageFull

#: What the operator and the tablet are told when the node cannot write.
FULL_MESSAGE = (
    "the node's storage is full: nothing was written, and the tablet keeps its ops and sends them again "
    "at its next sync. Operator: free disk space on the node (or raise CUNSYNC_MAX_DB_MB if it is set) "
    "and restart it if needed"
)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    "Whether an exception means the node's disk (or its database's size cap) is full"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return int(code) & 0xFF == sqlite3.SQLITE_FULL
        return "database or disk is full" in str(exc)
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return False


def storage_full(exc: BaseException | None = None) -> StorageFull:
    "The error a tablet (or staff member) gets when the node could not write for want of space"
    details = {"reason": str(exc)} if exc is not None else None
    return StorageFull(FULL_MESSAGE, details=details)


def cap_database(conn: sqlite3.Connection, max_mb: float) -> int:
    """Cap a database at ``max_mb`` megabytes (``PRAGMA max_page_count``); returns the cap in pages.

    SQLite never sets the cap below the pages the file already holds: a database already over it
    simply cannot grow. ``max_mb`` of 0 or less leaves the database uncapped.
    """
    if max_mb <= 0:
        return 0
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    pages = max(1, int(max_mb * 1024 * 1024) // int(page_size))
    (got,) = conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()
    return int(got)
