"""A resident who moved to another township or died, taken out of the township's records on the workbench
(迁出/注销), against real tablets over a real node (hypercorn on loopback): the tablets drop the resident
at their next sync, and a tablet that edited the resident offline meanwhile brings a conflict, not a
silent loss."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from e2e_harness import TOWNSHIP, V1, Enrol, MakeTablet, NodeProcess
from server.node import Node
from server.snapshots import figures
from sync.types import DELETED

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse 1"


def remove_on_the_workbench(url: str, pid: str, reason: str, note: str) -> None:
    "Township staff sign in, open the resident's page, fill in the removal form and confirm it"
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as c:
        r = c.post("/login", data={"username": "liu", "password": PASSWORD,
                                   "csrf": csrf.findall(c.get("/login").text)[0]})
        assert r.history and r.url.path == "/staff", r.text
        token = csrf.findall(c.get(f"/staff/records/{pid}").text)[0]
        form = {"csrf": token, "reason": reason, "note": note}
        ask = c.post(f"/staff/records/{pid}/remove", data=form)
        assert ask.status_code == 200 and "确认移出" in ask.text, ask.text
        seen = re.findall(r'name="seen" value="([^"]*)"', ask.text)  # what the confirm page listed
        done = c.post(f"/staff/records/{pid}/remove", data={**form, "confirm": "1", "seen": seen[0]})
        assert "已将" in done.text and "移出本镇街" in done.text, done.text  # followed to the record's page


def elderly(node_db: Path) -> list[int | None] | None:
    "What the township's figures count of village 1's 老年人"
    n = Node(node_db, TOWNSHIP)
    try:
        return {tuple(c.k): c.v for c in figures(n.store, TOWNSHIP)["residents"]}.get((V1, "老年人"))
    finally:
        n.close()


def test_tablets_drop_a_removed_resident_at_their_next_sync_and_an_offline_edit_conflicts(
        node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    n = Node(node_db, TOWNSHIP)
    try:
        n.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP)
    finally:
        n.close()
    tokens = [enrol(V1, f"社工{i}")[1] for i in range(2)]
    node.start()
    a, b = [make_tablet(token, f"t{i}") for i, token in enumerate(tokens)]
    pid = a.create("person", {"name": "张秀英", "groups": ["老年人"], "id_number": "51090319420308002X"})
    need = a.create("need", {"person": pid, "category": "养老服务"})
    a.sync()
    b.sync()
    assert elderly(node_db) == [1]
    b.update(pid, {"phone": "13800001111"})  # offline: b has not heard of the removal when it edits

    remove_on_the_workbench(node.url, pid, "迁出到其他镇街", "迁往安居区凤凰社区，已在那里登记")
    assert elderly(node_db) is None
    a.sync()
    assert [r.id for r in a.list("person")] == [] and a.search("person", "张秀英") == []
    assert a.get(need).data["status"] == "已取消"  # type: ignore[union-attr]

    b.sync()  # its edit goes up, the removal comes down: the same conflict on both sides, nothing lost
    a.sync()
    n = Node(node_db, TOWNSHIP)
    try:
        (conflict,) = n.store.conflicts(record=pid)
        assert conflict.field == DELETED and "13800001111" in [c.value for c in conflict.candidates]
    finally:
        n.close()
    for tab in (a, b):
        assert tab.get(pid).conflicts == [DELETED] and tab.pending() == 0  # type: ignore[union-attr]
