"""A node whose disk fills up or turns read-only: the size cap for tests and small disks, and how either is
reported (``sync.disk`` tells them apart, for the node and the tablet alike).

A full disk is rolled back, so nothing was written, and the caller gets ``StorageFull`` (507,
``storage_full``) instead of a 500: the tablet keeps its ops and sends them again once the operator has made
room. A read-only database (a file system remounted read-only after errors, a service's ``ReadWritePaths``)
is rolled back too and gets 503 ``storage_read_only``; ``cunsync serve`` checks at start-up that it can
write (``Node.check_writable``) and refuses to start otherwise, and ``/api/health`` answers the same 503
once the file system has turned read-only under the running node (``Node.check_file_system``). Opening
the node (``Node()``), which brings a database of an older version up to date and so writes, raises the
same errors (``storage_errors``): ``cunsync serve`` then says so and does not start.

``CUNSYNC_MAX_DB_MB`` (see ``server.config``) caps the database's size with ``PRAGMA max_page_count``:
for tests that need a full disk without filling one, and for a node on a small disk shared with other
things, which should refuse writes cleanly before the disk itself is full.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sync.disk import is_disk_full, is_io_error, is_read_only, read_only_file_system
from sync.errors import StorageFull, SyncError, Unavailable

#: What the operator and the tablet are told when the node cannot write.
FULL_MESSAGE = (
    "the node's storage is full: nothing was written, and the tablet keeps its ops and sends them again "
    "at its next sync. Operator: free disk space on the node (or raise CUNSYNC_MAX_DB_MB if it is set) "
    "and restart it if needed"
)
READ_ONLY_MESSAGE = (
    "the node's database cannot be written: its file, its folder or the file system holding it is "
    "read-only. Nothing was written, and the tablet keeps its ops and sends them again at its next sync. "
    "Operator: make them writable by the user the node runs as (a file system remounted read-only after "
    "disk errors needs checking and remounting; a systemd service needs the folder in ReadWritePaths), "
    "then restart the node"
)


def storage_error(exc: BaseException, path: str | None = None) -> SyncError | None:
    """The error a caller gets for a storage failure: full or read-only; None for any other error.
    ``path``, the database's: an I/O error there on a file system turned read-only since the node opened
    it is read-only too (``sync.disk``), not an internal error."""
    if is_disk_full(exc):
        return storage_full(exc)
    if is_read_only(exc):
        return read_only(exc)
    if path is not None and is_io_error(exc):
        refused = read_only_file_system(path)
        if refused is not None:
            return read_only(refused)
    return None


@contextmanager
def storage_errors(path: str | None = None) -> Iterator[None]:
    "SQLite's errors inside raised as ``storage_error`` says: full or read-only; any other as it is"
    try:
        yield
    except sqlite3.Error as e:
        err = storage_error(e, path)
        if err is None:
            raise
        raise err from None


def read_only(exc: BaseException) -> Unavailable:
    "The error a caller gets when the node's database cannot be written"
    return Unavailable(READ_ONLY_MESSAGE, code="storage_read_only", details={"reason": str(exc)})


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
