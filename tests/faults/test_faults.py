"""The fault scenarios under pytest: each must inject its faults, lose nothing the node acknowledged, and
leave every replica converged and intact (the scenarios assert that themselves; see ``scenarios.py``).

The seed is fixed so CI runs the same faults every time; set CUNSYNC_FAULTS_SEED to explore others.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .scenarios import flaky_link, full_disk, node_kill_9, tablet_kill_9

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("CUNSYNC_FAULTS_SEED", "20261127"))


def test_node_killed_at_random_points_of_100_sync_rounds_loses_nothing(tmp_path: Path) -> None:
    out = node_kill_9(tmp_path, SEED)
    assert out.faults == 6
    assert out.acknowledged > 500 and out.lost == 0


def test_a_link_that_cuts_delays_stalls_and_duplicates_loses_nothing(tmp_path: Path) -> None:
    out = flaky_link(tmp_path, SEED)
    assert out.faults >= 5
    assert out.acknowledged > 200 and out.lost == 0


def test_a_tablet_killed_mid_write_and_mid_sync_loses_nothing(tmp_path: Path) -> None:
    out = tablet_kill_9(tmp_path, SEED)
    assert out.faults >= 4  # three mid-write kills; mid-sync kills unless a sync finished first
    assert out.acknowledged > 0 and out.lost == 0


def test_a_full_disk_is_a_clear_507_and_sync_resumes_once_there_is_room(tmp_path: Path) -> None:
    out = full_disk(tmp_path, SEED)
    assert out.faults >= 1
    assert out.acknowledged > 0 and out.lost == 0
