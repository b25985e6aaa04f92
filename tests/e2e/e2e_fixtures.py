"""Fixtures for the end-to-end, browser and fault tests, loaded for every test by ``tests/conftest.py``
(the harness itself is ``e2e_harness.py``).

    node_db        the path of a fresh node database for the pilot township 510903001000
    node           a ``NodeProcess`` on ``node_db``, not started yet (tests enrol devices first or
                   start it at once); killed at teardown
    enrol          ``enrol(unit, user, tier="village") -> (device, token)``, written straight into the
                   node's SQLite file (fine while the node runs: WAL, its own connection, closed after)
    make_tablet    ``make_tablet(token, name=None, **kw) -> Tablet`` set up against the running node
                   through ``/api/whoami``, with a no-op ``sleep`` unless ``sleep=`` is given
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.tablet import Tablet
from e2e_harness import TOWNSHIP, Enrol, MakeTablet, NodeProcess, no_sleep
from server.node import Node


@pytest.fixture
def node_db(tmp_path: Path) -> Path:
    path = tmp_path / "township.db"
    Node(path, TOWNSHIP).close()  # create it, so devices can be enrolled before the first start
    return path


@pytest.fixture
def node(node_db: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(node_db)
    yield proc
    proc.kill()


@pytest.fixture
def enrol(node_db: Path) -> Enrol:
    def enrol(unit: str, user: str, *, tier: str = "village") -> tuple[str, str]:
        n = Node(node_db, TOWNSHIP)
        try:
            return n.add_device(unit, user, tier=tier)
        finally:
            n.close()

    return enrol


@pytest.fixture
def make_tablet(tmp_path: Path, node: NodeProcess) -> Iterator[MakeTablet]:
    made: list[Tablet] = []

    def make(token: str, name: str | None = None, **kw: Any) -> Tablet:
        kw.setdefault("sleep", no_sleep)
        tab = Tablet.init(tmp_path / f"{name or f'tablet-{len(made)}'}.db", node.url, token, **kw)
        made.append(tab)
        return tab

    yield make
    for tab in made:
        tab.close()
