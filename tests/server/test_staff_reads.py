"""Staff reads share the node's one connection with the syncs: they wait for a sync's open transaction
instead of reading rows it may yet roll back."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from server import staff as staff_module
from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from test_pullcache import TOWNSHIP, V1, Tab

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2; the project's httpx is what it runs on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

PASSWORD = "correct horse 1"


def test_the_conflicts_api_never_shows_a_conflict_a_sync_then_rolls_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node(tmp_path / "township.db", TOWNSHIP)
    try:
        ensure_units(node)
        node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
        tab = Tab(node, V1, "张丽")
        rid = tab.editor.create("person", {"unit": V1, "name": "王大爷"})
        tab.take(node.sync(tab.dev, tab.request(5000)))
        node.editor("陈主任").update(rid, {"name": "王大爷（更正）"})
        late = tab.editor.update(rid, {"name": "王老汉"})  # concurrent with staff's: a conflict on name

        with TestClient(create_app(node), base_url="http://node") as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert csrf is not None
            r = client.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": csrf.group(1)},
                            follow_redirects=False)
            assert r.status_code == 303, r.text
            assert client.get("/api/staff/conflicts").json() == []

            signed_in, inside, answered = threading.Event(), threading.Event(), threading.Event()
            got: list[object] = []
            real = staff_module.current_staff

            def current_staff(*args: Any) -> Any:  # the session is checked before a sync's batch opens
                staff = real(*args)
                signed_in.set()
                inside.wait(10)
                return staff

            monkeypatch.setattr(staff_module, "current_staff", current_staff)

            def ask() -> None:
                got.append(client.get("/api/staff/conflicts").json())
                answered.set()

            asking = threading.Thread(target=ask)
            asking.start()
            assert signed_in.wait(10)
            with pytest.raises(RuntimeError), node.store.transaction():
                node.store.apply(late)  # the conflict, written but not committed
                inside.set()
                answered.wait(0.5)  # the read comes while the batch is open (it waits, if it is right)
                raise RuntimeError("the batch fails before its commit (a full disk, say)")
            asking.join(10)
            assert got == [[]], "the API showed a conflict that was never committed"
            assert node.store.conflicts() == []
    finally:
        node.close()


def test_the_resolve_api_writes_only_a_field_with_an_open_conflict(tmp_path: Path) -> None:
    node = Node(tmp_path / "township.db", TOWNSHIP)
    try:
        ensure_units(node)
        node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
        tab = Tab(node, V1, "张丽")
        rid = tab.editor.create("person", {"unit": V1, "name": "王大爷", "phone": "13800000000"})
        tab.take(node.sync(tab.dev, tab.request(5000)))
        node.editor("陈主任").update(rid, {"name": "王大爷（更正）"})
        late = tab.editor.update(rid, {"name": "王老汉"})
        node.store.apply(late)  # a conflict on name, none on phone or unit

        with TestClient(create_app(node), base_url="http://node") as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert csrf is not None
            assert client.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": csrf.group(1)},
                               follow_redirects=False).status_code == 303
            token = re.search(r'name="csrf" value="([^"]+)"', client.get("/staff/conflicts").text)
            assert token is not None
            headers = {"x-csrf-token": token.group(1)}
            before = node.store.count_ops()
            for field, value in (("phone", "13900000000"), ("unit", "510904002001")):
                r = client.post("/api/staff/resolve", json={"record": rid, "field": field, "value": value},
                                headers=headers)
                assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request"), r.text
            assert node.store.count_ops() == before
            r = client.post("/api/staff/resolve", json={"record": rid, "field": "name", "value": "王大爷"},
                            headers=headers)
            assert r.status_code == 200, r.text
            rec = node.store.get(rid)
            assert rec is not None and rec.data["name"] == "王大爷" and rec.conflicts == []
    finally:
        node.close()
