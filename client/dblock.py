"""The lock beside a tablet's database that keeps a PIN change from happening under anyone who has the
database open.

Every open ``Tablet`` holds it shared (the tablet app holds it twice, once per connection; a CLI command
once, while it runs), so any number of them work side by side, as SQLite's WAL lets them. A PIN change
(``Tablet.change_pin``) takes it exclusively without waiting: refused while anything else has the
database open, and while it runs no tablet opens. SQLite's own locks cannot do this: they last a
transaction, not a connection's life, and encrypting a plaintext database replaces its file.

An OS advisory lock (``flock``) on ``<database>.lock``: it belongs to an open file, not to a process, so
two tablets opened in one process hold two locks and either one refuses a PIN change made in that
process too; the OS drops it when its file is closed or its process ends, however it ends. The lock file
holds nothing and is deleted only with the database (a wipe, a failed set-up): two processes could otherwise
lock two files of one name.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

#: The lock file is the database's path with this appended
SUFFIX = ".lock"


class Busy(Exception):
    "The lock is held in a way that conflicts: another holder has it exclusively, or anyone else has it"


class DatabaseLock:
    """The lock of the database at ``db``, held shared from here until ``release``. Raises ``Busy``
    (holding nothing) while a PIN change holds it exclusively."""

    def __init__(self, db: str) -> None:
        self.path = db + SUFFIX
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, BlockingIOError):
                raise Busy(f"{self.path} is held exclusively") from None
            raise
        self._fd: int | None = fd

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively for the block, then shared again. Raises ``Busy`` while anyone
        else holds it; it is held shared still."""
        fd = self._fd
        if fd is None:
            raise ValueError("the lock was released")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Linux drops the shared lock when converting it fails: take it again. Only an exclusive
            # holder (a PIN change, which is short) makes this wait
            fcntl.flock(fd, fcntl.LOCK_SH)
            raise Busy(f"{self.path} is held by another open tablet") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)

    def release(self) -> None:
        "Let go of the lock (closing its file); again is a no-op"
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
