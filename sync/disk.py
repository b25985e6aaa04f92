"""How a full or read-only disk shows itself, on a node or a tablet alike.

A full disk reaches SQLite's caller as ``SQLITE_FULL`` ("database or disk is full": the file system has no
room, or the database reached ``PRAGMA max_page_count``) or as an ``OSError`` with ``ENOSPC`` or ``EDQUOT``.
A database SQLite could open only for reading (its file, its folder or the file system holding it is
read-only) says so at the first write: ``SQLITE_READONLY`` ("attempt to write a readonly database"), or
``EROFS`` from the operating system. Either way the write's transaction is rolled back: nothing was written.
"""

from __future__ import annotations

import errno
import sqlite3

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    "The primary SQLite result code of an error (extended codes carry it in their low byte), if known"
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_disk_full(exc: BaseException) -> bool:
    "Whether an exception means the disk (or the database's size cap) is full"
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        if code is not None:
            return code == sqlite3.SQLITE_FULL
        return "database or disk is full" in str(exc)
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return False


def is_read_only(exc: BaseException) -> bool:
    "Whether an exception means the database, its folder or its file system cannot be written"
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        if code is not None:
            return code == sqlite3.SQLITE_READONLY
        return "readonly database" in str(exc)
    if isinstance(exc, OSError):
        return exc.errno == errno.EROFS
    return False
