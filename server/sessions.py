"""Staff sessions, kept on the node. The session cookie holds a random session id (and the CSRF token),
nothing else; the node keeps, for each session, the account, the account's credential stamp at sign-in
(``server.auth``) and when the session expires, under a hash of the id (a copy of the database opens no
session). A session ends after ``SESSION_SECONDS`` without a request: each request moves its expiry on
(``find``); the cookie is a browser-session cookie, so the node alone decides. Signing out deletes the
row, so a copy of the cookie is worth nothing afterwards; a session whose account was since reset, moved
or disabled is deleted at its next request (``server.staff``). On a database that cannot be written (a full
disk, a file system turned read-only) sessions stay valid, unmoved, so the workbench's pages stay readable.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
import weakref
from typing import NamedTuple

from sync.store import Store

from .storage import storage_error

log = logging.getLogger(__name__)

#: How long a session lasts after its last request.
SESSION_SECONDS = 12 * 3600
#: A request moves the session's expiry on only if it was last moved this long ago (see ``find``).
MOVE_AFTER_SECONDS = 5 * 60

_SQL = """
CREATE TABLE IF NOT EXISTS staff_sessions (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, stamp TEXT NOT NULL, expires_at INTEGER NOT NULL);
"""

#: The stores whose sessions could not be moved on last time: warned once, until a move succeeds again.
_unmoved: weakref.WeakSet[Store] = weakref.WeakSet()


class Session(NamedTuple):
    username: str
    #: the account's credential stamp when it signed in
    stamp: str


def ensure_table(store: Store) -> None:
    with store.transaction() as c:
        c.execute(_SQL)


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def start(store: Store, username: str, stamp: str) -> str:
    "A new session for an account that just signed in: its id, for the cookie. Expired sessions go."
    sid = secrets.token_urlsafe(32)
    now = int(time.time())
    with store.transaction() as c:
        c.execute("DELETE FROM staff_sessions WHERE expires_at <= ?", (now,))
        c.execute("INSERT INTO staff_sessions (id, username, stamp, expires_at) VALUES (?,?,?,?)",
                  (_key(sid), username, stamp, now + SESSION_SECONDS))
    return sid


def find(store: Store, sid: str) -> Session | None:
    """The session of that id, unless it ended or expired; it now expires ``SESSION_SECONDS`` from now.
    The expiry is written only when it was last moved ``MOVE_AFTER_SECONDS`` ago or more, not at every
    request: a page stays a read, not a write transaction (a commit to disk, and a wait for the store's
    lock behind the tablets' sync batches); the price is that a session may end up to that many minutes
    sooner than ``SESSION_SECONDS`` after its last request. If the database cannot be written (full, or
    read-only), the session stays valid and unmoved: reading a page must not fail for want of a write."""
    key, now = _key(sid), int(time.time())
    with store.lock:
        row = store.conn.execute("SELECT username, stamp, expires_at FROM staff_sessions WHERE id = ? AND expires_at > ?",
                                 (key, now)).fetchone()
    if row is None:
        return None
    username, stamp, expires_at = row
    if expires_at <= now + SESSION_SECONDS - MOVE_AFTER_SECONDS:
        _move(store, key, now)
    return Session(username, stamp)


def _move(store: Store, key: str, now: int) -> None:
    "Move a session's expiry on, unless the database cannot be written (logged once, not at every request)"
    try:
        with store.transaction() as c:  # not one that ended in between (signed out, or expired)
            c.execute("UPDATE staff_sessions SET expires_at = ? WHERE id = ? AND expires_at > ?",
                      (now + SESSION_SECONDS, key, now))
    except (sqlite3.Error, OSError) as e:
        err = storage_error(e, store.path)
        if err is None:
            raise
        if store not in _unmoved:
            _unmoved.add(store)
            log.warning("staff sessions are not moved on while %s: %s", err.code.replace("_", " "), e)
        return
    _unmoved.discard(store)


def end(store: Store, sid: str) -> None:
    with store.transaction() as c:
        c.execute("DELETE FROM staff_sessions WHERE id = ?", (_key(sid),))
