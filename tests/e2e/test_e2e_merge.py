"""A merge of duplicate residents against a tablet that was offline: over a real node (hypercorn on
loopback) and real tablets' SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_harness import TOWNSHIP, V1, Enrol, MakeTablet, NodeProcess
from server.node import Node

pytestmark = pytest.mark.e2e
SAME = {"name": "李桂兰", "id_number": "51090319450101002X"}


def test_needs_recorded_offline_for_a_merged_resident_follow_the_merge(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    _, token_a = enrol(V1, "王芳")
    _, token_b = enrol(V1, "李明")
    node.start()
    a, b = make_tablet(token_a, "a"), make_tablet(token_b, "b")
    keep = a.create("person", SAME)
    drop = a.create("person", {**SAME, "name": "李贵兰"})
    a.sync()
    b.sync()  # b holds both, then goes offline
    n = Node(node_db, TOWNSHIP)
    try:
        n.editor("刘主任").merge(keep, drop)
    finally:
        n.close()
    need = b.create("need", {"person": drop, "category": "医疗健康", "description": "需要上门看诊"})
    service = b.create("service", {"person": drop, "service_type": "养老服务", "served_at": "2025-05-02T10:00"})
    b.sync()
    a.sync()
    n = Node(node_db, TOWNSHIP)
    try:
        for rid in (need, service):
            rec = n.store.get(rid)
            assert rec is not None and rec.data["person"] == keep and rec.conflicts == []
            (moved,) = [op for op in n.store.record_ops(rid) if op.field == "person" and op.value == keep]
            assert (moved.user, moved.site) == ("刘主任", n.device_id)
    finally:
        n.close()
    for tab in (a, b):
        for rid in (need, service):
            rec = tab.get(rid)
            assert rec is not None and rec.data["person"] == keep, (tab.device, rid)
    assert a.get(drop).deleted  # type: ignore[union-attr]
