"""Staff accounts over their life: a password reset, a new role or unit, or disabling an account ends
every session of it at its next request; a disabled account cannot sign in and history keeps its name;
`cunsync user list` and the admin API's `GET /api/admin/users` show accounts, never a password hash."""

from __future__ import annotations

import re
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.app import create_app
from server.auth import Staff
from server.cli import ensure_units, user_group
from server.node import Node
from server.staff import SESSION_ENDED
from test_pullcache import TOWNSHIP, V1

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2; the project's httpx is what it runs on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

PASSWORD = "correct horse 1"
NEW_PASSWORD = "battery staple 2"
COUNTY = "510903000000"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "township.db", TOWNSHIP)
    ensure_units(n)
    n.accounts.add("liu", PASSWORD, role="township", display_name="刘主任")
    n.accounts.add("wang", PASSWORD, role="township", display_name="王干事")
    n.accounts.add("chen", PASSWORD, role="county", unit=COUNTY)
    try:
        yield n
    finally:
        n.close()


def user(node: Node, *args: str) -> Result:
    "`cunsync user ...` on the node's database, beside the open node (as an operator runs it)"
    return CliRunner().invoke(user_group, [args[0], "--db", str(node.store.path), *args[1:]])


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> int:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf is not None
    r = client.post("/login", data={"username": username, "password": password, "csrf": csrf.group(1)},
                    follow_redirects=False)
    return r.status_code


def client(node: Node) -> TestClient:
    return TestClient(create_app(node), base_url="http://node", follow_redirects=False)


def assert_signed_out(c: TestClient, path: str = "/staff") -> None:
    "The session ended: the page sends to /login, which says why, in Chinese"
    r = c.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/login", r.text
    page = c.get("/login").text
    assert SESSION_ENDED in page and "请重新登录" in page
    assert SESSION_ENDED not in c.get("/login").text  # said once


def test_a_password_reset_signs_out_every_session_and_keeps_the_name(node: Node) -> None:
    with client(node) as liu, client(node) as liu_api, client(node) as wang:
        assert sign_in(liu, "liu") == sign_in(liu_api, "liu") == sign_in(wang, "wang") == 303
        assert liu.get("/staff").status_code == 200

        r = user(node, "add", "--username", "liu", "--role", "township", "--password", NEW_PASSWORD)
        assert r.exit_code == 0, r.output

        assert_signed_out(liu)
        api = liu_api.get("/api/staff/conflicts")
        assert api.status_code == 401 and api.json()["error"]["code"] == "session_ended"
        assert wang.get("/staff").status_code == 200  # another account's session is untouched
        assert sign_in(liu, "liu", PASSWORD) == 401
        assert sign_in(liu, "liu", NEW_PASSWORD) == 303
        assert liu.get("/staff").status_code == 200
    assert node.accounts.get("liu") == Staff("liu", "township", TOWNSHIP, "刘主任")  # no --name: kept


@pytest.mark.parametrize("role,unit", [("admin", TOWNSHIP), ("township", V1)])
def test_a_new_role_or_unit_signs_the_account_out(node: Node, role: str, unit: str) -> None:
    with client(node) as liu:
        assert sign_in(liu, "liu") == 303
        node.accounts.add("liu", PASSWORD, role="township")  # the same password again: sessions end too
        assert_signed_out(liu)
        assert sign_in(liu, "liu") == 303
        r = user(node, "add", "--username", "liu", "--role", role, "--unit", unit, "--password", PASSWORD,
                 "--name", "刘镇长")
        assert r.exit_code == 0, r.output
        assert_signed_out(liu)
    assert node.accounts.get("liu") == Staff("liu", role, unit, "刘镇长")


def test_a_disabled_account_is_signed_out_cannot_sign_in_and_history_keeps_its_name(node: Node) -> None:
    rid = node.editor("liu").create("person", {"unit": V1, "name": "张秀英"})
    with client(node) as liu, client(node) as chen, client(node) as wang:
        assert sign_in(liu, "liu") == sign_in(chen, "chen") == sign_in(wang, "wang") == 303
        assert chen.get("/rollup").status_code == 200

        for who in ("liu", "chen"):
            r = user(node, "disable", "--username", who)
            assert r.exit_code == 0 and f"disabled {who}" in r.output, r.output
        assert_signed_out(liu)
        assert_signed_out(chen, "/rollup")  # the roll-up pages check the session the same way
        assert chen.get("/api/snapshot").status_code == 401
        r = liu.post("/login", data={"username": "liu", "password": PASSWORD,
                                     "csrf": re.findall(r'name="csrf" value="([^"]+)"', liu.get("/login").text)[0]})
        assert r.status_code == 401 and "用户名或密码错误" in r.text

        page = wang.get(f"/staff/records/{rid}").text  # who wrote the record is still named
        assert "刘主任" in page

        r = user(node, "add", "--username", "liu", "--role", "township", "--password", NEW_PASSWORD)
        assert r.exit_code == 0, r.output  # enabled again, with a new password
        assert sign_in(liu, "liu", NEW_PASSWORD) == 303
    assert node.accounts.get("chen") is None


