"""Upgrades and long absences, end to end: a node upgraded to a newer schema still merges what tablets on
the older schema queued, and a tablet that was offline for months syncs cleanly into a village that moved
on without it.

(The store keeps ops of retired and unknown fields — property-tested in tests/sync/test_convergence.py,
section 6; here the whole path runs: the node's checks, the wire, both tablets' stores.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

import schema_v2
from e2e_harness import (
    TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess, device_ops, integrity, node_digest, populate,
)
from sync.types import DELETED

pytestmark = pytest.mark.e2e


def test_a_node_upgraded_to_a_newer_schema_merges_ops_queued_on_older_tablets(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    old = make_tablet(enrol(V1, "wang")[1], "wang")  # runs the current schema, this process's
    rid = old.create("person", {"name": "张秀英", "notes": "独居"})
    old.sync()
    # offline, the old tablet queues: a new resident, a need, edits of a field the newer version retires
    p2 = old.create("person", {"name": "王德明", "notes": "腿脚不便"})
    old.create("need", {"person": p2, "category": "养老服务", "status": "待处理"})
    old.update(rid, {"notes": "子女在外地", "phone": "13800000000"})
    queued = old.pending()

    node.stop()  # the township upgrades its node: a field and a collection added, a field retired
    node.program = schema_v2.PROGRAM
    node.start()
    new = make_tablet(enrol(V1, "li")[1], "li")
    new.store.schema = schema_v2.newer()  # an updated tablet
    new.sync()
    new.update(rid, {"wechat": "zhangxy1942"})
    household = new.create("household", {"head": rid, "members": 2})
    new.sync()

    report = old.sync()  # the old tablet's queue meets the upgraded node
    assert report.sent == queued and old.pending() == 0
    n = device_ops(Path(old.path), old.device)[0]
    assert device_ops(node_db, old.device) == (n, n, 1, n)
    for tab in (new, old):
        tab.sync()

    want = node_digest(node_db, V1)
    assert old.store.digest() == want and new.store.digest() == want
    person = want[rid][3]
    assert (person["notes"], person["phone"], person["wechat"]) == ("子女在外地", "13800000000", "zhangxy1942")
    # the old tablet keeps and shows what it has no schema for
    held = old.get(rid)
    assert held is not None and held.data["wechat"] == "zhangxy1942"
    hh = old.get(household)
    assert hh is not None and (hh.coll, hh.unit, hh.data["members"]) == ("household", V1, 2)
    assert integrity(node_db) == "ok"


def test_a_tablet_offline_for_months_syncs_cleanly(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    away = make_tablet(enrol(V1, "wang")[1], "wang")
    near = make_tablet(enrol(V1, "li")[1], "li")
    other = make_tablet(enrol(V2, "zhang")[1], "zhang")
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    shared = near.create("person", {"name": "刘淑荣", "phone": "13800000000"})
    gone = near.create("person", {"name": "陈志强"})
    leaving = near.create("person", {"name": "杨丽"})
    arriving = other.create("person", {"name": "周敏", "groups": ["儿童", "留守"]})
    for tab in (near, other, away, staff):
        tab.sync()

    # the worker takes the tablet where there is no signal for months, and goes on working
    populate(away, 40, tag="away")
    away.update(shared, {"phone": "13811111111"})
    away.update(gone, {"address": "育才路3号"})
    away.update(leaving, {"notes": "每月回访"})
    pending = away.pending()

    # meanwhile the village moves on: months of work, a delete, residents moving away and arriving
    for month in range(4):
        populate(near, 25, tag=f"m{month}")
        populate(other, 10, tag=f"o{month}")
        near.sync()
        other.sync()
    near.update(shared, {"phone": "13822222222"})
    near.delete(gone)
    near.sync()
    staff.sync()
    staff.update(leaving, {"unit": V2})
    staff.update(arriving, {"unit": V1})
    staff.sync()
    node.stop()  # and the node was restarted (a power cut, an upgrade)
    node.start()

    report = away.sync(limit=200)  # small pages: the months arrive over many round trips

    assert report.rounds >= 5 and report.retries == 0
    assert report.sent == pending and away.pending() == 0
    assert report.removed >= 1  # the resident who moved away left the tablet
    for tab in (near, away):
        tab.sync()
    want = node_digest(node_db, V1)
    assert away.store.digest() == want and near.store.digest() == want
    n = away.acked()  # (the tablet itself dropped its edit of the resident who left, with the resident)
    assert device_ops(node_db, away.device) == (n, n, 1, n)
    assert away.get(leaving) is None
    assert node_digest(node_db)[leaving][3]["notes"] == "每月回访"  # its edit from before the move is kept
    came = away.get(arriving)
    assert came is not None and came.data["groups"] == ["儿童", "留守"]  # arrived whole
    conflicts = {c.record: c.field for c in away.conflicts()}
    assert conflicts[shared] == "phone"  # both numbers visible, for someone to settle
    assert conflicts[gone] == DELETED  # the delete did not silently swallow the offline edit
    assert integrity(node_db) == "ok" and integrity(Path(away.path)) == "ok"
