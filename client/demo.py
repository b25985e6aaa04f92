"""The demo: a township node on loopback, village tablets that work offline, a concurrent edit by
township staff, and what the merge made of it. Ends by itself and says where the databases are."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.node import Node
from sync import units as unitlib

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

    def __init__(self, db: Path, unit: str, port: int) -> None:
        self.db, self.unit, self.port = db, unit, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "client", "serve", "--db", str(self.db), "--unit", self.unit,
                 "--bind", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent,
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


def run(directory: str = "demo-data", *, tablets: int = 6, seed: int = 7) -> None:
    rng = random.Random(seed)
    root = Path(directory)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    names = {u.code: u.name for u in unitlib.SAMPLE_TREE}
    villages = [u.code for u in unitlib.SAMPLE_TREE if u.parent == TOWNSHIP]

    say(f"cunsync demo — township node {names[TOWNSHIP]} ({TOWNSHIP}), {tablets} tablets in "
        f"{len(villages)} communities\n")
    node_db = root / "township.db"
    node = Node(node_db, TOWNSHIP)
    unitlib.load_units(node.store.db, unitlib.SAMPLE_TREE)
    enrolled = []
    for i in range(tablets):
        village = villages[i % len(villages)]
        enrolled.append((village, *node.add_device(village, f"社工{i + 1}", device=f"tab-{i + 1}")))
    _, staff_token = node.add_device(TOWNSHIP, "镇街中心-刘主任", device="staff-1", tier="township")
    node.close()

    proc = NodeProcess(node_db, TOWNSHIP, _free_port())
    proc.start()
    say(f"1. node up at {proc.url}; enrolling tablets")
    tabs: list[Tablet] = []
    for i, (village, _dev, token) in enumerate(enrolled):
        tabs.append(Tablet.init(root / f"tablet-{i + 1}.db", proc.url, token, sleep=lambda s: None, pin=PIN))
    staff = Tablet.init(root / "staff.db", proc.url, staff_token, sleep=lambda s: None)

    say("2. the node goes down; tablets keep working offline")
    proc.stop()
    first_person: dict[int, str] = {}
    for i, tab in enumerate(tabs):
        for _ in range(rng.randint(5, 9)):
            pid = tab.create("person", sample.person(rng, tab.unit))
            first_person.setdefault(i, pid)
            if rng.random() < 0.6:
                nd = sample.need(rng, tab.unit, pid)
                nid = tab.create("need", nd)
                if rng.random() < 0.7:
                    tab.create("service", sample.service(rng, tab.unit, pid, nid, nd["category"]))
                    tab.update(nid, {"status": "服务中"})
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

    say("\nRecords per community (on the node):")
    node = Node(node_db, TOWNSHIP)
    for v in villages:
        counts = {c: len(node.store.records(c, unit=v)) for c in ("person", "need", "service")}
        say(f"   {names[v]:<8} {v}  residents {counts['person']:>3}  needs {counts['need']:>3}  "
            f"services {counts['service']:>3}")
    total_ops = node.store.count_ops()
    node.close()
    proc.stop()
    say(f"\n{total_ops} ops on the node; {up + down} bytes on the wire ({up} up, {down} down), "
        f"gzip-compressed MessagePack")
    say(f"\nDatabases are in {root.resolve()}{os.sep}:")
    say(f"   sqlite-utils tables {root / 'township.db'} --counts")
    say(f"   CUNSYNC_PIN={PIN} cunsync status --db {root / 'tablet-1.db'}   (tablets are encrypted; "
        f"PIN {PIN})")
    for t in (*tabs, staff):
        t.close()
