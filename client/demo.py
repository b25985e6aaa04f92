"""The demo: all four tiers on loopback. A city node (遂宁市), its three counties and a township in each,
village tablets under them. In 育才路街道 the tablets work offline, township staff make a concurrent edit
and the merge settles it; the other townships' tablets work too. Then the counties pull aggregated
snapshots from their townships and the city from its counties, a tablet's edit moves only what changed;
the city's notice, task and catalogue entry go down to a tablet, a need is escalated up to the county and
its answer comes back down, and two villages' progress on the task goes up to the city as counts. The
demo prints the city's roll-up beside the totals counted straight from the tablets. Ends by itself and
says where the databases are."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from typing import Any

import httpx

from server import escalations, links, relay, schedule
from server.auth import Staff
from server.links import PullResult
from server.node import Node
from server.rollup_web import node_rollup
from server.snapshots import Snapshotter
from sync import reference
from sync import units as unitlib
from sync.schema import RECORD_COLLECTIONS

from . import sample
from .tablet import NodeUnreachable, Tablet

TOWNSHIP = "510903001000"
#: The demo tablets' PIN: their databases are encrypted with a key derived from it.
PIN = "246810"  # 育才路街道, 船山区, 遂宁市 (illustrative code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    "A real node: `cunsync serve` in a subprocess"

    def __init__(self, db: Path, unit: str, port: int, env: dict[str, str] | None = None) -> None:
        self.db, self.unit, self.port = db.resolve(), unit, port  # it runs in another folder (``start``)
        self.env = {**os.environ, **(env or {})}
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "client", "serve", "--db", str(self.db), "--unit", self.unit,
                 "--bind", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent, env=self.env,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited; see {self.log}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the node did not answer within 20 s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def say(text: str = "") -> None:
    print(text, flush=True)


CITY = "510900000000"
#: The other townships of the pilot tree, each in its own county, and how many tablets each has.
OTHER_TOWNSHIPS = ("510904001000", "510921101000")
#: The demo's townships publish exact counts, so the city's roll-up can be checked against the tablets;
#: a real node suppresses cells under 3 (CUNSYNC_SUPPRESS_BELOW).
NODE_ENV = {"CUNSYNC_SUPPRESS_BELOW": "0", "CUNSYNC_PULL_MINUTES": "0"}


def _work(rng: random.Random, tab: Tablet, people: tuple[int, int]) -> dict[int, str]:
    "A worker registers residents, some with needs, services and status moves; returns the first resident"
    first: dict[int, str] = {}
    for _ in range(rng.randint(*people)):
        pid = tab.create("person", sample.person(rng, tab.unit))
        first.setdefault(0, pid)
        if rng.random() < 0.6:
            nd = sample.need(rng, tab.unit, pid)
            nid = tab.create("need", nd)
            if rng.random() < 0.7:
                tab.create("service", sample.service(rng, tab.unit, pid, nid, nd["category"]))
                tab.update(nid, {"status": "服务中"})
                if rng.random() < 0.4:
                    tab.update(nid, {"status": "已解决"})
    return first


def _open_need(tab: Tablet, status: str) -> str:
    """A need of the tablet's in ``status`` (待处理 or 服务中): one there already, else a pending one moved
    on, else a new one for its first resident (the sample data is random: it may hold none)"""
    needs = tab.list("need")
    for r in needs:
        if r.data.get("status") == status:
            return r.id
    pending = [r.id for r in needs if r.data.get("status") == "待处理"]
    nid = pending[0] if pending else tab.create("need", sample.need(random.Random(1), tab.unit,
                                                                     tab.list("person")[0].id))
    if status != "待处理":
        tab.update(nid, {"status": status})
    return nid


def _pull(db: Path, unit: str) -> list[PullResult]:
    node = Node(db, unit)
    try:
        return schedule.pull_all(node)
    finally:
        node.close()


def run(directory: str = "demo-data", *, tablets: int = 6, seed: int = 7) -> None:
    t0 = time.monotonic()
    rng = random.Random(seed)
    root = Path(directory)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    names = {u.code: u.name for u in unitlib.SAMPLE_TREE}
    villages = [u.code for u in unitlib.SAMPLE_TREE if u.parent == TOWNSHIP]
    townships = (TOWNSHIP, *OTHER_TOWNSHIPS)
    counties = tuple(str(unitlib.parent_of(t)) for t in townships)

    say(f"cunsync demo — four tiers on loopback: city {names[CITY]}, counties "
        f"{'、'.join(names[c] for c in counties)}, a township in each, village tablets under them\n")
    # the databases: devices and link devices before the nodes start
    dbs = {TOWNSHIP: root / "township.db", CITY: root / "city.db",
           **{t: root / f"township-{t}.db" for t in OTHER_TOWNSHIPS},
           **{c: root / f"county-{c}.db" for c in counties}}
    procs = {u: NodeProcess(db, u, _free_port(), NODE_ENV) for u, db in dbs.items()}
    link_tokens: dict[str, str] = {}
    enrolled: list[tuple[str, str, str]] = []
    others: list[tuple[str, str]] = []  # (village, token) of the other townships' tablets
    staff_token = ""
    for unit, db in dbs.items():
        node = Node(db, unit)
        unitlib.load_units(node.store.db, unitlib.SAMPLE_TREE)
        parent = unitlib.parent_of(unit)
        if parent is not None:  # a link device: the node above pulls this one's snapshot with its token
            _, link_tokens[unit] = node.add_device(parent, f"{names[parent]}-link", tier=unitlib.tier_of(parent))
        if unit == TOWNSHIP:
            for i in range(tablets):
                village = villages[i % len(villages)]
                enrolled.append((village, *node.add_device(village, f"社工{i + 1}", device=f"tab-{i + 1}")))
            _, staff_token = node.add_device(TOWNSHIP, "镇街中心-刘主任", device="staff-1", tier="township")
        elif unit in OTHER_TOWNSHIPS:
            for v in (u.code for u in unitlib.SAMPLE_TREE if u.parent == unit):
                others.append((v, node.add_device(v, f"{names[v]}社工")[1]))
        node.close()
    for unit, db in dbs.items():  # each county links to its township, the city to its counties
        if unitlib.tier_of(unit) in ("county", "city"):
            node = Node(db, unit)
            for child in dbs:
                if unitlib.parent_of(child) == unit:
                    links.add_link(node.store, unit, child, procs[child].url, link_tokens[child])
            node.close()
    for unit in (CITY, *counties, *OTHER_TOWNSHIPS):
        procs[unit].start()
    say(f"0. {names[CITY]} node at {procs[CITY].url}, " + ", ".join(
        f"{names[c]} at {procs[c].url}" for c in counties) + "; each linked to the nodes below it with a "
        "link token the lower node issued")

    proc = procs[TOWNSHIP]
    proc.start()
    say(f"\n{names[TOWNSHIP]} ({TOWNSHIP}): {tablets} tablets in {len(villages)} communities")
    say(f"1. township node up at {proc.url}; enrolling tablets")
    tabs: list[Tablet] = []
    for i, (village, _dev, token) in enumerate(enrolled):
        tabs.append(Tablet.init(root / f"tablet-{i + 1}.db", proc.url, token, sleep=lambda s: None, pin=PIN))
    staff = Tablet.init(root / "staff.db", proc.url, staff_token, sleep=lambda s: None)

    say("2. the node goes down; tablets keep working offline")
    proc.stop()
    first_person: dict[int, str] = {}
    for i, tab in enumerate(tabs):
        first_person[i] = _work(rng, tab, (5, 9))[0]
    try:
        tabs[0].sync(retries=1)
    except NodeUnreachable as e:
        say(f"   tablet-1 tried to sync: {e}")
    say("   " + ", ".join(f"tablet-{i + 1}: {t.pending()} ops waiting" for i, t in enumerate(tabs)))

    say("3. the node comes back; every tablet syncs")
    proc.start()
    up = down = 0
    for tab in tabs:
        r = tab.sync()
        up, down = up + r.bytes_up, down + r.bytes_down
    staff.sync()
    say(f"   staff workbench sees {len(staff.list('person'))} residents in the township")

    say("4. a concurrent edit: tablet-1 and township staff both correct one resident's phone")
    pid = first_person[0]
    before = tabs[0].get(pid)
    assert before is not None
    tabs[0].update(pid, {"phone": "13811112222"})
    staff.update(pid, {"phone": "13899990000"})
    for t in (tabs[0], staff, tabs[0]):
        r = t.sync()
        up, down = up + r.bytes_up, down + r.bytes_down
    conflicts = tabs[0].conflicts()
    for c in conflicts:
        say(f"   conflict on {c.field} of {before.data['name']}:")
        for cand in c.candidates:
            say(f"     {cand.value!r:16} by {cand.user} on {cand.device} ({cand.tier})")
        say(f"   shown meanwhile: {c.winner!r} — the township's correction wins the concurrent edit")
    say("5. the village worker, having seen it, confirms the number the resident gave her")
    tabs[0].resolve(pid, "phone", "13811112222")
    for t in (tabs[0], staff):
        r = t.sync()
        up, down = up + r.bytes_up, down + r.bytes_down
    after = staff.get(pid)
    assert after is not None
    say(f"   node and staff now show {after.data['phone']!r}, open conflicts: {len(staff.conflicts())}")

    say("\nRecords per community (on the township node):")
    node = Node(dbs[TOWNSHIP], TOWNSHIP)
    for v in villages:
        counts = {c: len(node.store.records(c, unit=v)) for c in RECORD_COLLECTIONS}
        say(f"   {names[v]:<8} {v}  residents {counts['person']:>3}  needs {counts['need']:>3}  "
            f"services {counts['service']:>3}")
    total_ops = node.store.count_ops()
    node.close()
    say(f"   {total_ops} ops on the node; {up + down} bytes on the wire ({up} up, {down} down), "
        f"gzip-compressed MessagePack")

    say(f"\n6. the tablets of {'、'.join(names[t] for t in OTHER_TOWNSHIPS)} work and sync")
    for i, (village, token) in enumerate(others):
        township = str(unitlib.parent_of(village))
        tab = Tablet.init(root / f"tablet-{village}.db", procs[township].url, token, sleep=lambda s: None, pin=PIN)
        _work(rng, tab, (6, 12))
        tab.sync()
        tabs.append(tab)

    say("7. the counties pull snapshots from their townships, then the city from its counties")
    for unit in (*counties, CITY):
        for r in _pull(dbs[unit], unit):
            say(f"   {names[unit]} ← {names[r.unit]}: {r.changed} parts, {r.bytes:,} bytes")
    say("8. a worker in 育才社区 closes a need; the next pulls move only what changed")
    tabs[0].update(_open_need(tabs[0], "服务中"), {"status": "已解决"})
    _open_need(tabs[0], "待处理")  # one left open, for step 9's escalation
    tabs[0].sync()
    for unit in (counties[0], CITY):
        for r in _pull(dbs[unit], unit):
            say(f"   {names[unit]} ← {names[r.unit]}: {r.changed} of {r.parts} parts changed, {r.bytes:,} bytes")

    say("9. reference data down, an escalation up (吹哨报到) and its answer back down")
    task = _reference_and_escalation(dbs, procs, link_tokens, names, tabs[0], counties[0])
    say("10. a task down, each village's progress on it up, as counts")
    _task_progress(dbs, names, [t for t in tabs if unitlib.is_under(t.unit, TOWNSHIP)], counties[0], task)

    for t in tabs:  # every tablet up to date, so that counting their records counts the latest
        t.sync()
    same = _print_rollup(dbs[CITY], tabs, names)
    for unit in (TOWNSHIP, *OTHER_TOWNSHIPS, *counties, CITY):
        procs[unit].stop()
    for t in (*tabs, staff):
        t.close()
    say(f"\nDone in {time.monotonic() - t0:.0f} s. Databases are in {root.resolve()}{os.sep}:")
    say(f"   sqlite-utils tables {root / 'township.db'} --counts")
    say(f"   CUNSYNC_PIN={PIN} cunsync status --db {root / 'tablet-1.db'}   (tablets are encrypted; "
        f"PIN {PIN})")
    say(f"   cunsync link list --db {root / 'city.db'}")
    say(f"   cunsync snapshot pull --db {root / 'city.db'} --offline --format xlsx --out city.xlsx")
    if not same:
        raise SystemExit("the city's roll-up differs from the tablets' own records: that is a bug; please report it")


def _link_sync(dbs: dict[str, Path], procs: dict[str, NodeProcess], tokens: dict[str, str], upper: str,
               lower: str) -> relay.LinkSyncResult:
    "The upper node syncs with the lower one over their link, as its schedule does"
    node = Node(dbs[upper], upper)
    try:
        return relay.sync_link(node, procs[lower].url, tokens[lower])
    finally:
        node.close()


def _reference_and_escalation(dbs: dict[str, Path], procs: dict[str, NodeProcess], tokens: dict[str, str],
                              names: dict[str, str], tab: Tablet, county: str) -> str:
    """A city notice, task and catalogue entry reach a tablet; the township escalates a need; the county
    answers. Returns the task's id"""
    city = Node(dbs[CITY], CITY)
    try:
        editor = city.editor("市民政局")
        reference.add_notice(editor, "汛期走访独居老人", "各村（社区）本周内走访一次独居老人。")
        task = reference.add_task(editor, "独居老人汛期走访", "每个村（社区）走访全部独居老人并登记需求。")
        reference.set_catalogue(editor, "need_category", "防汛救灾", name="防汛救灾", order=11)
    finally:
        city.close()
    pushed = _link_sync(dbs, procs, tokens, CITY, county).pushed
    pushed += _link_sync(dbs, procs, tokens, county, TOWNSHIP).pushed
    tab.sync()
    say(f"   {names[CITY]} publishes a notice and a need category; relayed through {names[county]} "
        f"({pushed} ops), tablet-1 reads “{tab.notices()[0]['title']}” and offers "
        f"{'防汛救灾' if '防汛救灾' in tab.need_categories() else '(missing)'}")
    need = next(r for r in tab.list("need") if r.data.get("status") == "待处理")
    township = Node(dbs[TOWNSHIP], TOWNSHIP)
    try:
        liu = Staff("镇街中心-刘主任", "township", TOWNSHIP)
        eid = escalations.escalate(township, liu, need.id, f"{need.data['category']}需求本镇街资源不足，需区里协调")
    finally:
        township.close()
    _link_sync(dbs, procs, tokens, county, TOWNSHIP)
    county_node = Node(dbs[county], county)
    try:
        chen = Staff("区民政局-陈科长", "county", county)
        escalations.act(county_node, chen, eid, "accept")
        escalations.act(county_node, chen, eid, "assign", "区民政局养老服务科")
        escalations.act(county_node, chen, eid, "resolve", "已协调社区食堂每日送餐上门")
        held = county_node.store.get(eid)
        assert held is not None
        say(f"   {names[TOWNSHIP]} escalates a need; {names[county]} sees only "
            + "、".join(f"{k}={held.data[k]}" for k in ("category", "urgency", "unit")) + " and the summary")
    finally:
        county_node.close()
    _link_sync(dbs, procs, tokens, county, TOWNSHIP)
    tab.sync()
    answer = tab.escalation(need.id) or {}
    say(f"   tablet-1 sees the answer: {answer.get('status')} · {answer.get('department')} · {answer.get('answer')}")
    return task


