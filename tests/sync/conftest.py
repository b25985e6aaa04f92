"""Fixtures for the engine's tests: stores, and editors at each tier whose clocks are deterministic.

    store          an in-memory ``Store()``
    db_path        a path for a file store, in a fresh temporary directory
    make_editor    ``make_editor(store, tier, device=..., start=...)``: an editor with a ticking clock
    replica        ``replica(store)``: a new in-memory store holding every op ``store`` holds
    village, township, county, city
                   one editor per tier on ``store``, each on its own device, unit and clock
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync import HLC, Editor, Store

#: 2023-11-14T22:13:20Z: the wall clock every test clock starts from.
T0 = 1_700_000_000_000
#: Each reading of a test clock is this many milliseconds after the previous one.
TICK = 1000

UNITS = {
    "village": "510903001001",  # 育才社区
    "township": "510903001000",  # 育才路街道
    "county": "510903000000",  # 船山区
    "city": "510900000000",  # 遂宁市
}
DEVICES = {
    "village": "tab-village-1",
    "township": "node-510903001000",
    "county": "node-510903000000",
    "city": "node-510900000000",
}
USERS = {"village": "wang.cun", "township": "li.zhen", "county": "zhao.qu", "city": "chen.shi"}

MakeEditor = Callable[..., Editor]


def ticking(start: int = T0, step: int = TICK) -> Callable[[], int]:
    "A wall clock that reads ``start``, then ``start + step``, and so on"
    return itertools.count(start, step).__next__


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as s:
        yield s


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cunsync.db"


@pytest.fixture
def make_editor() -> MakeEditor:
    def make(
        store: Store,
        tier: str = "village",
        *,
        device: str | None = None,
        user: str | None = None,
        unit: str | None = None,
        start: int = T0,
    ) -> Editor:
        return Editor(
            store,
            device=device or DEVICES[tier],
            user=user or USERS[tier],
            unit=unit or UNITS[tier],
            tier=tier,
            clock=HLC(clock=ticking(start)),
        )

    return make


@pytest.fixture
def replica() -> Iterator[Callable[[Store], Store]]:
    made: list[Store] = []

    def copy(source: Store) -> Store:
        s = Store()
        s.apply([op for _, op in source.ops_since(0, limit=1_000_000)])
        made.append(s)
        return s

    yield copy
    for s in made:
        s.close()


@pytest.fixture
def village(store: Store, make_editor: MakeEditor) -> Editor:
    return make_editor(store, "village")


@pytest.fixture
def township(store: Store, make_editor: MakeEditor) -> Editor:
    return make_editor(store, "township")


@pytest.fixture
def county(store: Store, make_editor: MakeEditor) -> Editor:
    return make_editor(store, "county")


@pytest.fixture
def city(store: Store, make_editor: MakeEditor) -> Editor:
    return make_editor(store, "city")
