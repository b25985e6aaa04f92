"""Helpers for the node's page tests: a township node with sample units and staff accounts of every
role, started for a test module, and httpx clients signed in as one of them.

    make_world(tmp, setup)   yields a ``World``: the node's database built by ``setup(node, ids)`` (ids
                             it records go to ``World.ids``), then the node running on it; staff as in
                             ``STAFF``, password ``PASSWORD``
    World.sign_in(username)  a ``Signed`` client: a session and its CSRF token; ``post`` sends forms as
                             the pages do, ``notice`` follows a form's redirect and reads what it said
    browser_form(page, action)  the fields a browser submits from a page's form, untouched by the user
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
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


class _BrowserForm(HTMLParser):
    """What a browser sends from one form, as the HTML standard has it: a text input's value without line
    breaks, a date input's value only if it is a real date, the selected (else first) option, a textarea's
    text without the newline right after its tag and with CRLF line breaks, checked boxes only"""

    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action, self.inside = action, False
        self.fields: list[tuple[str, str]] = []
        self._select: tuple[str, list[tuple[str | None, bool, list[str]]]] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("action") == self.action
        if not self.inside or tag == "form":
            return
        if tag == "input" and "name" in a:
            kind, value = a.get("type", "text"), a.get("value", "")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value", "on")))
                return
            if kind == "text":
                value = value.replace("\r", "").replace("\n", "")
            if kind == "date":
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    value = ""
            self.fields.append((a["name"], value))
        elif tag == "select":
            self._select = (a["name"], [])
        elif tag == "option" and self._select is not None:
            self._select[1].append((dict(attrs).get("value"), "selected" in a, []))
        elif tag == "textarea":
            self._textarea = (a["name"], [])

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)
        elif self._select is not None and self._select[1]:
            self._select[1][-1][2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            name, options = self._select
            picked = next((o for o in options if o[1]), options[0] if options else None)
            if picked is not None:
                self.fields.append((name, picked[0] if picked[0] is not None else "".join(picked[2]).strip()))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            text = "".join(self._textarea[1])
            text = text[1:] if text.startswith("\n") else text
            self.fields.append((self._textarea[0], text.replace("\r\n", "\n").replace("\n", "\r\n")))
            self._textarea = None


def browser_form(page: str, action: str) -> dict[str, Any]:
    """The fields a browser submits from the page's form posting to ``action``, as the page filled them in
    (a name sent more than once, such as checked boxes, as a list)"""
    parser = _BrowserForm(action)
    parser.feed(page)
    assert parser.fields, f"no form posting to {action}"
    sent: dict[str, list[str]] = {}
    for name, value in parser.fields:
        sent.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in sent.items()}


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
