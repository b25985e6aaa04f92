"""The needs board pages through a township's needs: 200 a page with the count of all and links to the
previous and next pages that keep the filters; every need on exactly one page. In-process (Starlette's
TestClient), as a township holds tens of thousands of needs."""

from __future__ import annotations

import html
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from server.workbench import CLOSED, NEEDS_SHOWN, is_overdue, today
from sync.schema import STATUSES
from sync.store import Record

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

TOWNSHIP, V1, V2 = "510903001000", "510903001001", "510903001002"
PASSWORD = "correct horse 1"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, list[str]]]]:
    "A township with NEEDS_SHOWN + 5 needs in one village (3 overdue) and 2 in another; liu signed in"
    node = Node(tmp_path_factory.mktemp("needs") / "township.db", TOWNSHIP)
    ids: dict[str, list[str]] = {"v1": [], "v2": [], "overdue": []}
    try:
        ensure_units(node)
        node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
        ed = node.editor("w")
        with node.store.transaction():
            pid = ed.create("person", {"unit": V1, "name": "王大爷"})
            other = ed.create("person", {"unit": V2, "name": "李奶奶"})
            for i in range(NEEDS_SHOWN + 5):
                late = {"due_date": "2020-01-01"} if i < 3 else {}
                nid = ed.create("need", {"unit": V1, "person": pid, "category": "生活物资", **late})
                ids["v1"].append(nid)
                if late:
                    ids["overdue"].append(nid)
            ids["v2"] = [ed.create("need", {"unit": V2, "person": other, "category": "医疗健康"}) for _ in range(2)]
        with TestClient(create_app(node), base_url="http://node", follow_redirects=False) as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert csrf is not None
            r = client.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": csrf.group(1)})
            assert r.status_code == 303, r.text
            yield client, ids
    finally:
        node.close()


def shown(page: str) -> list[str]:
    return re.findall(r'<tr class="need[^"]*" data-id="([^"]+)"', page)


def links(page: str) -> dict[str, str]:
    return {text: html.unescape(href) for href, text in re.findall(r'<a href="(\?[^"]*)">(上一页|下一页)</a>', page)}


def test_the_needs_board_pages_through_every_need_once(board: tuple[TestClient, dict[str, list[str]]]) -> None:
    client, ids = board
    first = client.get("/staff/needs").text
    assert f"共 {NEEDS_SHOWN + 7} 条需求，第 1/2 页" in first
    assert len(shown(first)) == NEEDS_SHOWN
    assert shown(first)[:3] == sorted(ids["overdue"])  # the overdue first, as before
    assert "上一页" not in links(first) and links(first)["下一页"] == "?unit=&status=&page=2"
    second = client.get("/staff/needs?page=2").text
    assert "第 2/2 页" in second and len(shown(second)) == 7
    assert links(second) == {"上一页": "?unit=&status=&page=1"}
    assert sorted(shown(first) + shown(second)) == sorted(ids["v1"] + ids["v2"])
    assert shown(client.get("/staff/needs?page=9").text) == shown(second)  # past the last page: the last


def test_the_needs_board_pages_keep_the_filters(board: tuple[TestClient, dict[str, list[str]]]) -> None:
    client, ids = board
    page = client.get(f"/staff/needs?unit={V1}&status=open").text
    assert f"共 {NEEDS_SHOWN + 5} 条需求，第 1/2 页" in page
    assert links(page)["下一页"] == f"?unit={V1}&status=open&page=2"
    assert len(shown(client.get(f"/staff/needs?unit={V1}&status=open&page=2").text)) == 5
    one = client.get(f"/staff/needs?unit={V2}").text  # one page: no page links
    assert "共 2 条需求" in one and "第 1/1 页" not in one and links(one) == {}
    assert shown(one) == sorted(ids["v2"])


@pytest.mark.parametrize("page", ["0", "x", "-1"])
def test_a_page_number_that_is_no_page_is_refused_in_chinese(
        board: tuple[TestClient, dict[str, list[str]]], page: str) -> None:
    client, _ = board
    r = client.get("/staff/needs", params={"page": page})
    assert r.status_code == 400
    assert f"页码“{page}”不对：请填 1 或更大的整数。" in r.text


