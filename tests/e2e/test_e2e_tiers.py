"""Four tiers over real nodes: a city, two counties, two townships each, tablets under them (see
``tiers_harness``). The city's figures equal those counted straight from the tablets; no personal field
reaches a county or city file; pulls move only what changed; a closed month's revision shows its diff; an
unreachable township shows its last snapshot and its age; wrong credentials and scopes get clear 4xx codes.

The tests share one tree and run in order: later ones change it (a closed month, a killed township).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from e2e_harness import ROOT, NodeProcess
from server import links
from server.node import Node
from server.snapshots import Snapshot
from sync.errors import OutOfScope
from sync.wire import MSGPACK, decode
from tiers_harness import (
    ALL_TOWNSHIPS, CITY, COUNTIES, TOWNSHIPS, Tree, build_tree, node_env, staff_client, stop_tree,
    villages,
)

pytestmark = pytest.mark.e2e

T1, T2 = TOWNSHIPS[COUNTIES[0]]
T3, T4 = TOWNSHIPS[COUNTIES[1]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    with node_env(CUNSYNC_SUPPRESS_BELOW="0", CUNSYNC_PULL_MINUTES="0"):
        t = build_tree(tmp_path_factory.mktemp("tiers"))
    try:
        yield t
    finally:
        stop_tree(t)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from client.cli import cli; cli()", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def snapshot_as_staff(url: str, username: str) -> dict[str, Any]:
    with staff_client(url, username) as c:
        r = c.get("/api/snapshot", headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def cells(snap: dict[str, Any], section: str) -> dict[tuple[str, ...], list[int]]:
    "A section's cells over every month: key -> values added up"
    out: dict[tuple[str, ...], list[int]] = {}
    for part in snap["parts"]:
        if part["name"].split("/")[0] == section:
            month = part["name"].partition("/")[2]
            for k, v in part["cells"]:
                key = (*k, month) if section == "services" else tuple(k)
                have = out.get(key)
                out[key] = list(v) if have is None else [a + b for a, b in zip(have, v)]
    return out


def test_the_city_totals_equal_the_tablets_own(tree: Tree) -> None:
    first: dict[str, Any] = {}
    for c in COUNTIES:
        results = tree.pull(c)
        assert all(r.ok and r.changed == r.parts > 0 for r in results.values()), results
        first.update(results)
    first.update(tree.pull(CITY))
    setattr(tree, "first_pull", first)
    snap = snapshot_as_staff(tree.nodes[CITY].url, "shi")
    want = tree.totals()
    assert sum(want["needs"].values()) > 20 and len(want["services"]) > 10  # the tree has real work in it
    assert {k: v[0] for k, v in cells(snap, "needs").items()} == dict(want["needs"])
    assert cells(snap, "services") == {k: [n, want["minutes"][k], want["people"][k]]
                                       for k, n in want["services"].items()}
    assert {k: v[0] for k, v in cells(snap, "residents").items()} == dict(want["residents"])
    # resolved: one per need resolved or closed on the tablets; devices: every tablet, all synced today
    resolved = sum(n for (_, _, st), n in want["needs"].items() if st in ("已解决", "已关闭"))
    assert sum(v[0] for v in cells(snap, "resolved").values()) == resolved
    tablets = Counter({v: len(tabs) for v, tabs in tree.tablets.items()})
    assert {k[0]: v for k, v in cells(snap, "devices").items()} == {v: [n, n, n] for v, n in tablets.items()}
    # the city's watermark is its counties' and theirs their townships'
    assert snap["watermark"] == sum(tree.nodes[t].health()["seq"] for t in ALL_TOWNSHIPS)
    assert {s["unit"] for s in snap["sources"]} == {*COUNTIES, *ALL_TOWNSHIPS}
    # a county holds its own townships' villages only
    county = snapshot_as_staff(tree.nodes[COUNTIES[0]].url, "xian")
    assert {k[0][:9] + "000" for p in county["parts"] for k, _ in p["cells"]} == {T1, T2}


def test_no_personal_field_reaches_a_county_or_the_city(tree: Tree) -> None:
    tree.pull_up()
    assert len(tree.personal) > 100
    township_bytes = b"".join(p.read_bytes() for p in tree.root.glob(f"{T1}.db*"))
    assert any(v.encode() in township_bytes for v in tree.personal)  # the scan can see them where they are
    for unit in (CITY, *COUNTIES):
        files = sorted(tree.root.glob(f"{unit}.db*"))
        assert files
        data = b"".join(p.read_bytes() for p in files)
        found = [v for v in tree.personal if v.encode() in data]
        assert found == [], f"personal values in {unit}'s database: {found[:5]}"


def test_pulls_move_only_what_changed(tree: Tree) -> None:
    tree.pull_up()
    again = tree.pull(COUNTIES[0])
    assert all(r.ok and r.changed == 0 for r in again.values()), again
    first = getattr(tree, "first_pull")
    tab = tree.tablet(villages(T1)[1])
    need = next(r for r in tab.list("need") if (r.data.get("status") or "待处理") == "待处理")
    tab.update(need.id, {"status": "已取消"})
    tab.sync()
    county = tree.pull(COUNTIES[0])
    assert county[T2].changed == 0
    assert 1 <= county[T1].changed <= 2 < county[T1].parts  # that need's month (and devices, if they moved)
    assert county[T1].bytes < first[T1].bytes
    city = tree.pull(CITY)
    assert city[COUNTIES[1]].changed == 0
    assert 1 <= city[COUNTIES[0]].changed <= 2 < city[COUNTIES[0]].parts
    assert city[COUNTIES[0]].bytes < first[COUNTIES[0]].bytes
    # and the change arrived
    snap = snapshot_as_staff(tree.nodes[CITY].url, "shi")
    assert cells(snap, "needs") == {k: [v] for k, v in tree.totals()["needs"].items()}


def test_a_closed_months_revision_shows_its_diff(tree: Tree) -> None:
    r = cli("snapshot", "close", "--db", str(tree.db(T1)), "--month", "2026-10", "--by", "刘主任")
    assert r.returncode == 0, r.stderr
    tree.pull_up()
    part = _part(tree, "services/2026-10")
    (closure,) = [c for c in part["closures"] if c["unit"] == T1]
    assert closure["revision"] == 0 and closure["diff"] == [] and closure["closed_by"] == "刘主任"
    # data entry goes on: a service for October, entered after the close
    tab = tree.tablet(villages(T1)[0])
    person = tab.list("person")[0].id
    before = cells({"parts": [part]}, "services").get((villages(T1)[0], "心理支持", "2026-10"))
    tab.create("service", {"unit": tab.unit, "person": person, "service_type": "心理支持",
                           "served_at": "2026-10-15T09:00", "minutes": 40, "people_served": 2})
    tab.sync()
    tree.pull_up()
    part = _part(tree, "services/2026-10")
    (closure,) = [c for c in part["closures"] if c["unit"] == T1]
    assert closure["revision"] == 1
    after = [before[0] + 1, before[1] + 40, before[2] + 2] if before else [1, 40, 2]
    assert closure["diff"] == [[[villages(T1)[0], "心理支持"], before, after]]
    with staff_client(tree.nodes[CITY].url, "shi") as c:
        page = c.get("/rollup").text
    assert "已关账月份" in page and "第 1 次修订" in page


def _part(tree: Tree, name: str) -> dict[str, Any]:
    snap = snapshot_as_staff(tree.nodes[CITY].url, "shi")
    return next(p for p in snap["parts"] if p["name"] == name)


def test_exports_for_excel(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "county.xlsx"
    r = cli("snapshot", "pull", "--db", str(tree.db(COUNTIES[0])), "--format", "xlsx", "--out", str(out))
    assert r.returncode == 0, r.stderr
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames[:3] == ["需求", "服务", "办结"]
    rows = list(wb["需求"].iter_rows(values_only=True))
    want = tree.totals(COUNTIES[0][:6])
    assert sum(int(row[-1]) for row in rows[1:]) == sum(want["needs"].values())
    csv_out = tmp_path / "county.csv"
    assert cli("snapshot", "pull", "--db", str(tree.db(COUNTIES[0])), "--offline", "--format", "csv",
               "--out", str(csv_out)).returncode == 0
    text = csv_out.read_text(encoding="utf-8-sig")
    assert "# 需求" in text and "# 数据来源" in text
    with staff_client(tree.nodes[COUNTIES[0]].url, "xian") as c:
        x = c.get("/rollup.xlsx")
        assert x.status_code == 200 and x.content[:2] == b"PK"
        assert c.get("/rollup.csv").text.lstrip("\ufeff").startswith("# 需求")


def test_bad_credentials_and_scopes_get_clear_codes(tree: Tree) -> None:
    url = tree.nodes[T1].url
    village_token = tree.tablet_tokens[villages(T1)[0]][0]

    def get(token: str | None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(url + "/api/snapshot", headers=headers, params=params, timeout=10)

    def code(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["code"]

    assert code(get(None)) == (401, "unauthorized")
    assert code(get("not-a-token")) == (401, "unauthorized")
    assert code(get(village_token)) == (403, "not_an_upper_node")
    assert code(get(tree.link_tokens[T1], have="needs/2026-10")) == (400, "invalid_have")
    ok = get(tree.link_tokens[T1])
    assert ok.status_code == 200 and decode(ok.content, Snapshot).unit == T1
    # a county's link token is the city's on the county: the township does not know it
    assert code(httpx.get(url + "/api/snapshot", headers={"Authorization": f"Bearer {tree.link_tokens[COUNTIES[0]]}"},
                          timeout=10)) == (401, "unauthorized")
    # link devices name the node above, never another county; links name a child, never one elsewhere
    n = Node(tree.db(T1), T1)
    try:
        with pytest.raises(OutOfScope):
            n.add_device(COUNTIES[1], "other-county", tier="county")
        dev, token = n.add_device(COUNTIES[0], "old-link", tier="county")
        n.revoke(dev)
    finally:
        n.close()
    assert code(get(token)) == (403, "device_revoked")
    r = cli("link", "add", "--db", str(tree.db(COUNTIES[0])), "--unit", T3, "--url", tree.nodes[T3].url,
            "--token", tree.link_tokens[T3])
    assert r.returncode != 0 and "not directly under" in r.stderr
    r = cli("device", "add", "--db", str(tree.db(T1)), "--unit", COUNTIES[1], "--user", "x", "--tier", "county")
    assert r.returncode != 0 and "is not it" in r.stderr
    # a link whose URL leads to another township: refused, nothing stored
    c = Node(tree.db(COUNTIES[0]), COUNTIES[0])
    try:
        links.add_link(c.store, COUNTIES[0], T2, tree.nodes[T1].url, tree.link_tokens[T1])
        before = links.held(c.store, T2)
        link = links.get_link(c.store, T2)
        assert link is not None
        result = links.pull(c.store, link)
        assert not result.ok and f"is {T1}, not {T2}" in result.error
        assert links.held(c.store, T2) == before
        links.add_link(c.store, COUNTIES[0], T2, tree.nodes[T2].url, tree.link_tokens[T2])
    finally:
        c.close()
    # the snapshot as MessagePack, gzip, as the pull gets it
    r = httpx.get(url + "/api/snapshot", headers={"Authorization": f"Bearer {tree.link_tokens[T1]}",
                                                  "Accept": MSGPACK, "Accept-Encoding": "gzip"}, timeout=10)
    assert r.headers["content-encoding"] == "gzip" and r.headers["content-type"] == MSGPACK


def test_the_schedule_pulls_on_its_own(tree: Tree, tmp_path: Path) -> None:
    county = COUNTIES[1]
    db = tmp_path / "county-scheduled.db"
    n = Node(db, county)
    try:
        for t in TOWNSHIPS[county]:
            links.add_link(n.store, county, t, tree.nodes[t].url, tree.link_tokens[t])
    finally:
        n.close()
    with node_env(CUNSYNC_PULL_MINUTES="0.005"):  # every 0.3 s
        proc = NodeProcess(db, county).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            n = Node(db, county)
            try:
                found = links.links(n.store)
            finally:
                n.close()
            if all(ln.last_pulled and ln.watermark for ln in found):
                break
            assert time.monotonic() < deadline, f"no scheduled pull within 30 s: {found}"
            time.sleep(0.2)
        assert {ln.unit for ln in found} == set(TOWNSHIPS[county])
        assert all(ln.last_error == "" for ln in found)
    finally:
        proc.stop()


def test_an_unreachable_township_shows_its_last_snapshot_and_age(tree: Tree) -> None:
    county = COUNTIES[1]
    want = tree.totals(T4[:9])
    tree.pull_up()
    tree.nodes[T4].kill()
    results = tree.pull(county)
    assert results[T3].ok and not results[T4].ok and "ConnectError" in results[T4].error
    with staff_client(tree.nodes[county].url, "xian") as c:
        assert c.get("/staff", follow_redirects=False).headers["location"] == "/rollup"
        page = c.get("/rollup").text
        snap = c.get("/api/snapshot", headers={"Accept": "application/json"}).json()
    # its figures are still there, with its age and the error
    assert {k: v[0] for k, v in cells(snap, "needs").items() if k[0][:9] == T4[:9]} == dict(want["needs"])
    (src,) = [s for s in snap["sources"] if s["unit"] == T4]
    assert "ConnectError" in src["last_error"] and src["taken_at"] > 0
    assert "无法获取最新数据" in page and "刚刚" in page
    listed = cli("link", "list", "--db", str(tree.db(county)))
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(T4))
    assert "error: ConnectError" in line and "just now" in line
    # the city hears it from the county
    assert all(r.ok for r in tree.pull(CITY).values())
    city = snapshot_as_staff(tree.nodes[CITY].url, "shi")
    (src,) = [s for s in city["sources"] if s["unit"] == T4]
    assert "ConnectError" in src["last_error"]
