"""Helpers for the node's page tests: a township node with sample units and staff accounts of every
role, started for a test module, and httpx clients signed in as one of them.

    make_world(tmp, setup)   yields a ``World``: the node's database built by ``setup(node, ids)`` (ids
                             it records go to ``World.ids``), then the node running on it; staff as in
                             ``STAFF``, password ``PASSWORD``
    World.sign_in(username)  a ``Signed`` client: a session and its CSRF token; ``post`` sends forms as
                             the pages do, ``notice`` follows a form's redirect and reads what it said
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_harness import TOWNSHIP, V2, NodeProcess
from server.cli import ensure_units
from server.node import Node

PASSWORD = "correct horse 1"
STAFF = {  # username: (role, unit)
    "liu": ("township", TOWNSHIP),
    "zhao": ("township", V2),  # a township-role account scoped to one village
    "county": ("county", "510903000000"),
    "city": ("city", "510900000000"),
    "admin": ("admin", TOWNSHIP),
}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, html
    return m.group(1)


@dataclass
class Signed:
    client: httpx.Client
    csrf: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True) -> httpx.Response:
        "Post a form as the page does, with the session's CSRF token unless ``csrf=False``"
        return self.client.post(path, data={**({"csrf": self.csrf} if csrf else {}), **(data or {})})

    def notice(self, r: httpx.Response) -> str:
        "Follow a form's redirect; the notice the next page shows"
        assert r.status_code == 303, r.text
        page = self.client.get(r.headers["location"]).text
        m = re.search(r'<p class="notice" role="status">(.*?)</p>', page, re.S)
        assert m, page
        return m.group(1)


@dataclass
class World:
    node: NodeProcess
    db: Path
    ids: dict[str, Any] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    def sign_in(self, username: str) -> Signed:
        c = httpx.Client(base_url=self.node.url, timeout=30, follow_redirects=False)
        self.clients.append(c)
        csrf = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303, r.text
        return Signed(c, csrf_of(c.get("/staff", follow_redirects=True).text))  # county, city: /rollup

    def open(self) -> Node:
        "The node's database, opened beside the running node (WAL: fine while it runs); close it after"
        return Node(self.db, TOWNSHIP)


Setup = Callable[[Node, dict[str, Any]], None]


def make_world(tmp: Path, setup: Setup) -> Iterator[World]:
    db = tmp / "township.db"
    n = Node(db, TOWNSHIP)
    ids: dict[str, Any] = {}
    try:
        ensure_units(n)
        for user, (role, unit) in STAFF.items():
            n.accounts.add(user, PASSWORD, role=role, unit=unit, display_name=f"{user}-name")
        setup(n, ids)
    finally:
        n.close()
    world = World(NodeProcess(db).start(), db, ids)
    try:
        yield world
    finally:
        for c in world.clients:
            c.close()
        world.node.kill()