def _task_progress(dbs: dict[str, Path], names: dict[str, str], tabs: list[Tablet], county: str, task: str) -> None:
    """Two of the township's communities report their progress on the city's task from a tablet; the county
    and the city pull, and the city sees how many villages are at each stage: counts, no names or notes"""
    first = tabs[0]
    other = next(t for t in tabs if t.unit != first.unit)
    other.sync()  # the task reached the township with step 9's relay
    first.report_task(task, "已完成", "走访独居老人 5 户，登记需求 1 条")
    other.report_task(task, "进行中")
    for t in (first, other):
        t.sync()
    for unit in (county, CITY):
        _pull(dbs[unit], unit)
    node = Node(dbs[CITY], CITY)
    try:
        ro = node_rollup(node, Snapshotter(node.store, node.unit))
    finally:
        node.close()
    waiting, doing, done = ro.task_progress(task, county)
    say(f"   {names[first.unit]} marks it 已完成 and {names[other.unit]} 进行中 on "
        f"their tablets; {names[CITY]} sees, for {names[county]}: 已完成 {done}, 进行中 {doing}, "
        f"未开始 {waiting} (villages)")


def _print_rollup(city_db: Path, tabs: list[Tablet], names: dict[str, str]) -> bool:
    """The city's roll-up, by county, beside the same figures counted from every tablet's own records;
    whether they are equal"""
    node = Node(city_db, CITY)
    try:
        ro = node_rollup(node, Snapshotter(node.store, node.unit))
    finally:
        node.close()
    seen: dict[str, Any] = {}
    for tab in tabs:
        for coll in RECORD_COLLECTIONS:
            for rec in tab.list(coll):
                seen[rec.id] = rec
    counted: dict[str, list[int]] = {}
    for rec in seen.values():
        row = counted.setdefault(rec.unit[:6] + "000000", [0, 0, 0, 0, 0])
        if rec.coll == "person":
            row[0] += 1
            row[1] += "老年人" in (rec.data.get("groups") or [])
        elif rec.coll == "need":
            row[2] += 1
            row[3] += rec.data.get("status") in ("已解决", "已关闭")
        else:
            row[4] += 1
    say(f"\n{names[CITY]} roll-up (from the city node)  |  counted from {len(tabs)} tablets' own records")
    say(f"   {'':<6} {'residents':>9} {'elderly':>7} {'needs':>5} {'resolved':>8} {'services':>8}  |"
        f" {'residents':>9} {'elderly':>7} {'needs':>5} {'resolved':>8} {'services':>8}")
    same = True
    for c in ro.children:
        city_row = [ro.resident_total("合计", c), ro.resident_total("老年人", c), ro.need_total(c),
                    sum(ro.need_total(c, status=s) for s in ("已解决", "已关闭")), ro.service_total(c)[0]]
        mine = counted.get(c, [0] * 5)
        same = same and city_row == mine
        say(f"   {names.get(c, c):<6} " + " ".join(f"{x:>{w}}" for x, w in zip(city_row, (9, 7, 5, 8, 8)))
            + "  | " + " ".join(f"{x:>{w}}" for x, w in zip(mine, (9, 7, 5, 8, 8))))
    rate = ro.resolution_rate()
    say(f"   resolution rate {rate:.0%}, median days to resolve {ro.median_days()}; "
        + ("the city's figures equal the tablets' ✓" if same else "MISMATCH between the city and the tablets ✗"))
    say("   (the demo's townships publish exact counts; a real township withholds cells under 3)")
    return same
