"""The access matrix over a real node: every endpoint × every role, inside and outside its scope,
asserted both ways; staff sign-in with CSRF and lock-out; the one error shape throughout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_harness import TOWNSHIP, V1, V2, NodeProcess
from server.auth import MAX_FAILURES
from server.node import Node
from sync.edit import Editor
from sync.store import Store
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, encode

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse 1"
STAFF = {  # username: (role, unit)
    "liu": ("township", TOWNSHIP),
    "zhao": ("township", V2),  # a township-role account scoped to one village
    "county": ("county", "510903000000"),
    "city": ("city", "510900000000"),
    "admin": ("admin", TOWNSHIP),
    "locked": ("admin", TOWNSHIP),  # the lock-out test's own account
}


@dataclass
class World:
    node: NodeProcess
    token: str
    device: str
    revoked_token: str
    record_v1: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    db = tmp_path_factory.mktemp("access") / "township.db"
    n = Node(db, TOWNSHIP)
    try:
        for user, (role, unit) in STAFF.items():
            n.accounts.add(user, PASSWORD, role=role, unit=unit)
        device, token = n.add_device(V1, "wang")
        gone, revoked = n.add_device(V1, "lost")
        n.revoke(gone, wipe=True)
        # a real conflict in village 1: the tablet and the township correct the name concurrently
        rid = n.editor("liu").create("person", {"unit": V1, "name": "张秀英", "phone": "13800138000"})
        tablet = Store()
        tablet.apply([op for _, op in n.store.ops_since(0)])
        village_ops = Editor(tablet, device=device, user="wang", unit=V1, tier="village").update(rid, {"name": "张秀瑛"})
        n.editor("liu").update(rid, {"name": "张秀萍"})
        n.store.apply(village_ops)
        tablet.close()
        assert n.store.get(rid).conflicts == ["name"]  # type: ignore[union-attr]
    finally:
        n.close()
    proc = NodeProcess(db).start()
    yield World(proc, token, device, revoked, rid)
    proc.kill()


def _client(world: World) -> httpx.Client:
    return httpx.Client(base_url=world.node.url, timeout=30, follow_redirects=False)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


@contextmanager
def signed_in(world: World, username: str) -> Iterator[tuple[httpx.Client, str]]:
    "A client signed in as a staff member, and the CSRF token of its session"
    with _client(world) as c:
        csrf = _csrf(c.get("/login").text)
        r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/staff", r.text
        yield c, _csrf(c.get("/staff", follow_redirects=True).text)  # county and city staff land on /rollup


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body


def _sync_body(device: str) -> bytes:
    return encode(SyncRequest(protocol=PROTOCOL_VERSION, device=device))


def test_device_endpoints_by_caller(world: World) -> None:
    with _client(world) as c:
        ok = c.get("/api/whoami", headers={"authorization": f"Bearer {world.token}"})
        assert ok.status_code == 200 and ok.json()["unit"] == V1
        assert_error(c.get("/api/whoami"), 401, "unauthorized")
        r = c.post("/api/sync", content=_sync_body(world.device),
                   headers={"authorization": f"Bearer {world.token}", "content-type": MSGPACK})
        assert r.status_code == 200
        assert_error(c.post("/api/sync", content=_sync_body(world.device), headers={"content-type": MSGPACK}),
                     401, "unauthorized")
        assert_error(c.post("/api/sync", content=_sync_body("x"),
                            headers={"authorization": f"Bearer {world.revoked_token}", "content-type": MSGPACK}),
                     403, "device_revoked")
    # a staff session is not a device credential
    with signed_in(world, "liu") as (c, _):
        assert_error(c.get("/api/whoami"), 401, "unauthorized")
        assert_error(c.post("/api/sync", content=_sync_body(world.device), headers={"content-type": MSGPACK}),
                     401, "unauthorized")


@pytest.mark.parametrize("username,status,code", [
    ("liu", 200, None), ("zhao", 200, None),
    ("county", 403, "forbidden"), ("city", 403, "forbidden"), ("admin", 403, "forbidden"),
])
def test_staff_conflicts_by_role_and_scope(world: World, username: str, status: int, code: str | None) -> None:
    with signed_in(world, username) as (c, _):
        r = c.get("/api/staff/conflicts")
        if code:
            assert_error(r, status, code)
            return
        records = {x["record"] for x in r.json()}
        # liu's township holds the conflict; zhao is scoped to another village and must not see it
        assert records == ({world.record_v1} if username == "liu" else set())


def test_staff_resolve_by_role_scope_and_csrf(world: World) -> None:
    with _client(world) as anon:
        assert_error(anon.post("/api/staff/resolve", json={}), 401, "not_signed_in")
        assert_error(anon.get("/api/staff/conflicts", headers={"authorization": f"Bearer {world.token}"}),
                     401, "not_signed_in")
    body = {"record": world.record_v1, "field": "name", "value": "张秀英"}
    for user in ("county", "city", "admin"):
        with signed_in(world, user) as (c, csrf):
            assert_error(c.post("/api/staff/resolve", json=body, headers={"x-csrf-token": csrf}), 403, "forbidden")
    with signed_in(world, "zhao") as (c, csrf):
        assert_error(c.post("/api/staff/resolve", json=body, headers={"x-csrf-token": csrf}), 404, "not_found")
    with signed_in(world, "liu") as (c, csrf):
        assert_error(c.post("/api/staff/resolve", json=body), 403, "csrf")
        assert_error(c.post("/api/staff/resolve", json=body, headers={"x-csrf-token": "forged"}), 403, "csrf")
        assert c.get("/api/staff/conflicts").json() != []  # nothing was resolved by the refused calls
        r = c.post("/api/staff/resolve", json=body, headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and r.json()["ops"] == 1
        assert c.get("/api/staff/conflicts").json() == []


def test_pages_by_role(world: World) -> None:
    with _client(world) as anon:
        r = anon.get("/staff")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert 'lang="zh-CN"' in anon.get("/login").text
    with signed_in(world, "county") as (c, _):
        r = c.get("/staff")
        assert r.status_code == 303 and r.headers["location"] == "/rollup"
        page = c.get("/rollup").text
        assert "汇总数据" in page and "张秀" not in page and "13800138000" not in page


def test_login_needs_csrf_and_locks_out(world: World) -> None:
    with _client(world) as c:
        r = c.post("/login", data={"username": "locked", "password": PASSWORD, "csrf": "nope"})
        assert r.status_code == 403 and "页面已过期" in r.text
        csrf = _csrf(c.get("/login").text)
        for _ in range(MAX_FAILURES):
            r = c.post("/login", data={"username": "locked", "password": "wrong password", "csrf": csrf})
            assert r.status_code == 401 and "用户名或密码错误" in r.text
        r = c.post("/login", data={"username": "locked", "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 429 and "锁定" in r.text
        assert "cunsync_session" not in r.headers.get("set-cookie", "") or "/staff" not in r.headers.get("location", "")


def test_passwords_are_stored_as_scrypt_hashes(world: World) -> None:
    import sqlite3

    rows = sqlite3.connect(world.node.db).execute("SELECT password FROM staff").fetchall()
    assert rows and all(p.startswith("scrypt$") and PASSWORD not in p for (p,) in rows)
    raw = b"".join(p.read_bytes() for p in Path(world.node.db).parent.glob("township.db*"))
    assert PASSWORD.encode() not in raw


@pytest.mark.parametrize("username,unit,status,code", [
    ("liu", V1, 200, None),
    ("zhao", V1, 403, "out_of_scope"),  # zhao's scope is village 2 only
    ("county", V1, 403, "forbidden"), ("city", V1, 403, "forbidden"), ("admin", V1, 403, "forbidden"),
])
def test_enrolment_codes_by_role_and_scope(world: World, username: str, unit: str, status: int,
                                           code: str | None) -> None:
    with signed_in(world, username) as (c, csrf):
        assert_error(c.post("/api/staff/enrolments", json={"unit": unit, "user": "新人"}), 403, "csrf")
        r = c.post("/api/staff/enrolments", json={"unit": unit, "user": "新人"}, headers={"x-csrf-token": csrf})
        if code:
            assert_error(r, status, code)
        else:
            assert r.status_code == 200 and len(r.json()["code"]) == 11
            enrolled = httpx.post(world.node.url + "/api/enrol", json={"code": r.json()["code"]}, timeout=30)
            assert enrolled.status_code == 200 and enrolled.json()["unit"] == unit


def test_revoke_by_role_and_scope(world: World) -> None:
    n = Node(world.node.db, TOWNSHIP)
    try:
        victim, token = n.add_device(V1, "temp")
    finally:
        n.close()
    path = f"/api/staff/devices/{victim}/revoke"
    for user, status, code in (("county", 403, "forbidden"), ("admin", 403, "forbidden"), ("zhao", 404, "not_found")):
        with signed_in(world, user) as (c, csrf):
            assert_error(c.post(path, headers={"x-csrf-token": csrf}), status, code)
    who = httpx.get(world.node.url + "/api/whoami", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert who.json()["revoked"] is False
    with signed_in(world, "liu") as (c, csrf):
        r = c.post(path + "?wipe=1", headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and r.json() == {"device": victim, "revoked": True, "wipe": True}
    who = httpx.get(world.node.url + "/api/whoami", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert who.json()["revoked"] is True


def test_only_admins_add_users(world: World) -> None:
    new = {"username": "wu", "password": "another pass 2", "role": "township", "unit": V1}
    for user in ("liu", "county", "city"):
        with signed_in(world, user) as (c, csrf):
            assert_error(c.post("/api/admin/users", json=new, headers={"x-csrf-token": csrf}), 403, "forbidden")
    with signed_in(world, "admin") as (c, csrf):
        assert_error(c.post("/api/admin/users", json={**new, "password": "short"},
                            headers={"x-csrf-token": csrf}), 400, "malformed_body")  # at least 8 characters
        r = c.post("/api/admin/users", json=new, headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and r.json() == {"username": "wu", "role": "township", "unit": V1}
    with _client(world) as c:
        csrf = _csrf(c.get("/login").text)
        r = c.post("/login", data={"username": "wu", "password": "another pass 2", "csrf": csrf})
        assert r.status_code == 303


def test_only_admins_disable_users_and_a_disabled_one_cannot_sign_in(world: World) -> None:
    new = {"username": "qian", "password": "another pass 3", "role": "township", "unit": V1}
    with signed_in(world, "admin") as (c, csrf):
        assert c.post("/api/admin/users", json=new, headers={"x-csrf-token": csrf}).status_code == 200
    for user in ("liu", "county"):
        with signed_in(world, user) as (c, csrf):
            assert_error(c.post("/api/admin/users/qian/disable", headers={"x-csrf-token": csrf}), 403, "forbidden")
    with signed_in(world, "admin") as (c, csrf):
        assert_error(c.post("/api/admin/users/nobody/disable", headers={"x-csrf-token": csrf}), 404, "not_found")
        r = c.post("/api/admin/users/qian/disable", headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and r.json() == {"username": "qian", "disabled": True}
    with _client(world) as c:
        csrf = _csrf(c.get("/login").text)
        r = c.post("/login", data={"username": "qian", "password": "another pass 3", "csrf": csrf})
        assert r.status_code != 303 and "用户名或密码错误" in r.text


def _duplicates(world: World, unit: str, name: str, need_unit: str) -> tuple[str, str, str]:
    "A resident registered twice in ``unit`` by township staff, the second with a need in ``need_unit``"
    n = Node(world.node.db, TOWNSHIP)
    try:
        ed = n.editor("liu")
        keep, drop = (ed.create("person", {"unit": unit, "name": name, "birth_date": "1940-02-03"}) for _ in "ab")
        need = ed.create("need", {"unit": need_unit, "person": drop, "category": "养老服务"})
    finally:
        n.close()
    return keep, drop, need


def test_merging_duplicates_by_role_and_scope(world: World) -> None:
    keep, drop, need = _duplicates(world, V1, "李桂兰", V1)
    body = {"keep": keep, "drop": drop}
    for user, status, code in (("county", 403, "forbidden"), ("city", 403, "forbidden"),
                               ("admin", 403, "forbidden"), ("zhao", 404, "not_found")):
        with signed_in(world, user) as (c, csrf):
            assert_error(c.post("/api/staff/merge", json=body, headers={"x-csrf-token": csrf}), status, code)
    with signed_in(world, "liu") as (c, csrf):
        assert_error(c.post("/api/staff/merge", json=body), 403, "csrf")
        assert_error(c.post("/api/staff/merge", json={"keep": keep, "drop": keep},
                            headers={"x-csrf-token": csrf}), 400, "invalid_value")
        r = c.post("/api/staff/merge", json=body, headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and r.json()["ops"] >= 3
    n = Node(world.node.db, TOWNSHIP)
    try:
        assert n.store.get(need).data["person"] == keep  # type: ignore[union-attr]
        assert n.store.get(drop).deleted and n.store.resolve_id(drop) == keep  # type: ignore[union-attr]
    finally:
        n.close()


def test_staff_scoped_to_one_village_cannot_merge_in_records_of_another(world: World) -> None:
    "zhao sees only V2: merging two V2 residents would move a need of V1 into V2"
    keep, drop, need = _duplicates(world, V2, "孙桂英", V1)
    with signed_in(world, "zhao") as (c, csrf):
        r = c.post("/api/staff/merge", json={"keep": keep, "drop": drop}, headers={"x-csrf-token": csrf})
        assert_error(r, 403, "out_of_scope")
        assert r.json()["error"]["details"]["units"] == [V1]
        page = c.post("/staff/duplicates/merge", data={"csrf": csrf, "keep": keep, "drop": drop})
        assert page.status_code == 400 and "有需求或服务记录在您负责的范围之外（510903001001）" in page.text
    n = Node(world.node.db, TOWNSHIP)
    try:
        assert n.store.get(need).unit == V1 and not n.store.get(drop).deleted  # type: ignore[union-attr]
    finally:
        n.close()


def test_reference_data_by_role_and_scope(world: World) -> None:
    "Notices, tasks and catalogues reach every village: only staff scoped to the whole township author them"
    writes = (("/api/staff/notices", {"title": "全镇通知", "body": "周五开会"}),
              ("/api/staff/tasks", {"title": "走访独居老人"}),
              ("/api/staff/catalogue", {"kind": "need_category", "code": "助浴", "name": "助浴服务"}))
    for user, status, code in (("zhao", 403, "forbidden"), ("county", 403, "forbidden"),
                               ("city", 403, "forbidden"), ("admin", 403, "forbidden")):
        with signed_in(world, user) as (c, csrf):
            for url, body in writes:
                assert_error(c.post(url, json=body, headers={"x-csrf-token": csrf}), status, code)
    n = Node(world.node.db, TOWNSHIP)
    try:
        assert n.store.records("notice") == [] and n.store.records("task") == []
        assert n.store.records("catalogue") == []
    finally:
        n.close()
    with signed_in(world, "liu") as (c, csrf):
        for url, body in writes:
            assert c.post(url, json=body, headers={"x-csrf-token": csrf}).status_code in (200, 201)
        made = c.get("/api/staff/reference").json()
        assert [x["title"] for x in made["notices"]] == ["全镇通知"]
        assert [x["title"] for x in made["tasks"]] == ["走访独居老人"]
        assert [x["code"] for x in made["need_categories"]] == ["助浴"]


def test_a_malformed_unit_is_a_400_not_a_crash(world: World) -> None:
    with signed_in(world, "liu") as (c, csrf):
        r = c.post("/api/staff/enrolments", json={"unit": "51090300100x", "user": "x"},
                   headers={"x-csrf-token": csrf})
        assert_error(r, 400, "invalid_unit")
