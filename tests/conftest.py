"""Shared test settings. In CI (CI=true), Hypothesis runs derandomized: the same examples every run, so a
red build always reproduces; locally it explores new examples each run.

    umask_022         the umask of a plain Debian account: what a file made without a mode gets
    away_from_china   the process's zone set to one whose date and hour differ from China's right now
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from sync.types import CHINA_TIME

# node_db, node, enrol, make_tablet: real nodes on loopback, for tests/e2e, tests/browser and tests/faults
pytest_plugins = ["e2e_fixtures"]

# No deadline: a deadline is a timing assertion, which fails on a busy machine (the suite runs on every
# core, beside node subprocesses and Chromium) without a bug; speed is measured in bench/.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", settings.get_profile("local"), derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")


@pytest.fixture
def umask_022() -> Iterator[None]:
    "The umask of Debian's users and of a systemd service without UMask=: files made plainly are 0644"
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


@pytest.fixture
def away_from_china(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A system zone where, at this moment, both the hour and the date differ from China's (so code that
    uses the system's zone instead of China time shows a wrong time and a wrong day): 20 hours behind
    China, or, late in China's evening, 6 hours ahead. Yields the zone (a POSIX TZ string)."""
    zone = "XXX+12" if dt.datetime.now(CHINA_TIME).hour < 19 else "XXX-14"  # UTC-12 / UTC+14
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    assert dt.date.today() != dt.datetime.now(CHINA_TIME).date()
    yield zone
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    "The collection of every record the store decodes from here on, in order (to check a page decodes only what it shows)"
    from sync.store import Record, Store

    seen: list[str] = []
    record = Store._record

    def counted(store: Store, row: tuple[Any, ...]) -> Record:
        seen.append(row[1])
        return record(store, row)

    monkeypatch.setattr(Store, "_record", counted)
    return seen
