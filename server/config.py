"""Node settings: command-line options first, then the environment (through ``starlette.config``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from starlette.config import Config
from starlette.datastructures import Secret

_config = Config()
_KINDS: dict[Any, str] = {bool: "true or false", float: "number", int: "whole number"}


def config(name: str, cast: Callable[[Any], Any] | None = None, default: Any = "") -> Any:
    "A setting from the environment; one that cannot be read stops the program with a line saying which"
    try:
        return _config(name, cast=cast, default=default) if cast else _config(name, default=default)
    except ValueError:
        raise SystemExit(f"cunsync: the setting {name}={os.environ.get(name, '')!r} is not a valid "
                         f"{_KINDS.get(cast, 'value')} (default {default!r}); correct or unset it") from None

DB: str = config("CUNSYNC_DB", default="township.db")
UNIT: str = config("CUNSYNC_UNIT", default="")
BIND: str = config("CUNSYNC_BIND", default="127.0.0.1:8000")
#: Signs session cookies; by default a random secret kept in the node's database.
SECRET: str = str(config("CUNSYNC_SECRET", cast=Secret, default=""))
#: Send session cookies only over HTTPS (set when the node runs behind TLS).
HTTPS_ONLY: bool = config("CUNSYNC_HTTPS_ONLY", cast=bool, default=False)
#: A county or city node pulls its children's snapshots (and runs the other link jobs) every so many
#: minutes; 0 turns the schedule off (``cunsync snapshot pull`` still works).
PULL_MINUTES: float = config("CUNSYNC_PULL_MINUTES", cast=float, default=15)
#: Snapshot cells counting fewer residents, needs or services than this leave the township suppressed;
#: 0 publishes exact counts.
SUPPRESS_BELOW: int = config("CUNSYNC_SUPPRESS_BELOW", cast=int, default=3)
#: Cap the database at this many megabytes (SQLite ``max_page_count``); 0 is no cap. For tests that need
#: a full disk, and for a node on a small disk: past the cap, writes are refused with 507 storage_full.
MAX_DB_MB: float = config("CUNSYNC_MAX_DB_MB", cast=float, default=0)
#: SQLite's page cache for the node's database, in megabytes: the node's memory is about 65 MB (at start)
#: plus this, once the database is larger than it (docs/operations.md, Memory). Lower it on a small PC.
CACHE_MB: float = config("CUNSYNC_CACHE_MB", cast=float, default=64)
#: Refuse a sync request whose body, as sent (compressed), is over this many megabytes: 413 too_large, and
#: the tablet sends smaller batches. For tests, and for a node on a small PC: a body is held in memory while
#: it is read. The default is ``server.app.MAX_BODY``.
MAX_BODY_MB: float = config("CUNSYNC_MAX_BODY_MB", cast=float, default=16)
#: Serve HTTPS with this certificate chain and private key (PEM files); both or neither.
CERTFILE: str = config("CUNSYNC_CERTFILE", default="")
KEYFILE: str = config("CUNSYNC_KEYFILE", default="")
