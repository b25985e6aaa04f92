"""Node settings: command-line options first, then the environment (through ``starlette.config``)."""

from __future__ import annotations

from starlette.config import Config

config = Config()

DB: str = config("CUNSYNC_DB", default="township.db")
UNIT: str = config("CUNSYNC_UNIT", default="")
BIND: str = config("CUNSYNC_BIND", default="127.0.0.1:8000")
