"""A node whose system clock goes back (an NTP step, a wrong manual setting, a flat clock battery) keeps
taking tablets whose clocks are right: it checks ops against a time that never goes back (its clock's last
reading moved on by the time since, ``Node.reference_ms``), and the ``server_time`` a refusal hands the
tablet is that same time, so the tablet's one re-stamp passes. A tablet ahead does not move that time.

The node runs in process, a tablet syncing with it through Starlette's TestClient; the one seam is the
system clock the node reads (``sync.hlc``'s ``time``), set back an hour.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from client.tablet import Tablet
from e2e_harness import TOWNSHIP, V1, no_sleep
from server.app import create_app
from server.node import Node
from sync import hlc
from sync.hlc import physical_ms

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

HOUR_NS = 3_600 * 10**9
MINUTE_MS = 60_000


@contextmanager
def tablet_of(tmp_path: Path, clock: Callable[[], int]) -> Iterator[tuple[Node, Tablet]]:
    "A township node in process and a tablet enrolled with it whose clock is ``clock`` (unix ms)"
    node = Node(tmp_path / "township.db", TOWNSHIP)
    _, token = node.add_device(V1, "王芳")
    try:
        with TestClient(create_app(node)) as http, Tablet.init(
                tmp_path / "tablet.db", str(http.base_url), token, client=http, clock=clock, sleep=no_sleep) as tab:
            yield node, tab
    finally:
        node.close()


def test_a_node_clock_set_back_an_hour_still_takes_a_tablet_with_the_right_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_ns = time.time_ns
    later_ms = 0  # how far the tablet's (right) clock has moved on since the node's clock went back

    def tablet_clock() -> int:
        return real_ns() // 1_000_000 + later_ms

    with tablet_of(tmp_path, tablet_clock) as (node, tab):
        rid = tab.create("person", {"name": "张秀英", "phone": "13800000000"})
        tab.sync()
        held_before = node.store.last_hlc()

        monkeypatch.setattr(hlc, "time", SimpleNamespace(time_ns=lambda: real_ns() - HOUR_NS))
        tab.update(rid, {"phone": "13811111111"})
        report = tab.sync(retries=0)  # taken straight away: the node's time did not go back
        assert tab.pending() == 0 and report.sent == 1

        later_ms = 10 * MINUTE_MS  # ten quiet minutes on: the tablet is ahead of the last time the node saw
        tab.update(rid, {"phone": "13822222222"})
        tab.sync(retries=0)  # refused once as clock_ahead, re-stamped to the node's time, taken
        assert tab.pending() == 0
        rec = node.store.get(rid)
        assert rec is not None and rec.data["phone"] == "13822222222"
        assert node.store.last_hlc() > held_before, "the node's later ops keep their place after its earlier"
        assert abs(physical_ms(node.clock.now()) - real_ns() // 1_000_000) < MINUTE_MS

        tab.update(rid, {"notes": "电话已核实"})
        tab.sync(retries=0)  # and from then on, with the corrected clock, without a refusal
        assert tab.pending() == 0


def test_a_tablet_ahead_does_not_walk_the_limit_ahead(tmp_path: Path) -> None:
    "Ops four minutes ahead are taken; they do not move the node's time, so ops eight minutes ahead are not"
    ahead_ms = 4 * MINUTE_MS

    def tablet_clock() -> int:
        return time.time_ns() // 1_000_000 + ahead_ms

    with tablet_of(tmp_path, tablet_clock) as (node, tab):
        rid = tab.create("person", {"name": "张秀英"})
        tab.sync(retries=0)
        ahead_ms = 8 * MINUTE_MS
        tab.clock.offset_ms = 0  # as a tablet whose clock jumped on again
        (edit,) = tab.update(rid, {"phone": "13811111111"})
        assert physical_ms(edit.hlc) - time.time_ns() // 1_000_000 > 7 * MINUTE_MS
        tab.sync(retries=0)  # refused once, re-stamped to the node's time, taken
        assert tab.pending() == 0
        (held,) = [op for op in node.store.record_ops(rid) if op.field == "phone"]
        assert physical_ms(held.hlc) - time.time_ns() // 1_000_000 < 5 * MINUTE_MS
