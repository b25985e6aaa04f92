"""Staff sessions on a shared township PC: signing out ends the session on the node, so a copy of its cookie
no longer works; a session expires on the node after ``SESSION_SECONDS`` without a request; the cookie holds a session id
and the CSRF token, never a resident's data (the notice after a form stays on the node); and no page or
API answer may be kept in the browser's cache or shown inside another site's frame."""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.cli import ensure_units
from server.node import Node
from server.sessions import MOVE_AFTER_SECONDS, SESSION_SECONDS
from test_pullcache import TOWNSHIP, V1, Tab
from test_staff_accounts import NEW_PASSWORD, PASSWORD, TestClient, client, sign_in

OLD_PHONE, NEW_PHONE = "13800000000", "13800001234"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    "liu (township) and a resident whose phone is in conflict: liu corrected it while the village changed it"
    n = Node(tmp_path / "township.db", TOWNSHIP)
    ensure_units(n)
    n.accounts.add("liu", PASSWORD, role="township", display_name="刘主任")
    tab = Tab(n, V1, "张丽")
    rid = tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": OLD_PHONE})
    tab.take(n.sync(tab.dev, tab.request(5000)))
    n.editor("liu").update(rid, {"phone": "13811112222"})
    n.store.apply(tab.editor.update(rid, {"phone": "13899990000"}))
    try:
        yield n
    finally:
        n.close()


def person(node: Node) -> str:
    "The resident's id"
    (rec,) = node.store.records("person")
    return rec.id


def csrf(c: TestClient, path: str = "/staff") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert m
    return m.group(1)


def copy_of(c: TestClient, node: Node) -> TestClient:
    "Another browser holding a copy of ``c``'s cookies"
    other = client(node)
    for cookie in c.cookies.jar:
        other.cookies.jar.set_cookie(cookie)
    return other


def cookie_payload(c: TestClient) -> dict[str, Any]:
    "What the session cookie says: Starlette signs it (base64 JSON, a timestamp, a signature), nothing more"
    value = c.cookies["cunsync_session"].split(".")[0]
    payload = json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))
    assert isinstance(payload, dict)
    return payload


def sessions_of(node: Node, username: str) -> int:
    (n,) = node.store.conn.execute("SELECT count(*) FROM staff_sessions WHERE username = ?", (username,)).fetchone()
    return int(n)


def assert_not_signed_in(c: TestClient, node: Node) -> None:
    r = c.get(f"/staff/records/{person(node)}")
    assert r.status_code == 303 and r.headers["location"] == "/login", r.text
    api = c.get("/api/staff/conflicts")
    assert api.status_code == 401 and api.json()["error"]["code"] == "not_signed_in", api.text
    assert "张秀英" not in r.text + api.text


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(node: Node) -> None:
    with client(node) as liu, client(node) as liu_elsewhere:
        assert sign_in(liu, "liu") == sign_in(liu_elsewhere, "liu") == 303
        with copy_of(liu, node) as copied:
            assert "张秀英" in copied.get(f"/staff/records/{person(node)}").text  # the copy works while signed in

            r = liu.post("/logout", data={"csrf": csrf(liu)})
            assert r.status_code == 303 and r.headers["location"] == "/login"

            assert_not_signed_in(liu, node)
            assert_not_signed_in(copied, node)
        assert sessions_of(node, "liu") == 1  # the other one
        assert liu_elsewhere.get("/staff").status_code == 200  # only the session signed out ends
        assert sign_in(liu, "liu") == 303 and liu.get("/staff").status_code == 200


def test_a_session_expires_on_the_node(node: Node) -> None:
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        with node.store.transaction() as c:  # twelve hours later
            c.execute("UPDATE staff_sessions SET expires_at = ?", (int(time.time()) - 1,))
        with copy_of(liu, node) as copied:
            assert_not_signed_in(copied, node)
        assert_not_signed_in(liu, node)
        assert sign_in(liu, "liu") == 303  # a new sign-in clears the expired sessions away
        assert sessions_of(node, "liu") == 1 and liu.get("/staff").status_code == 200


def test_each_request_moves_the_expiry_on_without_a_write_every_time(node: Node) -> None:
    "A busy member stays signed in past 12 hours; the node decides, the cookie is the browser session's"

    def expires_at(at: int | None = None) -> int:
        "When the session expires; moved to ``at`` first if given"
        with node.store.transaction() as c:
            if at is not None:
                c.execute("UPDATE staff_sessions SET expires_at = ?", (at,))
            return int(c.execute("SELECT expires_at FROM staff_sessions").fetchone()[0])

    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        assert [cookie.expires for cookie in liu.cookies.jar] == [None]  # no max-age: gone when the browser closes
        now = int(time.time())
        expires_at(now + 60)  # signed in 11 hours 59 minutes ago, busy all along: a minute left
        assert liu.get("/staff").status_code == 200
        assert now + SESSION_SECONDS <= expires_at() <= int(time.time()) + SESSION_SECONDS
        moved_lately = expires_at(now + SESSION_SECONDS - MOVE_AFTER_SECONDS + 30)
        assert liu.get("/staff").status_code == 200
        assert expires_at() == moved_lately  # not written again so soon
        expires_at(now - 1)  # idle for 12 hours
        assert_not_signed_in(liu, node)


