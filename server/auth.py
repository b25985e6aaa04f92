"""Staff accounts on a node: scrypt password hashes, lock-out after repeated failures, roles by tier.

Roles: ``township`` staff work on every village under their township (conflicts, duplicates, devices);
``county`` and ``city`` staff see aggregates only, never a personal field; ``admin`` manages users and
settings. A staff member's unit and role come from their account, never from what a request says.

A signed-in session holds the account's ``stamp``, a short hash of its password hash, role and unit: a
password reset, a new role or unit, or disabling the account ends every session of it at its next request.
Accounts are disabled, never deleted: ops name their author's username, and history keeps showing who
that was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from sync import units as unitlib
from sync.errors import BadRequest, Forbidden, NotFound, TooManyAttempts, Unauthorized
from sync.store import Store

ROLES = ("township", "county", "city", "admin")
#: Wrong passwords in a row before an account is locked, and for how long.
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
_N, _R, _P = 2**14, 8, 1

_SQL = """
CREATE TABLE IF NOT EXISTS staff (
    username TEXT PRIMARY KEY, password TEXT NOT NULL, role TEXT NOT NULL, unit TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '', failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
    disabled_at INTEGER NOT NULL DEFAULT 0);
"""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(digest) // 2)
    return hmac.compare_digest(got.hex(), digest)


def _stamp(password_hash: str, role: str, unit: str) -> str:
    "What a session holds to stay valid: it changes with the password, the role and the unit"
    return hashlib.sha256(f"{password_hash}\0{role}\0{unit}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Staff:
    username: str
    role: str
    unit: str
    display_name: str = ""
    #: The account's credential stamp when it was read (``_stamp``); a session keeps it.
    stamp: str = field(default="", repr=False, compare=False)

    @property
    def scope(self) -> tuple[str, str]:
        return unitlib.descendant_range(self.unit)

    def require(self, *roles: str) -> None:
        "Refuse unless this staff member has one of the roles"
        if self.role not in roles:
            what = {"county": "county staff see aggregates only", "city": "city staff see aggregates only",
                    "admin": "admins manage users and settings, not records",
                    "township": "this needs another role"}[self.role]
            raise Forbidden(f"{what}; this needs the role {' or '.join(roles)}",
                            details={"role": self.role, "needs": list(roles)})


class Accounts:
    def __init__(self, store: Store, node_unit: str) -> None:
        self.store = store
        self.node_unit = node_unit
        store.conn.executescript(_SQL)
        with store.transaction() as c:  # a database made before accounts could be disabled
            if "disabled_at" not in {row[1] for row in c.execute("PRAGMA table_info(staff)")}:
                c.execute("ALTER TABLE staff ADD COLUMN disabled_at INTEGER NOT NULL DEFAULT 0")

    def add(self, username: str, password: str, *, role: str, unit: str | None = None,
            display_name: str | None = None) -> Staff:
        """Add an account, or reset one: a new password, role and unit, enabled again and unlocked, its
        name kept unless ``display_name`` is given. Every session of the old account ends."""
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise BadRequest("a password needs at least 8 characters")
        code = unitlib.normalize_code(unit or self.node_unit)
        if not (unitlib.is_under(code, self.node_unit) or unitlib.is_under(self.node_unit, code)):
            raise BadRequest(f"unit {code} is neither under nor above this node's unit {self.node_unit}")
        hashed = hash_password(password)
        with self.store.transaction() as c:
            (name,) = c.execute(
                "INSERT INTO staff (username, password, role, unit, display_name, created_at)"
                " VALUES (?,?,?,?,coalesce(?, ''),?) ON CONFLICT (username) DO UPDATE SET"
                " password = excluded.password, role = excluded.role, unit = excluded.unit,"
                " display_name = coalesce(?, display_name), failures = 0, locked_until = 0, disabled_at = 0"
                " RETURNING display_name",
                (username, hashed, role, code, display_name, int(time.time()), display_name)).fetchone()
        return Staff(username, role, code, name, stamp=_stamp(hashed, role, code))

    def get(self, username: str) -> Staff | None:
        "The enabled account of that name"
        with self.store.lock:
            row = self.store.conn.execute(
                "SELECT username, role, unit, display_name, password FROM staff"
                " WHERE username = ? AND disabled_at = 0", (username,)).fetchone()
        if row is None:
            return None
        name, role, unit, display_name, password = row
        return Staff(name, role, unit, display_name, stamp=_stamp(password, role, unit))

    def disable(self, username: str) -> Staff:
        """Disable an account: it can no longer sign in and its sessions end. The row stays, so history
        still shows who the username was; ``add`` enables it again with a new password."""
        with self.store.transaction() as c:
            row = c.execute("SELECT username, role, unit, display_name FROM staff WHERE username = ?",
                            (username,)).fetchone()
            if row is None:
                raise NotFound(f"no staff account {username!r}", details={"username": username})
            c.execute("UPDATE staff SET disabled_at = ? WHERE username = ? AND disabled_at = 0",
                      (int(time.time()), username))
        return Staff(*row)

    def listing(self) -> list[tuple[Staff, bool]]:
        "Every account, by username, and whether it is disabled (never the password hash)"
        with self.store.lock:
            rows = self.store.conn.execute(
                "SELECT username, role, unit, display_name, disabled_at FROM staff ORDER BY username").fetchall()
        return [(Staff(*row[:4]), bool(row[4])) for row in rows]

    def sign_in(self, username: str, password: str) -> Staff:
        """Check a password. After ``MAX_FAILURES`` wrong ones in a row the account is locked for
        ``LOCK_SECONDS``, whatever password comes next."""
        now = int(time.time())
        with self.store.transaction() as c:
            row = c.execute("SELECT password, role, unit, display_name, failures, locked_until FROM staff"
                            " WHERE username = ? AND disabled_at = 0", (username,)).fetchone()
            if row is None:
                verify_password(password, hash_password("timing"))  # same work as a real check
                wrong = True
            else:
                if row[5] > now:
                    raise TooManyAttempts(f"this account is locked after {MAX_FAILURES} wrong passwords; try "
                                          f"again in {(row[5] - now) // 60 + 1} minutes",
                                          details={"retry_after": row[5] - now})
                wrong = not verify_password(password, row[0])
                if wrong:
                    failures = row[4] + 1
                    c.execute("UPDATE staff SET failures = ?, locked_until = ? WHERE username = ?",
                              (failures % MAX_FAILURES, now + LOCK_SECONDS if failures >= MAX_FAILURES else 0,
                               username))
                else:
                    c.execute("UPDATE staff SET failures = 0, locked_until = 0 WHERE username = ?", (username,))
        if wrong or row is None:
            raise Unauthorized("wrong username or password", code="bad_credentials")
        return Staff(username, row[1], row[2], row[3], stamp=_stamp(row[0], row[1], row[2]))
