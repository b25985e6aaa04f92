"""What every node command shares: the ``--db`` option and opening a node's database for one command; and
what the tablet's commands (``client/cli.py``) share with them: ``checked``, a typed value's refusal."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import click

from sync import checks, units as unitlib
from sync.errors import SyncError

from . import config
from .node import Node

db_option = click.option(
    "--db", "db", default=config.DB, show_default=True, type=click.Path(dir_okay=False),
    help="The node's database file (env CUNSYNC_DB)",
)


def checked(coll: str, values: dict[str, Any], *, options: dict[str, str] | None = None) -> dict[str, Any]:
    """The values a command was given (unset ones left out), full-width digits made ASCII, refused as the
    tablet's forms refuse them (``sync.checks.command_values``). ``options``: the option a field is given
    with, where it is not ``--`` and the field's name in kebab case. A refusal is click's usage error (exit
    status 2), naming the option, the problem and its code."""
    typed, found = checks.command_values(coll, values)
    if found:
        name, problem = next(iter(found.items()))
        hint = (options or {}).get(name, "--" + name.replace("_", "-"))
        raise click.BadParameter(f"{problem.message} [{problem.code}]", param_hint=hint)
    return typed


def open_node(db: str, unit: str | None = None) -> Node:
    """A node's database; without ``unit``, an existing one (its unit is read from it). With ``unit``, a
    new one, or an existing one of that unit"""
    stored = _stored_unit(db)
    if unit is None:
        if stored is None:
            raise click.ClickException(f"{db} does not exist; start the node once with `cunsync serve --unit CODE`")
        unit = stored
    elif stored is not None and stored != unit:
        raise click.ClickException(f"{db} is the node of {stored}, not of {unit}; give --unit {stored} (env "
                                   "CUNSYNC_UNIT), or the database of that node with --db (env CUNSYNC_DB)")
    try:
        return Node(db, unit, max_db_mb=config.MAX_DB_MB, cache_mb=config.CACHE_MB)
    except unitlib.UnitCodeError as e:
        raise click.ClickException(str(e)) from None
    except SyncError as e:  # a full or read-only disk where opening brings an older database up to date
        raise click.ClickException(f"{db}: {e.message}") from None


def _stored_unit(db: str) -> str | None:
    "The unit of the node whose database ``db`` is; None if there is no such file"
    if not Path(db).exists():
        return None
    try:
        with closing(sqlite3.connect(db)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'unit'").fetchone()
    except sqlite3.DatabaseError as e:
        if not _no_node(e):
            raise click.ClickException(
                f"cannot open {db} ({e}). The node reads and writes the file and, beside it, its -wal and -shm "
                "files: check that the file and its folder exist and belong to the user the node runs as, and "
                "that the file system is not read-only (remounted after disk errors, or outside a service's "
                "ReadWritePaths). Do not start a new database: this one holds the node's data") from None
        row = None
    if row is None:
        raise click.ClickException(f"{db} is not a cunsync node database; check --db (env CUNSYNC_DB)")
    return str(row[0])


def _no_node(e: sqlite3.DatabaseError) -> bool:
    "Whether an error reading a node's unit means the file is no node database: not SQLite, or no meta table"
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    return code == sqlite3.SQLITE_NOTADB or (code == sqlite3.SQLITE_ERROR and "no such table" in str(e))


@contextmanager
def opened(db: str) -> Iterator[Node]:
    "An existing node's database for one command; domain errors become click errors here"
    node = open_node(db)
    try:
        yield node
    except (SyncError, unitlib.UnitCodeError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        node.close()

