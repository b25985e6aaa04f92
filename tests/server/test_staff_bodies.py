"""The staff JSON API reads every body the one way (``server.orders``): a body that is not JSON, not an object,
misses a field, gives a field the wrong type (a null or a number for a text) or nests too deeply is refused
400 ``malformed_body``, saying where, and nothing is written; it is never turned into text such as "None"."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from server.orders import STAFF_MAX_BODY
from test_pullcache import TOWNSHIP, V1

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2; the project's httpx is what it runs on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

PASSWORD = "correct horse 1"
STAFF = {"liu": ("township", TOWNSHIP), "chen": ("county", "510903000000"), "admin": ("admin", TOWNSHIP)}
DEEP = "[" * 100_000 + "]" * 100_000  # past msgspec's nesting limit


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("bodies") / "township.db", TOWNSHIP)
    ensure_units(n)
    for username, (role, unit) in STAFF.items():
        n.accounts.add(username, PASSWORD, role=role, unit=unit)
    try:
        yield n
    finally:
        n.close()


def _csrf(c: TestClient) -> str:
    "The session's CSRF token, as the sign-in page holds it"
    found = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def signed(node: Node) -> Iterator[dict[str, tuple[TestClient, str]]]:
    "A client signed in as each of ``STAFF``, with its session's CSRF token"
    out = {}
    for username in STAFF:
        c = TestClient(create_app(node), base_url="http://node", follow_redirects=False).__enter__()
        r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf": _csrf(c)})
        assert r.status_code == 303, r.text
        out[username] = (c, _csrf(c))  # signing in starts a new session, with a new token
    try:
        yield out
    finally:
        for c, _ in out.values():
            c.__exit__(None, None, None)


def _written(node: Node) -> tuple[Any, ...]:
    "All a staff API call may write: ops, enrolment codes, accounts"
    with node.store.lock:
        return (node.store.count_ops(), node.store.conn.execute("SELECT unit, user FROM enrolments").fetchall(),
                node.accounts.listing())


ESC = "/api/staff/escalations/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
WRONG_TYPES = [  # (who, path, body, where msgspec says the fault is)
    ("liu", "/api/staff/notices", {"title": None, "body": None}, "$.title"),
    ("liu", "/api/staff/notices", {"title": "周五开会", "body": 5}, "$.body"),
    ("liu", "/api/staff/tasks", {"title": "走访", "due_date": {"a": 1}}, "$.due_date"),
    ("liu", "/api/staff/tasks", {"title": "走访", "status": None}, "$.status"),
    ("liu", "/api/staff/catalogue", {"kind": "need_category", "code": "助浴", "name": "助浴", "order": "1"},
     "$.order"),
    ("liu", "/api/staff/catalogue", {"kind": "need_category", "code": 7, "name": "助浴"}, "$.code"),
    ("liu", "/api/staff/enrolments", {"unit": V1, "user": None}, "$.user"),
    ("liu", "/api/staff/enrolments", {"unit": 510903001001, "user": "张丽"}, "$.unit"),
    ("liu", "/api/staff/merge", {"keep": ["a"], "drop": "b"}, "$.keep"),
    ("liu", "/api/staff/resolve", {"record": None, "field": "name", "value": "王大爷"}, "$.record"),
    ("liu", "/api/staff/escalations", {"need": {"id": 1}, "summary": "需要助餐"}, "$.need"),
    ("chen", ESC + "/assign", {"department": 5}, "$.department"),
    ("chen", ESC + "/resolve", {"answer": None, "department": False}, "$.department"),
    ("admin", "/api/admin/users", {"username": "wu", "password": 123456789, "role": "township"}, "$.password"),
    ("admin", "/api/admin/users", {"username": None, "password": PASSWORD, "role": "township"}, "$.username"),
    # a field left out
    ("liu", "/api/staff/notices", {"body": "周五开会"}, "title"),
    ("liu", "/api/staff/enrolments", {"unit": V1}, "user"),
    ("admin", "/api/admin/users", {"username": "wu", "password": PASSWORD}, "role"),
]


@pytest.mark.parametrize(("who", "path", "body", "where"), WRONG_TYPES)
def test_a_wrong_type_or_a_missing_field_is_refused_saying_where_and_nothing_is_written(
        node: Node, signed: dict[str, tuple[TestClient, str]], who: str, path: str, body: Any, where: str) -> None:
    c, csrf = signed[who]
    before = _written(node)
    r = c.post(path, json=body, headers={"x-csrf-token": csrf})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_body"), r.text
    assert where in r.json()["error"]["message"]
    assert _written(node) == before


@pytest.mark.parametrize("path", ["/api/staff/notices", "/api/staff/tasks", "/api/staff/catalogue",
                                  "/api/staff/enrolments", "/api/staff/merge", "/api/staff/resolve",
                                  "/api/staff/escalations", "/api/admin/users", ESC + "/assign"])
@pytest.mark.parametrize("body", [
    b"{title", b"\xff\xfe", b'["title", "unit", "user"]', b"null",
    DEEP.encode(), b'{"title": "x", "unit": "x", "record": "x", "extra": ' + DEEP.encode() + b"}",
    b'{"record": "x", "field": "name", "value": ' + DEEP.encode() + b"}",
], ids=["not-json", "not-utf8", "array", "null", "deep", "deep-unknown-field", "deep-value"])
def test_a_body_that_is_not_a_json_object_or_nests_too_deeply_is_refused(
        node: Node, signed: dict[str, tuple[TestClient, str]], path: str, body: bytes) -> None:
    c, csrf = signed["chen" if path.startswith(ESC) else "admin" if path.startswith("/api/admin") else "liu"]
    before = _written(node)
    r = c.post(path, content=body, headers={"x-csrf-token": csrf, "content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_body"), r.text
    assert _written(node) == before


def test_typed_fields_arrive_as_sent(node: Node, signed: dict[str, tuple[TestClient, str]]) -> None:
    c, csrf = signed["liu"]
    r = c.post("/api/staff/catalogue", json={"kind": "service_type", "code": "送餐", "name": "送餐上门", "order": 3,
                                             "retired": False, "ignored": {"a": [1]}}, headers={"x-csrf-token": csrf})
    assert r.status_code == 200, r.text
    [entry] = [e for e in c.get("/api/staff/reference").json()["service_types"] if e["code"] == "送餐"]
    assert (entry["name"], entry["order"], entry["retired"]) == ("送餐上门", 3, False)
    r = c.post("/api/staff/enrolments", json={"unit": V1, "user": "张丽"}, headers={"x-csrf-token": csrf})
    assert (r.status_code, r.json()["unit"], r.json()["user"]) == (200, V1, "张丽"), r.text


@pytest.mark.parametrize(("due", "code"), [("2026-02-30", "no_such_date"), ("２０２６-０２-３０", "no_such_date"),
                                         ("2026/02/03", "invalid_value")])
def test_a_tasks_due_date_is_checked_as_the_command_line_checks_it(
        node: Node, signed: dict[str, tuple[TestClient, str]], due: str, code: str) -> None:
    "A date not on the calendar is refused, as `cunsync task add --due` refuses it, and nothing is written"
    c, csrf = signed["liu"]
    before = _written(node)
    r = c.post("/api/staff/tasks", json={"title": "走访", "due_date": due}, headers={"x-csrf-token": csrf})
    assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
    assert r.json()["error"]["details"] == {"collection": "task", "field": "due_date"}
    assert _written(node) == before


def test_a_tasks_due_date_typed_full_width_is_stored_in_ascii(
        node: Node, signed: dict[str, tuple[TestClient, str]]) -> None:
    "So a tablet sees it overdue once past, and lists sort it among the others"
    c, csrf = signed["liu"]
    r = c.post("/api/staff/tasks", json={"title": "走访", "due_date": "２０２５-０１-３１"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 201, r.text
    record = node.store.get(r.json()["id"])
    assert record is not None and record.data["due_date"] == "2025-01-31"


def _over_the_limit(body: bytes, chunked: bool) -> dict[str, Any]:
    "A request's body and how it is sent: with its Content-Length, or in chunks without one"
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    return {"content": iter(chunks)} if chunked else {"content": body}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_staff_limit_is_refused_413_too_large_and_nothing_is_written(
        node: Node, signed: dict[str, tuple[TestClient, str]], chunked: bool) -> None:
    c, csrf = signed["liu"]
    before = _written(node)
    big = b'{"title": "x", "body": "' + b"x" * STAFF_MAX_BODY + b'"}'
    r = c.post("/api/staff/notices", headers={"x-csrf-token": csrf, "content-type": "application/json"},
               **_over_the_limit(big, chunked))
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["details"]) == (413, "too_large", {"limit_bytes": STAFF_MAX_BODY})
    assert r.headers["connection"] == "close"
    # a workbench page's form says so in Chinese; so does the sign-in form, refused before it is read further
    form = f"csrf={csrf}&name=".encode() + b"x" * STAFF_MAX_BODY
    r = c.post("/staff/conflicts/resolve", headers={"content-type": "application/x-www-form-urlencoded"},
               **_over_the_limit(form, chunked))
    assert r.status_code == 413 and "提交的内容太大：不能超过 1 MB" in r.text, r.text[:500]
    for path in ("/login", "/logout"):  # the sign-in page again, in Chinese
        with TestClient(create_app(node), base_url="http://node") as anyone:
            r = anyone.post(path, headers={"content-type": "application/x-www-form-urlencoded"},
                            **_over_the_limit(b"username=" + b"x" * STAFF_MAX_BODY, chunked))
            assert r.status_code == 413 and r.headers["content-type"].startswith("text/html"), r.text[:500]
            assert "工作人员登录" in r.text and "提交的内容太大：不能超过 1 MB" in r.text, r.text[:500]
            assert r.headers["connection"] == "close"
    assert _written(node) == before
