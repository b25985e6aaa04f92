"""Scope: a tablet receives only its village's records; a record township staff move to another village
arrives whole at the new village's tablets and leaves the old village's, without being deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.tablet import Progress, SyncReport, Tablet
from e2e_harness import (
    TOWNSHIP, V1, V2, V3, VILLAGES, Enrol, MakeTablet, NodeProcess, node_digest, populate,
)
from sync.store import Store
from sync.wire import SyncResponse, unpack_ops

pytestmark = pytest.mark.e2e


def _node_record(node_db: Path, rid: str) -> tuple[object, ...]:
    with Store(node_db) as s:
        rec = s.get(rid)
        assert rec is not None
        return (rec.coll, rec.unit, rec.deleted, rec.data, rec.conflicts)


def _tablet_record(tab: Tablet, rid: str) -> tuple[object, ...] | None:
    rec = tab.get(rid)
    return None if rec is None else (rec.coll, rec.unit, rec.deleted, rec.data, rec.conflicts)


def test_a_tablet_receives_only_its_villages_records(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    tabs = {v: make_tablet(enrol(v, f"worker-{v[-1]}")[1], f"village-{v[-1]}") for v in VILLAGES}
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    for v, tab in tabs.items():
        populate(tab, 3, tag=v[-3:])
    staff.create("person", {"unit": V2, "name": "街道登记", "groups": ["困难群众"]})

    received: dict[str, set[str]] = {v: set() for v in VILLAGES}

    def recorder(v: str) -> Progress:
        def progress(report: SyncReport, resp: SyncResponse) -> None:
            received[v].update(op.record for op in unpack_ops(resp.ops)[0])
        return progress

    for v, tab in tabs.items():
        tab.sync(progress=recorder(v))
    staff.sync()
    for v, tab in tabs.items():
        tab.sync(progress=recorder(v))

    for v, tab in tabs.items():
        mine = node_digest(node_db, v)
        assert len(mine) >= 9
        assert received[v] <= set(mine), f"{v} was sent ops of other villages' records"
        assert tab.store.digest() == mine
        held = {r for (r,) in tab.store.conn.execute("SELECT DISTINCT record FROM ops")}
        assert held == set(mine)
    assert staff.store.digest() == node_digest(node_db)  # the township sees all three villages


def test_a_record_moved_to_another_village_arrives_whole_and_leaves_the_old_one(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    t1, t2, t3 = (make_tablet(enrol(v, f"worker-{v[-1]}")[1], f"village-{v[-1]}") for v in VILLAGES)
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    populate(t2, 2, tag="v2")
    p = t1.create("person", {"name": "王秀英", "gender": "女", "phone": "13800000000",
                             "groups": ["老年人", "独居", "残疾人"]})
    need = t1.create("need", {"person": p, "category": "助残服务", "status": "待处理"})
    for tab in (t1, t2, t3, staff):
        tab.sync()

    # a village edit and a township correction made concurrently: an open conflict on the name, a set
    # element removed, then the township moves the resident to 广场社区
    t1.update(p, {"name": "王秀瑛", "groups": ["老年人", "残疾人"]})
    staff.update(p, {"name": "王秀莹"})
    t1.sync()
    staff.sync()
    assert _node_record(node_db, p)[4] == ["name"]
    staff.update(p, {"unit": V2})
    staff.sync()
    for tab in (t1, t2, t3):
        tab.sync()

    moved = _node_record(node_db, p)
    assert moved[1] == V2 and moved[2] is False, "a move is not a delete"
    assert sorted(moved[3]["groups"]) == sorted(["老年人", "残疾人"])
    assert _tablet_record(t2, p) == moved, "the record arrives whole: every field, and the open conflict"
    assert t2.store.digest() == node_digest(node_db, V2)
    assert t1.get(p) is None
    assert t1.get(need) is not None, "the need stays in 育才社区; only the person moved"
    assert t1.store.digest() == node_digest(node_db, V1)
    assert t3.get(p) is None
    assert t3.store.digest() == node_digest(node_db, V3)

    # the new village works on it; the old one never hears of it
    t2.resolve(p, "name", "王秀英")
    t2.sync()
    for tab in (staff, t1, t3):
        tab.sync()
    assert _node_record(node_db, p)[3]["name"] == "王秀英"
    assert _node_record(node_db, p)[4] == []
    assert t1.get(p) is None
    assert staff.store.digest() == node_digest(node_db)

    # and moved back, it arrives whole again where it was forgotten
    staff.update(p, {"unit": V1})
    staff.sync()
    for tab in (t1, t2, t3):
        tab.sync()
    assert _tablet_record(t1, p) == _node_record(node_db, p)
    assert t2.get(p) is None
    for v, tab in zip(VILLAGES, (t1, t2, t3)):
        assert tab.store.digest() == node_digest(node_db, v)


def test_a_record_moved_away_while_the_old_village_had_an_unsent_edit(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    """The worker in 育才社区 corrects a phone number offline while the township moves the resident to
    广场社区. The correction is kept (it was made while the record was theirs), and once the node has
    acknowledged it the record leaves the old village's tablet like any moved record."""
    node.start()
    t1, t2 = (make_tablet(enrol(v, f"worker-{v[-1]}")[1], f"village-{v[-1]}") for v in (V1, V2))
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    p = t1.create("person", {"name": "王秀英", "phone": "13800000000"})
    for tab in (t1, t2, staff):
        tab.sync()

    t1.update(p, {"phone": "13900000000"})  # offline
    staff.update(p, {"unit": V2})
    staff.sync()
    t1.sync()
    t2.sync()
    t1.sync()  # a second sync changes nothing: the node announces a move once

    assert t1.pending() == 0
    assert _node_record(node_db, p)[3]["phone"] == "13900000000", "the offline correction is kept"
    assert _tablet_record(t2, p) == _node_record(node_db, p)
    assert t1.get(p) is None, "the record stays on the old village's tablet after its edit was acknowledged"
    assert t1.store.digest() == node_digest(node_db, V1)
