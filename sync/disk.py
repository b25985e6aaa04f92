"""How a full or read-only disk shows itself, on a node or a tablet alike.

A full disk reaches SQLite's caller as ``SQLITE_FULL`` ("database or disk is full": the file system has no
room, or the database reached ``PRAGMA max_page_count``) or as an ``OSError`` with ``ENOSPC`` or ``EDQUOT``.
A database SQLite could open only for reading (its file, its folder or the file system holding it is
read-only) says so at the first write: ``SQLITE_READONLY`` ("attempt to write a readonly database"), or
``EROFS`` from the operating system. Either way the write's transaction is rolled back: nothing was written.

A file system that turns read-only under a running program (ext4's ``errors=remount-ro``) is another matter:
the connection SQLite opened before keeps reading, a write it rolls back meets nothing, and a write it commits
fails as an I/O error (``SQLITE_IOERR_WRITE``). Only the operating system tells it then, refusing to open the
file for writing with ``EROFS`` (``os.access`` still says yes): ``read_only_file_system`` asks it.
"""

from __future__ import annotations

import errno
import os
import sqlite3

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in their low byte), if it has
    one: ``sqlite3``'s errors and SQLCipher's (an encrypted tablet's, classes of their own) alike"""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_disk_full(exc: BaseException) -> bool:
    "Whether an exception means the disk (or the database's size cap) is full"
    return _means(exc, sqlite3.SQLITE_FULL, "database or disk is full", _FULL_ERRNOS)


def is_read_only(exc: BaseException) -> bool:
    "Whether an exception means the database, its folder or its file system cannot be written"
    return _means(exc, sqlite3.SQLITE_READONLY, "readonly database", {errno.EROFS})


def is_io_error(exc: BaseException) -> bool:
    "Whether an exception is SQLite's (or the operating system's) I/O error, whatever its cause"
    return _means(exc, sqlite3.SQLITE_IOERR, "disk I/O error", {errno.EIO})


def read_only_file_system(database: str) -> OSError | None:
    """The operating system's ``EROFS`` when the file system of an SQLite database in WAL mode cannot be
    written now, else None. Cheap, for a check that runs often: opens the database's ``-wal`` file for
    writing and closes it; writes nothing, takes no lock. Never the database file itself: closing any
    descriptor of a file drops every POSIX lock this process holds on it (fcntl's rule), SQLite's among
    them. A ``-wal`` file missing (no connection open) or one this user may not open is None: that is no
    read-only file system, and an open SQLite connection still writes such a file."""
    try:
        os.close(os.open(database + "-wal", os.O_WRONLY))
    except OSError as e:
        return e if e.errno == errno.EROFS else None
    return None


def _means(exc: BaseException, sqlite_code: int, message: str, errnos: set[int]) -> bool:
    """Whether ``exc`` is SQLite's (or SQLCipher's) ``sqlite_code``, an sqlite3 error saying ``message``,
    or an OS error of ``errnos``"""
    code = _sqlite_code(exc)
    if code is not None:
        return code == sqlite_code
    if isinstance(exc, sqlite3.Error):
        return message in str(exc)
    if isinstance(exc, OSError):
        return exc.errno in errnos
    return False
