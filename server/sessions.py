"""Staff sessions, kept on the node. The session cookie holds a random session id (and the CSRF token),
nothing else; the node keeps, for each session, the account, the account's credential stamp at sign-in
(``server.auth``) and when the session expires, under a hash of the id (a copy of the database opens no
session). Signing out deletes the row, so a copy of the cookie is worth nothing afterwards; a session
whose account was since reset, moved or disabled is deleted at its next request (``server.staff``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import NamedTuple

from sync.store import Store

#: How long a session lasts after signing in; the cookie's max-age too.
SESSION_SECONDS = 12 * 3600

_SQL = """
CREATE TABLE IF NOT EXISTS staff_sessions (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, stamp TEXT NOT NULL, expires_at INTEGER NOT NULL);
"""


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
    "The session of that id, unless it ended or expired"
    with store.lock:
        row = store.conn.execute("SELECT username, stamp FROM staff_sessions WHERE id = ? AND expires_at > ?",
                                 (_key(sid), int(time.time()))).fetchone()
    return Session(*row) if row else None


def end(store: Store, sid: str) -> None:
    with store.transaction() as c:
        c.execute("DELETE FROM staff_sessions WHERE id = ?", (_key(sid),))
