"""Scope: a tablet receives only its village's records; a record township staff move to another village
arrives whole at the new village's tablets and leaves the old village's, without being deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

import httpx

from client.tablet import NodeUnreachable, Progress, SyncReport, Tablet
from e2e_harness import (
    TOWNSHIP, V1, V2, V3, VILLAGES, Enrol, MakeTablet, NodeProcess, PoorLink, node_digest, populate,
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


def test_a_record_kept_for_an_unsent_edit_that_moves_back_stays(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    """A resident is moved to 广场社区 while the 育才社区 worker has an unsent edit of them, so the
    tablet keeps the record until the edit is acknowledged. Its sync breaks off after one round, and the
    township moves the resident back. The next sync brings the record back whole: the tablet must keep
    it, not forget it as the one that left."""
    node.start()
    link = PoorLink()
    with httpx.Client(transport=link, timeout=30) as client:
        t1 = make_tablet(enrol(V1, "worker-1")[1], "village-1", client=client)
        staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
        p = t1.create("person", {"name": "王五", "phone": "13800000000"})
        t1.sync()
        staff.sync()
        populate(t1, 120, tag="w")  # a day's work offline: more than one round trip
        t1.update(p, {"phone": "13900000000"})  # the edit goes out in a later round than the first
        staff.update(p, {"unit": V2})
        staff.sync()

        link.reach_until = link.syncs + 1  # one round, then the link drops
        with pytest.raises(NodeUnreachable):
            t1.sync(retries=0)
        assert t1.get(p) is not None and t1.pending() > 0, "kept for its unsent edit"

        staff.update(p, {"unit": V1})  # a mistake: the resident is back in 育才社区
        staff.sync()
        link.reach_until = None
        t1.sync()
        t1.sync()

        assert t1.pending() == 0
        rec = _node_record(node_db, p)
        assert rec[1] == V1 and rec[3]["phone"] == "13900000000"
        assert _tablet_record(t1, p) == rec, "the resident is on the tablet of the village they are in"
        assert t1.store.digest() == node_digest(node_db, V1)
