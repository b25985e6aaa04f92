"""Fixtures shared by the node's tests.

    desk    ``Desk``: a township node, a tablet of one village syncing in-process, and staff signed in on
            the workbench
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from test_staff_stale_forms import Desk


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path / "township.db")
    yield d
    d.close()
