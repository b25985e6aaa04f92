"""What every node command shares: the ``--db`` option and opening a node's database for one command."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import click

from sync import units as unitlib
from sync.errors import SyncError

from . import config
from .node import Node

db_option = click.option(
    "--db", "db", default=config.DB, show_default=True, type=click.Path(dir_okay=False),
    help="The node's database file (env CUNSYNC_DB)",
)


def open_node(db: str, unit: str | None = None) -> Node:
    "A node's database; without ``unit``, an existing one (its unit is read from it)"
    if unit is None:
        if not Path(db).exists():
            raise click.ClickException(f"{db} does not exist; start the node once with `cunsync serve --unit CODE`")
        with closing(sqlite3.connect(db)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'unit'").fetchone()
        if row is None:
            raise click.ClickException(f"{db} is not a cunsync node database")
        unit = str(row[0])
    try:
        return Node(db, unit, max_db_mb=config.MAX_DB_MB, cache_mb=config.CACHE_MB)
    except unitlib.UnitCodeError as e:
        raise click.ClickException(str(e)) from None


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
