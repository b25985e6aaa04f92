"""Tablets whose clocks are days wrong, against a real node: the node records each device's skew (what
``cunsync device list`` and the workbench's devices page show), a wrong clock never wins a concurrent
edit, and every replica converges.

(The merge rule's tie order with clocks days apart is property-tested in tests/sync/test_convergence.py;
the node's refusal of a single op stamped days ahead is in test_e2e_errors.py. Here the whole loop runs:
refusal, the tablet's correction and re-stamping, the flag on the node.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import httpx

from client.tablet import NodeUnreachable, Tablet
from e2e_harness import TOWNSHIP, V1, Enrol, MakeTablet, NodeProcess, PoorLink, integrity, node_digest
from server.node import Node
from sync.hlc import physical_ms, wall_ms

pytestmark = pytest.mark.e2e

DAY = 86_400_000
HOUR = 3_600_000
#: How close the recorded skew must be to the clock's real error (a sync's own time, on a loaded machine)
SLACK = 60_000


class Clock:
    "A tablet's wall clock that can be set wrong at any moment, as a flat battery or a bad manual setting does"

    def __init__(self, error_ms: int = 0) -> None:
        self.error_ms = error_ms

    def __call__(self) -> int:
        return wall_ms() + self.error_ms


def _devices(node_db: Path) -> dict[str, dict[str, Any]]:
    n = Node(node_db, TOWNSHIP)
    try:
        return {d["device"]: d for d in n.devices()}
    finally:
        n.close()


def _node_op(node_db: Path, device: str, field: str) -> tuple[int, Any]:
    "(clock, value) of a device's last op on a field, as the node holds it"
    import sqlite3

    conn = sqlite3.connect(node_db)
    try:
        hlc, value = conn.execute(
            "SELECT o.hlc, o.value FROM ops o JOIN sites s ON s.id = o.site WHERE s.device = ? AND o.field = ?"
            " ORDER BY o.counter DESC LIMIT 1", (device, field)).fetchone()
        return int(hlc), value
    finally:
        conn.close()


def _three(node: NodeProcess, enrol: Enrol, make_tablet: MakeTablet, wrong: Clock) -> tuple[Tablet, Tablet, Tablet]:
    "A tablet with the given clock, one with a right clock, and an observer; all three hold one resident"
    node.start()
    skewed = make_tablet(enrol(V1, "wang")[1], "wang", clock=wrong)
    honest = make_tablet(enrol(V1, "li")[1], "li")
    observer = make_tablet(enrol(V1, "zhao")[1], "zhao")
    return skewed, honest, observer


def _converged(node_db: Path, *tabs: Tablet) -> None:
    for _ in range(2):
        for tab in tabs:
            tab.sync()
    want = node_digest(node_db, V1)
    for tab in tabs:
        assert tab.pending() == 0
        assert tab.store.digest() == want, tab.device
        assert integrity(Path(tab.path)) == "ok"
    assert integrity(node_db) == "ok"


def test_a_clock_days_ahead_is_flagged_and_cannot_win_a_concurrent_edit(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    clock = Clock()
    ahead, honest, observer = _three(node, enrol, make_tablet, clock)
    rid = honest.create("person", {"name": "张秀英", "phone": "13800000000"})
    for tab in (honest, ahead, observer):
        tab.sync()

    clock.error_ms = 3 * DAY  # the tablet's clock jumps three days ahead; its worker edits offline
    (early,) = ahead.update(rid, {"phone": "13811111111"})
    assert physical_ms(early.hlc) > wall_ms() + 2 * DAY
    time.sleep(0.02)
    (later,) = honest.update(rid, {"phone": "13822222222"})  # later in real time, without seeing it
    honest.sync()
    report = ahead.sync()  # refused as clock_ahead, re-stamped, sent again

    assert report.rounds >= 1 and ahead.pending() == 0
    stamped, value = _node_op(node_db, ahead.device, "phone")
    assert value == '"13811111111"'
    assert physical_ms(stamped) <= wall_ms(), "the node holds an op stamped in its future"
    assert stamped < later.hlc, "the re-stamped edit keeps its place before the later one"
    devices = _devices(node_db)
    assert abs(devices[ahead.device]["skew_ms"] - 3 * DAY) < SLACK, devices[ahead.device]
    assert abs(devices[honest.device]["skew_ms"]) < SLACK
    assert abs(ahead.status()["clock_offset_ms"] + 3 * DAY) < SLACK  # it stamps with the node's time now

    _converged(node_db, ahead, honest, observer)
    for tab in (ahead, honest, observer):
        rec = tab.get(rid)
        assert rec is not None and rec.data["phone"] == "13822222222", tab.device
        assert rec.conflicts == ["phone"]  # both values stay visible for the township to settle

    (after,) = ahead.update(rid, {"notes": "电话已核实"})  # from now on its ops carry the corrected time
    assert abs(physical_ms(after.hlc) - wall_ms()) < SLACK
    ahead.sync()
    assert abs(_devices(node_db)[ahead.device]["skew_ms"] - 3 * DAY) < SLACK, "the flag stays while the clock is wrong"


def test_a_clock_days_behind_is_flagged_loses_concurrent_edits_and_wins_by_causality(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    clock = Clock()
    behind, honest, observer = _three(node, enrol, make_tablet, clock)
    rid = honest.create("person", {"name": "李桂兰", "phone": "13800000000", "address": "育才路1号"})
    for tab in (honest, behind, observer):
        tab.sync()

    clock.error_ms = -3 * DAY
    (first,) = honest.update(rid, {"phone": "13822222222"})
    honest.sync()
    time.sleep(0.02)
    (late,) = behind.update(rid, {"phone": "13811111111"})  # later in real time, concurrent, clock behind
    assert late.hlc < first.hlc  # its clock cannot make it win
    behind.sync()
    devices = _devices(node_db)
    assert abs(devices[behind.device]["skew_ms"] + 3 * DAY) < SLACK, devices[behind.device]

    _converged(node_db, behind, honest, observer)
    for tab in (behind, honest, observer):
        rec = tab.get(rid)
        assert rec is not None and rec.data["phone"] == "13822222222" and rec.conflicts == ["phone"], tab.device

    # having seen the other value, the worker with the slow clock settles it: seeing beats any clock
    (fix,) = behind.resolve(rid, "phone", "13811111111")
    assert first.id in fix.pred and late.id in fix.pred
    honest.update(rid, {"address": "育才路2号"})  # meanwhile, an edit of another field
    behind.sync()
    _converged(node_db, behind, honest, observer)
    for tab in (behind, honest, observer):
        rec = tab.get(rid)
        assert rec is not None, tab.device
        assert (rec.data["phone"], rec.data["address"], rec.conflicts) == ("13811111111", "育才路2号", [])
    assert abs(_devices(node_db)[behind.device]["skew_ms"] + 3 * DAY) < SLACK


def test_ops_re_stamped_mid_sync_are_sent_as_re_stamped(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock 3 minutes slow is corrected after the first round trip, which re-stamps the ops not sent
    yet: the batches that follow (one of them read ahead while the node worked) carry the new stamps"""
    import client.tablet as tablet_mod

    monkeypatch.setattr(tablet_mod, "PUSH_BATCH", 4)
    node.start()
    tab = make_tablet(enrol(V1, "wang")[1], "wang", clock=Clock(-3 * 60_000))
    for i in range(5):
        tab.create("person", {"name": f"王{i}", "phone": f"1380000000{i}"})  # 3 ops each
    report = tab.sync()
    assert tab.pending() == 0 and report.rounds >= 4
    assert tab.clock.offset_ms > 60_000  # corrected
    import sqlite3

    def own(db: Path) -> set[tuple[Any, ...]]:
        conn = sqlite3.connect(db)
        try:
            return set(conn.execute(
                "SELECT o.counter, o.hlc, o.record, o.field, o.value FROM ops o JOIN sites s ON s.id = o.site"
                " WHERE s.device = ?", (tab.device,)))
        finally:
            conn.close()

    mine = own(Path(tab.path))
    assert len(mine) == 15 and own(node_db) == mine


