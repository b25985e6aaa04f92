"""A four-tier tree of real nodes on loopback for the snapshot tests: one city, two counties, two
townships in each, two villages in each township with a tablet each (and a second tablet in one village),
every node a hypercorn subprocess (``NodeProcess``).

    build_tree(root)   make the databases, enrol tablets and link devices, link counties to townships and the
                       city to counties, add staff accounts, start every node; tablets then enter records
    Tree.pull(unit)    one upper node pulls from its links now, in-process, as `cunsync snapshot pull` does
    Tree.work(...)     a tablet's worker registers residents with needs and services, syncs
    staff_client(url, username)   an httpx client signed in as a staff member
    tablet_totals(tablets)        figures counted straight from the tablets' own records (by record id, so
                                  two tablets of one village count once)

Townships run with ``CUNSYNC_SUPPRESS_BELOW=0`` unless told otherwise, so totals add up exactly, and the
schedule is off (``CUNSYNC_PULL_MINUTES=0``): tests pull when they mean to.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from client import sample
from client.tablet import Tablet
from e2e_harness import NodeProcess, no_sleep
from server import links, schedule
from server.links import PullResult
from server.node import Node
from sync import units as unitlib

CITY = "510900000000"
COUNTIES = ("510903000000", "510904000000")
TOWNSHIPS = {c: (c[:6] + "001000", c[:6] + "002000") for c in COUNTIES}
ALL_TOWNSHIPS = tuple(t for ts in TOWNSHIPS.values() for t in ts)
PASSWORD = "correct horse battery"
STATUS_MOVES = {"服务中": ("服务中",), "已解决": ("服务中", "已解决"), "已关闭": ("服务中", "已解决", "已关闭"),
                "已取消": ("已取消",), "待处理": ()}


def villages(township: str) -> tuple[str, str]:
    return township[:9] + "001", township[:9] + "002"


@contextmanager
def node_env(**env: str) -> Iterator[None]:
    "Environment for the node subprocesses started inside (NodeProcess passes os.environ on)"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Tree:
    root: Path
    nodes: dict[str, NodeProcess]
    #: link device tokens each child issued for its parent: child unit -> token
    link_tokens: dict[str, str]
    #: village tablets' tokens: village -> tokens
    tablet_tokens: dict[str, list[str]]
    tablets: dict[str, list[Tablet]] = field(default_factory=dict)
    #: every personal value the tablets wrote: names, phones, ID numbers, addresses
    personal: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(6))

    def db(self, unit: str) -> Path:
        return self.nodes[unit].db

    def pull(self, unit: str) -> dict[str, PullResult]:
        "The node at ``unit`` pulls from every link now (in this process, on its database)"
        n = Node(self.db(unit), unit)
        try:
            return {r.unit: r for r in schedule.pull_all(n)}
        finally:
            n.close()

    def pull_up(self) -> None:
        "Counties pull from their townships, then the city from the counties"
        for c in COUNTIES:
            assert all(r.ok for r in self.pull(c).values())
        assert all(r.ok for r in self.pull(CITY).values())

    def tablet(self, village: str, i: int = 0) -> Tablet:
        return self.tablets[village][i]

    def totals(self, prefix: str = "") -> dict[str, Counter[tuple[Any, ...]]]:
        "``tablet_totals`` of the tablets of villages whose code starts with ``prefix``, each synced first"
        chosen = {v: tabs for v, tabs in self.tablets.items() if v.startswith(prefix)}
        for tabs in chosen.values():
            for tab in tabs:
                tab.sync()
        return tablet_totals(chosen)

    def work(self, tab: Tablet, people: int, *, months: tuple[int, ...] = (9, 10, 11)) -> None:
        "A worker registers residents, each with needs in several states and services in several months"
        rng = self.rng
        for _ in range(people):
            p = sample.person(rng, tab.unit)
            self.personal += [p["name"], p["phone"], p["id_number"], p["address"]]
            pid = tab.create("person", p)
            for _ in range(rng.randint(0, 2)):
                nd = sample.need(rng, tab.unit, pid)
                nid = tab.create("need", nd)
                for st in STATUS_MOVES[rng.choice(list(STATUS_MOVES))]:
                    tab.update(nid, {"status": st})
                if rng.random() < 0.8:
                    sv = sample.service(rng, tab.unit, pid, nid, nd["category"])
                    sv["served_at"] = f"2026-{rng.choice(months):02d}-{rng.randint(1, 28):02d}T10:00"
                    if rng.random() < 0.3:
                        del sv["people_served"]  # counts as 1
                    elif rng.random() < 0.3:
                        sv["people_served"] = rng.randint(2, 6)
                    tab.create("service", sv)
        tab.sync()


def build_tree(root: Path, *, people: int = 6) -> Tree:
    "The whole tree, started, with ``people`` residents per tablet synced to the townships"
    root.mkdir(parents=True, exist_ok=True)
    nodes: dict[str, NodeProcess] = {}
    for unit in (CITY, *COUNTIES, *ALL_TOWNSHIPS):
        nodes[unit] = NodeProcess(root / f"{unit}.db", unit)
    link_tokens: dict[str, str] = {}
    tablet_tokens: dict[str, list[str]] = defaultdict(list)
    names = {u.code: u.name for u in unitlib.SAMPLE_TREE}
    for unit, proc in nodes.items():
        n = Node(proc.db, unit)
        try:
            unitlib.load_units(n.store.db, unitlib.SAMPLE_TREE)
            parent = unitlib.parent_of(unit)
            if parent is not None:
                _, link_tokens[unit] = n.add_device(parent, f"{names.get(parent, parent)}-link",
                                                    tier=unitlib.tier_of(parent))
            if n.tier == "township":
                for j, v in enumerate(villages(unit)):
                    for k in range(2 if (unit == ALL_TOWNSHIPS[0] and j == 0) else 1):
                        tablet_tokens[v].append(n.add_device(v, f"社工{v[-3:]}-{k}")[1])
                n.accounts.add("zhen", PASSWORD, role="township")
            elif n.tier == "county":
                n.accounts.add("xian", PASSWORD, role="county")
            else:
                n.accounts.add("shi", PASSWORD, role="city")
        finally:
            n.close()
    for unit, proc in nodes.items():  # each upper node links to its children
        if unitlib.tier_of(unit) in ("county", "city"):
            n = Node(proc.db, unit)
            try:
                for child, cproc in nodes.items():
                    if unitlib.parent_of(child) == unit:
                        links.add_link(n.store, unit, child, cproc.url, link_tokens[child])
            finally:
                n.close()
    for proc in nodes.values():
        proc.start()
    tree = Tree(root, nodes, link_tokens, dict(tablet_tokens))
    for t in ALL_TOWNSHIPS:
        for v in villages(t):
            tree.tablets[v] = [Tablet.init(root / f"tab-{v}-{k}.db", nodes[t].url, token, sleep=no_sleep)
                               for k, token in enumerate(tablet_tokens[v])]
    for v, tabs in tree.tablets.items():
        for tab in tabs:
            tree.work(tab, people)
    for tabs in tree.tablets.values():
        for tab in tabs:
            tab.sync()  # the second tablet of a village receives the first one's records
    return tree


def stop_tree(tree: Tree) -> None:
    for tabs in tree.tablets.values():
        for tab in tabs:
            tab.close()
    for proc in tree.nodes.values():
        proc.kill()


@contextmanager
def staff_client(url: str, username: str) -> Iterator[httpx.Client]:
    "A client signed in as ``username``"
    with httpx.Client(base_url=url, timeout=15) as c:
        csrf = re.findall(r'name="csrf" value="([^"]+)"', c.get("/login").text)[0]
        r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303, r.text
        yield c


def tablet_totals(tablets: Mapping[str, list[Tablet]]) -> dict[str, Counter[tuple[Any, ...]]]:
    """Figures counted from the tablets' records: needs (village, category, status), services
    (village, type, month) -> count, minutes and people, residents (village, group)"""
    seen: dict[str, Any] = {}
    for tabs in tablets.values():
        for tab in tabs:
            for coll in ("person", "need", "service"):
                for rec in tab.list(coll):
                    seen[rec.id] = rec
    out: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for rec in seen.values():
        d = rec.data
        if rec.coll == "need":
            out["needs"][(rec.unit, d["category"], d.get("status") or "待处理")] += 1
        elif rec.coll == "service":
            key = (rec.unit, d["service_type"], d["served_at"][:7])
            out["services"][key] += 1
            out["minutes"][key] += d.get("minutes") or 0
            out["people"][key] += d.get("people_served") or 1
        else:
            out["residents"][(rec.unit, "合计")] += 1
            for g in d.get("groups") or ():
                if g in ("老年人", "儿童", "困难群众", "残疾人"):
                    out["residents"][(rec.unit, g)] += 1
    return out