def test_pages_stay_readable_when_the_expiry_cannot_be_moved(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    "A read-only database (a file system remounted read-only): the session stays valid, unmoved, warned once"
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        due = int(time.time()) + SESSION_SECONDS - MOVE_AFTER_SECONDS - 60  # last moved six minutes ago
        with node.store.transaction() as c:
            c.execute("UPDATE staff_sessions SET expires_at = ?", (due,))
        node.store.conn.execute("PRAGMA query_only = ON")
        try:
            for _ in range(2):
                r = liu.get("/staff/people")
                assert r.status_code == 200 and "居民" in r.text, r.text
        finally:
            node.store.conn.execute("PRAGMA query_only = OFF")
        (expires_at,) = node.store.conn.execute("SELECT expires_at FROM staff_sessions").fetchone()
        assert expires_at == due
        assert [r.levelname for r in caplog.records if "not moved on" in r.getMessage()] == ["WARNING"]
        assert liu.get("/staff").status_code == 200  # writable again: moved on
        (expires_at,) = node.store.conn.execute("SELECT expires_at FROM staff_sessions").fetchone()
        assert expires_at > due


def test_signing_in_on_a_database_that_cannot_be_written_says_so_in_chinese(node: Node) -> None:
    "Signing in writes (the attempts, the session): on a read-only database, the sign-in page says why, 503"
    with client(node) as liu:
        token = csrf(liu, "/login")
        node.store.conn.execute("PRAGMA query_only = ON")
        try:
            r = liu.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": token})
        finally:
            node.store.conn.execute("PRAGMA query_only = OFF")
        assert r.status_code == 503 and "磁盘现在不能写入" in r.text and "暂时无法登录" in r.text, r.text
        assert "storage_read_only" not in r.text and "<form" in r.text  # the sign-in page, not a JSON error
    assert sessions_of(node, "liu") == 0


def test_the_session_of_a_changed_account_is_deleted_at_its_next_request(node: Node) -> None:
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        with copy_of(liu, node) as copied:
            node.accounts.add("liu", NEW_PASSWORD, role="township")
            assert liu.get("/staff").headers["location"] == "/login"
            assert sessions_of(node, "liu") == 0
            assert copied.get("/api/staff/conflicts").status_code == 401
        assert sign_in(liu, "liu", NEW_PASSWORD) == 303


def test_a_notice_names_the_resident_on_the_page_and_never_in_the_cookie(node: Node) -> None:
    with client(node) as liu, client(node) as liu_elsewhere:
        assert sign_in(liu, "liu") == sign_in(liu_elsewhere, "liu") == 303
        page = liu.get("/staff/conflicts").text
        seen = re.search(r'name="seen" value="([^"]*)"', page)
        assert seen is not None
        r = liu.post("/staff/conflicts/resolve", data={
            "csrf": csrf(liu), "record": person(node), "field": "phone", "typed": NEW_PHONE,
            "seen": html.unescape(seen.group(1))})
        assert r.status_code == 303, r.text

        assert set(cookie_payload(liu)) == {"sid", "csrf"}
        assert "张秀英" not in r.headers.get("set-cookie", "") and NEW_PHONE not in r.headers.get("set-cookie", "")
        assert liu_elsewhere.get("/staff/conflicts").text.count('class="notice"') == 0  # this session's only
        page = liu.get(r.headers["location"]).text
        assert '<p class="notice" role="status">已处理：张秀英的“电话”定为“13800001234”。平板下次同步时会收到。</p>' in page
        assert 'class="notice"' not in liu.get("/staff/conflicts").text  # said once
        assert set(cookie_payload(liu)) == {"sid", "csrf"}


@pytest.mark.parametrize("path", ["/staff/records/{rid}", "/staff/people", "/staff/conflicts", "/staff/duplicates",
                                  "/staff/needs", "/api/staff/conflicts", "/staff/export.csv?collection=person",
                                  "/login", "/api/health", "/api/nothing-here"])
def test_no_answer_is_cached_framed_or_sniffed(node: Node, path: str) -> None:
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        r = liu.get(path.format(rid=person(node)))
        assert r.status_code == (404 if "nothing" in path else 200), r.text
        assert_secured(r.headers)


def test_the_enrolment_code_is_not_cached(node: Node) -> None:
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        r = liu.post("/staff/devices/enrol", data={"csrf": csrf(liu), "unit": V1, "user": "王芳"})
        assert r.status_code == 303, r.text
        r = liu.get(r.headers["location"])  # the page that shows it, once
        assert r.status_code == 200 and "<svg" in r.text, r.text
        assert_secured(r.headers)


def assert_secured(headers: Any) -> None:
    assert headers.get_list("cache-control") == ["no-store"]  # once, even where a handler set it too
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_a_restored_node_keeps_no_session_from_its_backup(node: Node, tmp_path: Path) -> None:
    "Whoever signed out after the backup was taken stays signed out once it is restored: every session starts again"
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        node.backup(tmp_path / "backup.db")
        assert sessions_of(node, "liu") == 1
    db = node.store.path
    node.close()
    Node.restore(db, tmp_path / "backup.db")
    restored = Node(db, TOWNSHIP)
    try:
        assert sessions_of(restored, "liu") == 0
    finally:
        restored.close()