@pytest.mark.parametrize("path", ["/rollup.csv", "/rollup.xlsx"])
def test_a_roll_up_export_says_the_session_ended_when_the_account_changed(node: Node, path: str) -> None:
    "The page's download links lead to /login as the page does, which says in Chinese the account changed"
    with client(node) as chen, client(node) as stranger:
        assert sign_in(chen, "chen") == 303
        assert chen.get(path).status_code == 200
        r = user(node, "add", "--username", "chen", "--role", "county", "--unit", COUNTY, "--password", NEW_PASSWORD)
        assert r.exit_code == 0, r.output
        ended = chen.get(path)
        assert ended.status_code == 303 and ended.headers["location"] == "/login", ended.text
        assert SESSION_ENDED in chen.get("/login").text
        never = stranger.get(path)
        assert never.status_code == 303 and never.headers["location"] == "/login", never.text
        assert SESSION_ENDED not in stranger.get("/login").text


def test_disabling_an_unknown_account_says_so_and_writes_nothing(node: Node) -> None:
    before = node.accounts.listing()
    r = user(node, "disable", "--username", "nobody")
    assert r.exit_code == 1 and "no staff account 'nobody'" in r.output and "cunsync user list" in r.output
    assert node.accounts.listing() == before


def test_user_list_shows_name_role_unit_and_never_the_hash(node: Node) -> None:
    assert user(node, "disable", "--username", "wang").exit_code == 0
    r = user(node, "list")
    assert r.exit_code == 0, r.output
    lines = [line.split() for line in r.output.splitlines()]
    assert lines == [["chen", "-", "county", COUNTY], ["liu", "刘主任", "township", TOWNSHIP],
                     ["wang", "王干事", "township", TOWNSHIP, "disabled"]]
    assert "scrypt" not in r.output


def test_admins_list_accounts_over_the_api_as_user_list_does_and_never_a_secret(node: Node) -> None:
    node.accounts.add("root", PASSWORD, role="admin")
    node.accounts.disable("wang")
    with client(node) as admin, client(node) as liu, client(node) as chen, client(node) as nobody:
        assert sign_in(admin, "root") == sign_in(liu, "liu") == sign_in(chen, "chen") == 303
        for other in (liu, chen):  # township and county staff are refused, as by the other admin endpoints
            r = other.get("/api/admin/users")
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert nobody.get("/api/admin/users").json()["error"]["code"] == "not_signed_in"
        r = admin.get("/api/admin/users")
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"username": "chen", "display_name": "", "role": "county", "unit": COUNTY, "disabled": False},
        {"username": "liu", "display_name": "刘主任", "role": "township", "unit": TOWNSHIP, "disabled": False},
        {"username": "root", "display_name": "", "role": "admin", "unit": TOWNSHIP, "disabled": False},
        {"username": "wang", "display_name": "王干事", "role": "township", "unit": TOWNSHIP, "disabled": True}]
    hashes = [h for (h,) in node.store.conn.execute("SELECT password FROM staff")]
    assert "scrypt" not in r.text and not any(h in r.text for h in hashes)
    assert "stamp" not in r.text and not any(node.accounts.get(u).stamp in r.text  # type: ignore[union-attr]
                                             for u in ("chen", "liu", "root"))


def test_a_database_from_before_disabling_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the staff table as earlier versions made it
        conn.execute("CREATE TABLE staff (username TEXT PRIMARY KEY, password TEXT NOT NULL, role TEXT NOT NULL,"
                     " unit TEXT NOT NULL, display_name TEXT NOT NULL DEFAULT '', failures INTEGER NOT NULL"
                     " DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)")
    conn.close()
    n = Node(db, TOWNSHIP)
    try:
        n.accounts.add("liu", PASSWORD, role="township")
        n.accounts.disable("liu")
        assert n.accounts.get("liu") is None and [d for _, d in n.accounts.listing()] == [True]
    finally:
        n.close()
