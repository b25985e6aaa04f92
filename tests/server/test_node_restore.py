"""A node restored from a backup writes its own ops as a new device: the ops it wrote after the backup
live on in tablets under counters the backup does not know, and a counter is never used twice."""

from __future__ import annotations

from pathlib import Path

from server.node import Node
from test_pullcache import TOWNSHIP, V1, Tab


def _sync_all(tab: Tab, node: Node) -> None:
    for _ in range(20):
        before = (tab.cursor, tab.acked, tab.page)
        tab.take(node._sync(tab.dev, tab.request(5000)))
        if (tab.cursor, tab.acked, tab.page) == before:
            break


def test_staff_edits_after_a_restore_reach_the_tablets(tmp_path: Path) -> None:
    db, backup = tmp_path / "node.db", tmp_path / "nightly.db"
    node = Node(db, TOWNSHIP)
    tab = Tab(node, V1, "张丽")
    try:
        rid = tab.editor.create("person", {"unit": V1, "name": "王大爷"})
        _sync_all(tab, node)
        node.backup(backup)
        (lost,) = node.editor("陈主任").update(rid, {"notes": "镇街复核：独居"})  # after the backup
        _sync_all(tab, node)
        assert lost.site == f"node-{TOWNSHIP}"
        node.close()

        Node.restore(db, backup)  # the disk died
        node = tab.node = Node(db, TOWNSHIP)
        _sync_all(tab, node)
        (later,) = node.editor("陈主任").update(rid, {"notes": "镇街复核：已送医"})
        _sync_all(tab, node)

        assert later.id != lost.id, "the restored node never reuses an op id it gave out before"
        assert later.site.startswith(f"node-{TOWNSHIP}~")
        rec = tab.store.get(rid)
        assert rec is not None and rec.data["notes"] == "镇街复核：已送医"
        on_node = node.store.get(rid)
        assert on_node is not None and rec.data == on_node.data
        reopened = Node(tmp_path / "copy.db", TOWNSHIP)  # a fresh node keeps the plain device id
        assert reopened.device_id == f"node-{TOWNSHIP}"
        reopened.close()
    finally:
        node.close()
        tab.store.close()
