"""A tablet of an older version restores a resident staff merged into another (its conflict card offered 恢复;
``Editor.restore`` now refuses). The node takes the push (refusing it would strand the tablet's queue) and
deletes the resident again at township tier (``Node._follow_restores``): every replica holds it deleted and
merged, no conflict left open, the worker's late values kept in the history. In process: a node and a tablet
speaking the protocol (``test_pullcache.Tab``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.duplicates import half_merged
from server.node import Node
from sync.types import DELETED, SET
from test_pullcache import TOWNSHIP, V1, Tab

NAME = {"unit": V1, "name": "黄玉珍", "birth_date": "1938-06-01"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node.db", TOWNSHIP)
    yield n
    n.close()


@pytest.fixture
def tab(node: Node) -> Iterator[Tab]:
    t = Tab(node, V1, "王丽")
    yield t
    t.store.close()


def sync(node: Node, tab: Tab) -> None:
    tab.take(node.sync(tab.dev, tab.request(5000)))


def merged_and_edited_late(node: Node, tab: Tab) -> tuple[str, str]:
    """Two registrations of one resident, merged by staff while the tablet, offline, changed the phone of the
    one merged away: after the tablet's sync, the delete and its late edit are an open conflict"""
    keep, drop = tab.editor.create("person", NAME), tab.editor.create("person", NAME)
    sync(node, tab)
    node.editor("刘主任").merge(keep, drop)
    tab.editor.update(drop, {"phone": "13900000000"})
    sync(node, tab)
    assert tab.store.conflicts(record=drop)[0].field == DELETED
    return keep, drop


def restore_as_an_older_version_did(tab: Tab, drop: str) -> None:
    "恢复 on the old conflict card: the delete undone and the values it superseded written back, then an edit"
    ed = tab.editor
    dels = tuple(sorted((e.device, e.counter) for e in tab.store.state(drop)[DELETED]))
    ed._commit(ed._build([("person", drop, DELETED, SET, False, dels),
                          *(("person", drop, k, SET, v, ()) for k, v in NAME.items() if k != "unit")]))
    ed.update(drop, {"address": "育才路 3 号"})
    rec = tab.store.get(drop)
    assert rec is not None and not rec.deleted and rec.merged_into  # half-merged on the tablet


def test_a_merged_resident_restored_by_an_old_tablet_is_deleted_again_at_township_tier(
        node: Node, tab: Tab) -> None:
    keep, drop = merged_and_edited_late(node, tab)
    restore_as_an_older_version_did(tab, drop)
    req = tab.request(5000)
    tab.take(node.sync(tab.dev, req))

    rec = node.store.get(drop)
    assert rec is not None and rec.deleted and rec.merged_into == keep and rec.conflicts == []
    assert half_merged(node.store, node.store.records("person")) == []
    history = node.store.history(drop)
    again = [h for h in history if h.field == DELETED][-1]
    assert (again.field, again.new, again.user, again.tier) == (DELETED, True, "刘主任", "township")
    late = {(h.field, h.new) for h in history if h.user == "王丽"}
    assert {("phone", "13900000000"), (DELETED, False), ("address", "育才路 3 号")} <= late
    # the tablet took the delete in the same exchange: both replicas hold the record alike
    assert tab.store.digest()[drop] == node.store.digest()[drop]
    assert tab.store.conflicts() == []

    before = (node.store.count_ops(), node.store.digest())
    resp = node.sync(tab.dev, req)  # the same batch again: an answer lost on the way
    assert resp.acked == tab.acked
    assert (node.store.count_ops(), node.store.digest()) == before


def test_one_whose_kept_resident_is_gone_is_left_listed_as_half_merged(node: Node, tab: Tab) -> None:
    "Deleting it would leave no current record of her: staff sort it out from the 疑似重复 page"
    keep, drop = merged_and_edited_late(node, tab)
    node.editor("刘主任").delete(keep)  # removed since (迁出/注销)
    restore_as_an_older_version_did(tab, drop)
    before, acked = node.store.count_ops(), tab.acked
    sync(node, tab)

    assert tab.acked > acked and node.store.count_ops() == before + tab.acked - acked  # the tablet's ops alone
    rec = node.store.get(drop)
    assert rec is not None and not rec.deleted and rec.merged_into == keep
    [half] = half_merged(node.store, node.store.records("person"))
    assert half.rec.id == drop and half.kept is None