def _old_board(needs: list[Record], on: str, unit: str, status: str
               ) -> tuple[Counter[tuple[str, str]], Counter[str], list[str]]:
    "The board's figures and order as the page worked them out in Python over every need decoded (the rule)"
    matrix = Counter((n.unit or "", str(n.data.get("status", "待处理"))) for n in needs)
    overdue = Counter(n.unit or "" for n in needs if is_overdue(n, on))
    rows = [n for n in needs if (not unit or n.unit == unit) and (
        not status or (status == "open" and n.data.get("status") not in CLOSED)
        or (status == "overdue" and is_overdue(n, on)) or n.data.get("status", "待处理") == status)]
    urgency = {"紧急": 0, "较急": 1, "一般": 2}
    rows.sort(key=lambda n: (not is_overdue(n, on), n.data.get("status") in CLOSED,
                             str(n.data.get("due_date") or "9999"), urgency.get(str(n.data.get("urgency")), 3), n.id))
    return matrix, overdue, [n.id for n in rows]


def test_the_board_and_home_count_and_order_in_sql_as_the_python_rule_does(
        tmp_path: Path, decoded: list[str]) -> None:
    """Tricky needs: no status, a cleared status, closed and overdue, deleted, another township's, a merged
    resident's. And the pages decode only the needs they show (a township has tens of thousands)."""
    node = Node(tmp_path / "township.db", TOWNSHIP)
    try:
        ensure_units(node)
        node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
        ed, on = node.editor("w"), today()
        with node.store.transaction():
            p1 = ed.create("person", {"unit": V1, "name": "王大爷"})
            p2 = ed.create("person", {"unit": V2, "name": "李奶奶"})
            gone = ed.create("person", {"unit": V1, "name": "王大爷"})
            far = ed.create("person", {"unit": "510903002001", "name": "赵叔"})  # another township's village

            def need(pid: str, unit: str = V1, **values: Any) -> str:
                return ed.create("need", {"unit": unit, "person": pid, "category": "生活物资", **values})

            need(p1)  # no status, no due date
            need(p1, due_date="2020-01-01")  # no status: open, overdue
            cleared = need(p1, status="待处理", due_date="2020-01-02")
            ed.update(cleared, {"status": None}, check_transitions=False)  # cleared: open, overdue, in no column
            need(p1, status="已解决", due_date="2020-01-01")  # closed: never overdue
            need(p1, status="服务中", due_date="2099-01-01", urgency="紧急")
            need(p1, status="已分派", due_date=on)  # due today: not yet overdue
            ed.delete(need(p1, status="待处理", due_date="2020-01-01"))
            need(p1, status="已取消")
            need(p1, status="待处理", due_date="2020-01-01", urgency="较急")
            need(p1, status="待处理", due_date="2020-01-01", urgency="一般")
            need(p1, status="待处理", due_date="2020-01-01")
            need(gone, status="已关闭", due_date="2020-01-01")
            need(gone, status="服务中", due_date="2021-05-05")
            need(p2, V2, status="待处理", due_date="2020-03-01")
            need(p2, V2, status="服务中")
            need(far, "510903002001", status="待处理", due_date="2020-01-01")
        ed.merge(p1, gone)
        needs = node.store.records("need", units=("510903001001", "510903001999"))
        assert any("status" not in n.data for n in needs) and any(n.data.get("status", 0) is None for n in needs)
        with TestClient(create_app(node), base_url="http://node", follow_redirects=False) as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert csrf is not None
            client.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": csrf.group(1)})
            matrix, overdue, _ = _old_board(needs, on, "", "")
            cells = {(u, s): int(n) for u, s, n in re.findall(
                r'href="\?unit=(\d{12})&status=([^"]+)">(\d+)</a>', client.get("/staff/needs").text)}
            assert cells == {**{k: v for k, v in matrix.items() if k[1] in STATUSES},
                             **{(u, "overdue"): v for u, v in overdue.items()}}
            assert cells[(V1, "overdue")] == 6 and cells[(V1, "待处理")] == 5
            for unit in ("", V1, V2):
                for status in ("", "open", "overdue", *STATUSES):
                    page = client.get("/staff/needs", params={"unit": unit, "status": status}).text
                    rows = _old_board(needs, on, unit, status)[2]
                    assert shown(page) == rows, (unit, status)
                    assert f"共 {len(rows)} 条需求" in page
                    assert len(re.findall(r'<tr class="need overdue"', page)) == sum(
                        is_overdue(n, on) for n in needs if n.id in rows)
            decoded.clear()  # from here on
            assert len(shown(client.get("/staff/needs?status=已取消").text)) == 1
            assert decoded.count("need") == 1
            decoded.clear()
            home = client.get("/staff").text
            assert decoded.count("need") == 0
            assert re.search(r'<h3>逾期需求</h3><div class="stat[^"]*">(\d+)</div>', home).group(1) == str(  # type: ignore[union-attr]
                sum(overdue.values()))
            assert f"共 {sum(n.data.get('status') not in CLOSED for n in needs)} 条需求尚未办结" in home
    finally:
        node.close()
