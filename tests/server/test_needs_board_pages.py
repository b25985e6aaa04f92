"""The needs board pages through a township's needs: 200 a page with the count of all and links to the
previous and next pages that keep the filters; every need on exactly one page. In-process (Starlette's
TestClient), as a township holds tens of thousands of needs."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from server.workbench import NEEDS_SHOWN

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