def _clocks(db: Path, device: str) -> dict[int, int]:
    "counter -> clock of a device's ops, as a database holds them"
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute(
            "SELECT o.counter, o.hlc FROM ops o JOIN sites s ON s.id = o.site WHERE s.device = ?", (device,)))
    finally:
        conn.close()


def test_ops_whose_answer_was_lost_keep_their_clocks_when_the_clock_jumps(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    """The node commits a push, but its answer is lost on the way back, so the tablet still counts those
    ops as unsent. Then the tablet's clock jumps 8 hours ahead (a wrong time zone) and its worker edits.
    Refused as ahead, the tablet re-stamps only the ops the node does not hold: were it to re-stamp the
    others, the node would refuse them as forged, on every sync from then on."""
    node.start()
    clock, link = Clock(), PoorLink()
    with httpx.Client(transport=link, timeout=30) as client:
        tab = make_tablet(enrol(V1, "wang")[1], "wang", clock=clock, client=client)
        rid = tab.create("person", {"name": "张秀英"})
        link.lose = 1
        with pytest.raises(NodeUnreachable):
            tab.sync(retries=0)
        sent = _clocks(node_db, tab.device)
        assert tab.acked() == 0 and len(sent) == tab.pending() == 2, "the node holds what the tablet thinks unsent"

        clock.error_ms = 8 * HOUR
        (edit,) = tab.update(rid, {"phone": "13800000000"})
        assert physical_ms(edit.hlc) > wall_ms() + 7 * HOUR
        tab.sync()

        assert tab.pending() == 0
        held = _clocks(node_db, tab.device)
        assert {c: held[c] for c in sent} == sent, "the ops the node held kept their clocks"
        assert held == _clocks(Path(tab.path), tab.device)
        assert physical_ms(held[edit.counter]) <= wall_ms(), "the edit was re-stamped to the node's time"
        _converged(node_db, tab)
        rec = tab.get(rid)
        assert rec is not None and rec.data["phone"] == "13800000000"


@pytest.mark.parametrize("set_up_before_acked_ever", [False, True], ids=["tablet", "tablet-of-an-older-version"])
def test_after_a_restore_a_wrong_clock_does_not_re_stamp_ops_other_tablets_hold(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path,
    set_up_before_acked_ever: bool,
) -> None:
    """The node is restored from a backup older than a tablet's ops, so it acknowledges less than that
    tablet was told before. If the tablet's clock is wrong by then, correcting it must not re-stamp the
    ops the old node held and passed on: the other tablets hold them with their first clocks, and a
    concurrent edit would have a different winner on them than on the node. Also for a tablet whose
    database a version from before the tablet kept its highest acknowledgement (``acked_ever``) made."""
    import sqlite3

    node.start()
    clock = Clock()
    a, b = (make_tablet(enrol(V1, user)[1], user, **kw) for user, kw in (("a", {"clock": clock}), ("b", {})))
    backup = tmp_path / "nightly.db"
    src, dst = sqlite3.connect(node_db), sqlite3.connect(backup)
    try:
        src.backup(dst)  # the tablets are enrolled; none of their ops is in it
    finally:
        src.close()
        dst.close()
    rid = a.create("person", {"name": "赵六"})
    a.sync()
    b.sync()
    a.update(rid, {"phone": "13100000001"})  # concurrent edits of one field: b's, the later, wins
    time.sleep(0.02)
    b.update(rid, {"phone": "13200000002"})
    for tab in (a, b, a):
        tab.sync()
    held_by_b = _clocks(Path(b.path), a.device)
    assert len(held_by_b) == 3
    if set_up_before_acked_ever:
        a.store.conn.execute("DELETE FROM meta WHERE key = 'acked_ever'")

    node.kill()  # the disk dies; the operator restores the backup
    for suffix in ("", "-wal", "-shm"):
        Path(f"{node_db}{suffix}").unlink(missing_ok=True)
    backup.rename(node_db)
    node.start()
    clock.error_ms = -8 * HOUR  # meanwhile a's battery ran flat: its clock is hours behind
    for tab in (a, b, a, b):
        tab.sync()

    assert a.clock.offset_ms > 7 * HOUR, "a corrected its clock"
    assert _clocks(node_db, a.device) == _clocks(Path(a.path), a.device) == held_by_b
    _converged(node_db, a, b)
    for tab in (a, b):
        rec = tab.get(rid)
        assert rec is not None and rec.data["phone"] == "13200000002", tab.device
