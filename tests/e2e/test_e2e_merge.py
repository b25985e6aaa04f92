"""A merge of duplicate residents against tablets that were offline, across villages, with escalations:
over a real node (hypercorn on loopback) and real tablets' SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client.tablet import Tablet
from e2e_harness import TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess
from server.auth import Staff
from server.escalations import act, escalate
from server.node import Node
from server.relay import sync_link

pytestmark = pytest.mark.e2e
COUNTY = "510903000000"  # 船山区
SAME = {"name": "李桂兰", "id_number": "51090319450101002X"}
LIU = Staff("liu", "township", TOWNSHIP)


@contextmanager
def on_node(db: Path) -> Iterator[Node]:
    "The township node's database, opened beside the running node (as staff tools do)"
    n = Node(db, TOWNSHIP)
    try:
        yield n
    finally:
        n.close()


def tablets(node: NodeProcess, enrol: Enrol, make_tablet: MakeTablet, *units: str) -> list[Tablet]:
    "One tablet for each unit, enrolled, then the node started"
    tokens = [enrol(unit, f"社工{i}")[1] for i, unit in enumerate(units)]
    node.start()
    return [make_tablet(token, f"t{i}") for i, token in enumerate(tokens)]


def duplicates_in_two_villages(t1: Tablet, t2: Tablet) -> tuple[str, str, str]:
    "The same woman registered in V1 (with a need) and in V2, both synced: (drop, its need, keep)"
    drop = t1.create("person", {**SAME, "name": "李贵兰"})
    need = t1.create("need", {"person": drop, "category": "医疗健康"})
    keep = t2.create("person", SAME)
    t1.sync()
    t2.sync()
    return drop, need, keep


def test_needs_recorded_offline_for_a_merged_resident_follow_the_merge(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    a, b = tablets(node, enrol, make_tablet, V1, V1)
    keep = a.create("person", SAME)
    drop = a.create("person", {**SAME, "name": "李贵兰"})
    a.sync()
    b.sync()  # b holds both, then goes offline
    with on_node(node_db) as n:
        n.editor("刘主任").merge(keep, drop)
    need = b.create("need", {"person": drop, "category": "医疗健康", "description": "需要上门看诊"})
    service = b.create("service", {"person": drop, "service_type": "养老服务", "served_at": "2025-05-02T10:00"})
    b.sync()
    a.sync()
    with on_node(node_db) as n:
        for rid in (need, service):
            rec = n.store.get(rid)
            assert rec is not None and rec.data["person"] == keep and rec.conflicts == []
            (moved,) = [op for op in n.store.record_ops(rid) if op.field == "person" and op.value == keep]
            assert (moved.user, moved.site) == ("刘主任", n.device_id)
    for tab in (a, b):
        for rid in (need, service):
            rec = tab.get(rid)
            assert rec is not None and rec.data["person"] == keep, (tab.device, rid)
    assert a.get(drop).deleted  # type: ignore[union-attr]


def test_a_merge_across_villages_brings_the_needs_to_the_kept_residents_village(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    t1, t2 = tablets(node, enrol, make_tablet, V1, V2)
    drop, need, keep = duplicates_in_two_villages(t1, t2)
    service = t1.create("service", {"person": drop, "service_type": "心理支持", "served_at": "2025-05-01T09:00"})
    t1.sync()
    with on_node(node_db) as n:
        n.editor("刘主任").merge(keep, drop)
    late = t1.create("need", {"person": drop, "category": "心理支持"})  # t1 had not heard of the merge
    for tab in (t1, t2, t1):
        tab.sync()
    for rid in (need, service, late):
        rec = t2.get(rid)
        assert rec is not None and rec.data["person"] == keep and rec.unit == V2, rid
        assert t1.get(rid) is None, "gone from the village the resident is no longer in"
    assert t1.get(drop).deleted and t1.pending() == 0  # type: ignore[union-attr]


def test_an_escalated_need_moved_by_a_merge_takes_its_escalation_along(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    t1, t2 = tablets(node, enrol, make_tablet, V1, V2)
    drop, need, keep = duplicates_in_two_villages(t1, t2)
    with on_node(node_db) as n:
        esc = escalate(n, LIU, need, "需要县医院上门看诊")
        n.editor("刘主任").merge(keep, drop)
    t1.sync()
    t2.sync()
    assert t2.get(need) is not None and (t2.escalation(need) or {}).get("id") == esc
    assert t1.get(need) is None and t1.get(esc) is None


def test_an_escalation_the_county_accepts_while_a_merge_moves_its_need_follows_the_need(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path) -> None:
    "The county's first step re-asserts the village at county tier; made concurrently, it must not win"
    _, link_token = enrol(COUNTY, "county-link", tier="county")
    t1, t2 = tablets(node, enrol, make_tablet, V1, V2)
    county = Node(tmp_path / "county.db", COUNTY)
    zhang = Staff("zhang", "county", COUNTY)
    try:
        drop, need, keep = duplicates_in_two_villages(t1, t2)
        with on_node(node_db) as n:
            esc = escalate(n, LIU, need, "需要县医院上门看诊")
        sync_link(county, node.url, link_token)
        act(county, zhang, esc, "accept")  # neither has heard of the other
        with on_node(node_db) as n:
            n.editor("刘主任").merge(keep, drop)
        sync_link(county, node.url, link_token)
        act(county, zhang, esc, "resolve", "已安排县医院上门")
        sync_link(county, node.url, link_token)
        t1.sync()
        t2.sync()
        assert county.store.get(esc).unit == V2  # type: ignore[union-attr]
        assert (t2.escalation(need) or {}).get("answer") == "已安排县医院上门"
        assert t1.get(need) is None and t1.get(esc) is None
    finally:
        county.close()


def test_a_need_moved_by_a_merge_while_its_tablet_bootstraps_leaves_that_tablet(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path) -> None:
    "A restored node (a new epoch) bootstraps each tablet's village afresh; its first push may be moved"
    t1, t2 = tablets(node, enrol, make_tablet, V1, V2)
    drop = t1.create("person", {**SAME, "name": "李贵兰"})
    keep = t2.create("person", SAME)
    t1.sync()
    t2.sync()
    with on_node(node_db) as n:
        n.editor("刘主任").merge(keep, drop)
    t1.sync()
    node.stop()
    backup = tmp_path / "backup.db"
    with on_node(node_db) as n:
        n.backup(backup)
    Node.restore(node_db, backup)
    node.start()
    need = t1.create("need", {"person": drop, "category": "医疗健康", "description": "需要上门看诊"})
    t1.sync()  # its first request after the restore bootstraps, and pushes the need the node moves to V2
    t1.sync()
    t2.sync()
    assert t1.get(need) is None and t1.pending() == 0
    rec = t2.get(need)
    assert rec is not None and (rec.unit, rec.data["person"]) == (V2, keep)
