"""The fault scenarios, shared by the pytest tests (``test_faults.py``) and the runner
(``python -m tests.faults``). Each one takes a fresh work directory and a seed, runs a real node
(``cunsync serve`` in a subprocess on 127.0.0.1) and real tablets against it, injects its faults, and
returns an ``Outcome``; it raises ``AssertionError`` if anything is wrong.

After the faults, before any clean-up sync, every op a tablet holds as acknowledged must be on the node
exactly once and unchanged (``audit``: an op missing or different counts as lost). Then every tablet syncs
twice without faults (``settle``), and every replica must hold what the node holds for its village, every
op exactly once, and pass ``PRAGMA integrity_check``.

    node_kill_9     kill -9 the node at random points of 100 sync rounds of three tablets; restart it
    flaky_link      a proxy cuts requests and answers, delays, stalls past the timeout, duplicates, replays
    tablet_kill_9   kill -9 a tablet process in the middle of a local write and in the middle of a sync
    full_disk       the node's database hits its size cap: 507 storage_full, nothing written; room comes
                    back and sync resumes
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from client.tablet import NodeUnreachable, SyncFailed, Tablet
from e2e_harness import (
    TOWNSHIP, V1, V2, NodeProcess, device_ops, integrity, no_sleep, node_digest, op_count, populate,
)
from server.node import Node

from .proxy import FaultProxy

TABLET_PROC = Path(__file__).with_name("tablet_proc.py")


@dataclass
class Outcome:
    "What one scenario did: faults injected, ops the tablets held as acknowledged, and how many were lost"

    scenario: str
    faults: int
    acknowledged: int
    lost: int
    detail: str = ""


# -- the world: a node, its tablets, and the checks --------------------------------------------------


class World:
    "A node database in a work directory, its node process, and the tablets made against it"

    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.dir = Path(workdir)
        self.db = self.dir / "township.db"
        Node(self.db, TOWNSHIP).close()
        self.node = NodeProcess(self.db, env=env)
        self.tablets: list[Tablet] = []
        self.clients: list[httpx.Client] = []

    def enrol(self, unit: str, user: str) -> str:
        n = Node(self.db, TOWNSHIP)
        try:
            return n.add_device(unit, user)[1]
        finally:
            n.close()

    def tablet(self, unit: str, user: str, *, server: str | None = None, timeout: float | None = None,
               **kw: Any) -> Tablet:
        "A tablet for a new device, set up against the node (or ``server``: a proxy in front of it)"
        token = self.enrol(unit, user)
        if timeout is not None:
            kw["client"] = httpx.Client(timeout=httpx.Timeout(timeout, connect=timeout))
            self.clients.append(kw["client"])
        kw.setdefault("sleep", no_sleep)
        tab = Tablet.init(self.dir / f"{user}.db", server or self.node.url, token, **kw)
        self.tablets.append(tab)
        return tab

    def close(self) -> None:
        for tab in self.tablets:
            tab.close()
        for c in self.clients:
            c.close()
        self.node.kill()


@contextmanager
def world(workdir: Path, **kw: Any) -> Iterator[World]:
    w = World(workdir, **kw)
    try:
        yield w
    finally:
        w.close()


def _own_ops(db: Path, device: str, upto: int) -> set[tuple[Any, ...]]:
    "A device's ops up to a counter, as comparable rows (counter, clock, record, field, kind, value, pred)"
    conn = sqlite3.connect(db, timeout=30)
    try:
        return set(conn.execute(
            "SELECT o.counter, o.hlc, o.record, o.field, o.kind, o.value, o.pred FROM ops o"
            " JOIN sites s ON s.id = o.site WHERE s.device = ? AND o.counter <= ?", (device, upto)))
    finally:
        conn.close()


def _acked(db: Path) -> tuple[str, int]:
    "A tablet database's device and the highest counter the node has acknowledged to it"
    conn = sqlite3.connect(db, timeout=30)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('device', 'acked')").fetchall())
    finally:
        conn.close()
    return meta["device"], int(meta.get("acked") or 0)


def audit(node_db: Path, tablet_dbs: list[Path]) -> tuple[int, int]:
    """(acknowledged, lost): every op each tablet holds as acknowledged, and how many of them the node
    lacks or holds with other content. The node holds each (device, counter) at most once (a unique
    key), so "on the node" is "on the node exactly once"."""
    acknowledged = lost = 0
    for db in tablet_dbs:
        device, acked = _acked(db)
        own = _own_ops(db, device, acked)
        assert len(own) == acked, f"{device} no longer holds its own acknowledged ops 1..{acked}"
        acknowledged += acked
        lost += len(own - _own_ops(node_db, device, acked))
    return acknowledged, lost


def settle(node_db: Path, tablets: list[Tablet]) -> None:
    """Sync every tablet twice with no faults, then check: nothing pending, every op of every device on
    the node exactly once, every replica equal to the node's view of its village, every database intact"""
    for _ in range(2):
        for tab in tablets:
            tab.sync(retries=10, backoff=0.05)
    for tab in tablets:
        assert tab.pending() == 0, f"{tab.device} still has {tab.pending()} ops pending"
        n = device_ops(Path(tab.path), tab.device)[0]
        want = (n, n, 1, n) if n else (0, 0, 0, 0)
        assert device_ops(node_db, tab.device) == want, f"{tab.device}: not every op on the node exactly once"
        assert tab.store.digest() == node_digest(node_db, tab.unit), f"{tab.device} did not converge"
        assert integrity(Path(tab.path)) == "ok", tab.path
    assert integrity(node_db) == "ok"


def work(tab: Tablet, rng: random.Random, tag: str) -> None:
    "What a worker does between syncs: register a resident, or correct the phone of one the tablet holds"
    people = tab.list("person")
    if people and rng.random() < 0.4:
        tab.update(rng.choice(people).id, {"phone": f"1380000{rng.randrange(10_000):04d}"})
    else:
        populate(tab, 1, tag=tag)


def _rounds(tablets: list[Tablet], rounds: int, seed: int, *, between: Callable[[int], Any] | None = None,
            **sync_kw: Any) -> Counter[str]:
    """``rounds`` rounds in which every tablet works and syncs, at the same time (one thread each);
    ``between(r)`` runs alongside round r (a kill, say). Returns how syncs ended."""
    rngs = [random.Random(seed * 1000 + i) for i in range(len(tablets))]
    ends: Counter[str] = Counter()
    lock = threading.Lock()

    def step(i: int, r: int) -> None:
        tab = tablets[i]
        work(tab, rngs[i], f"{tab.device[-4:]}-{r}-")
        try:
            report = tab.sync(**sync_kw)
            end = "retried" if report.retries else "clean"
        except NodeUnreachable:
            end = "unreachable"  # kept on the tablet: the next round (or settle) sends it
        with lock:
            ends[end] += 1

    with ThreadPoolExecutor(len(tablets) + 1) as pool:
        for r in range(rounds):
            futures = [pool.submit(step, i, r) for i in range(len(tablets))]
            if between is not None:
                futures.append(pool.submit(between, r))
            for f in futures:
                f.result()
    return ends


# -- the scenarios ------------------------------------------------------------------------------------


def node_kill_9(workdir: Path, seed: int, *, rounds: int = 100, kills: int = 6) -> Outcome:
    "kill -9 the node at random (seeded) points during ``rounds`` sync rounds of three tablets; restart it"
    rng = random.Random(seed)
    plan = {r: rng.uniform(0.0, 0.04) for r in rng.sample(range(1, rounds - 1), kills)}
    done: list[int] = []
    with world(workdir) as w:
        w.node.start()
        tabs = [w.tablet(V1, "wang", sleep=time.sleep), w.tablet(V1, "li", sleep=time.sleep),
                w.tablet(V2, "zhang", sleep=time.sleep)]

        def kill(r: int) -> None:
            if r in plan:
                time.sleep(plan[r])  # into the round: between requests, or in the middle of one
                w.node.kill()
                done.append(r)
                time.sleep(0.1)
                w.node.start()

        ends = _rounds(tabs, rounds, seed, between=kill, retries=12, backoff=0.05, limit=40)
        acknowledged, lost = audit(w.db, [Path(t.path) for t in tabs])
        settle(w.db, tabs)
    assert len(done) == kills
    return Outcome("node kill -9", kills, acknowledged, lost,
                   f"{rounds} rounds x {len(tabs)} tablets; syncs: " + ", ".join(f"{k} {v}" for k, v in sorted(ends.items())))


#: Per-request fault rates on the flaky link, and caps that keep the run short.
LINK_RATES = {"cut_request": 0.08, "cut_response": 0.08, "delay": 0.08, "stall": 0.03, "duplicate": 0.08,
              "replay": 0.08}
LINK_LIMITS = {"stall": 3}


def flaky_link(workdir: Path, seed: int, *, rounds: int = 40) -> Outcome:
    "Three tablets sync through a proxy that cuts, delays, stalls, duplicates and replays requests"
    with world(workdir) as w:
        w.node.start()
        with FaultProxy(w.node.port, seed=seed, rates=LINK_RATES, limits=LINK_LIMITS, stall_s=1.5) as proxy:
            proxy.enabled = False
            tabs = [w.tablet(unit, user, server=proxy.url, timeout=1.0, sleep=time.sleep)
                    for unit, user in ((V1, "wang"), (V1, "li"), (V2, "zhang"))]
            proxy.enabled = True
            ends = _rounds(tabs, rounds, seed, retries=10, backoff=0.02, limit=40)
            proxy.enabled = False
            acknowledged, lost = audit(w.db, [Path(t.path) for t in tabs])
            settle(w.db, tabs)
            injected = Counter(proxy.injected)
    assert injected["cut_request"] and injected["cut_response"] and injected["duplicate"], injected
    return Outcome("flaky link (proxy)", sum(injected.values()), acknowledged, lost,
                   ", ".join(f"{k} {v}" for k, v in sorted(injected.items()))
                   + "; syncs: " + ", ".join(f"{k} {v}" for k, v in sorted(ends.items())))


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(TABLET_PROC), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def _kill_at(proc: subprocess.Popen[str], line: str, delay: float | None = None) -> bool:
    """Follow the child's progress (it waits after each line until told to go on) to the line starting
    with ``line``, then SIGKILL it: at once, while it waits there, or ``delay`` seconds after letting it go
    on. False if it finished without printing that line."""
    with proc:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        for got in proc.stdout:
            at = got.startswith(line)
            if not at or delay is not None:
                proc.stdin.write("\n")
                proc.stdin.flush()
            if at:
                if delay is not None:
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return True
        proc.wait(10)
        assert proc.returncode == 0, proc.stderr.read()
        return False


def _people_tagged(db: Path, tag: str) -> int:
    with Tablet(db) as tab:
        return sum(1 for r in tab.list("person") if str(r.data.get("name", "")).startswith(tag))


def tablet_kill_9(workdir: Path, seed: int, *, times: int = 3, people: int = 60) -> Outcome:
    """kill -9 a tablet process in the middle of a local write (its open transaction spilled into the WAL)
    and in the middle of a sync; a second tablet of the village works on in this process"""
    rng = random.Random(seed)
    kills = Counter[str]()
    with world(workdir) as w:
        w.node.start()
        other = w.tablet(V1, "li")
        victim = w.tablet(V1, "wang")
        db = Path(victim.path)
        victim.close()  # the tablet runs in child processes from here on
        for i in range(times):
            tag = f"k{i}-"
            at = rng.randint(1, people // 2)
            # killed while its transaction is open, part of it spilled into the WAL
            if _kill_at(_child("write", str(db), str(people), tag), f"wrote {at}"):
                kills["mid-write"] += 1
                assert integrity(db) == "ok"
                assert _people_tagged(db, tag) == 0, "a write killed before its commit left part of itself"
            with Tablet(db) as tab:  # the worker enters the residents again; the tablet syncs some of it
                populate(tab, 25, tag=f"w{i}-")
            work(other, rng, f"li{i}-")
            other.sync()
            round_ = rng.randint(1, 3)
            # let it go on from round N, and kill it 0–30 ms later: in the middle of the next round trip
            if _kill_at(_child("sync", str(db), "100"), f"round {round_} acked", rng.uniform(0.0, 0.03)):
                kills["mid-sync"] += 1
                assert integrity(db) == "ok"
        acknowledged, lost = audit(w.db, [db, Path(other.path)])
        revived = Tablet(db)
        w.tablets.append(revived)
        settle(w.db, [revived, other])
        assert _people_tagged(db, "k") == 0  # the killed writes stayed away everywhere
    assert kills["mid-write"] == times, kills
    return Outcome("tablet kill -9", sum(kills.values()), acknowledged, lost,
                   ", ".join(f"{k} {v}" for k, v in sorted(kills.items())))


def _db_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)
    finally:
        conn.close()


def full_disk(workdir: Path, seed: int) -> Outcome:
    """The node's database reaches its size cap (CUNSYNC_MAX_DB_MB) while tablets push: a clear 507
    storage_full, nothing written, the node still serves; once the cap is raised sync resumes"""
    rng = random.Random(seed)
    refusals = 0
    with world(workdir) as w:
        w.node.start()
        tabs = [w.tablet(V1, "wang"), w.tablet(V1, "li"), w.tablet(V2, "zhang")]
        for tab in tabs:
            work(tab, rng, f"{tab.device[-4:]}-")
            tab.sync()
        w.node.stop()
        cap_mb = (_db_bytes(w.db) + 192 * 1024) / 2**20  # room for a few residents, not for hundreds
        w.node.env["CUNSYNC_MAX_DB_MB"] = f"{cap_mb:.4f}"
        w.node.start()

        big = tabs[0]
        populate(big, 200, tag="big-")
        pending, held = big.pending(), op_count(w.db)
        try:
            big.sync(retries=1)
        except SyncFailed as e:
            refusals += 1
            assert (e.status, e.code) == (507, "storage_full"), e
            assert "free disk space" in e.message, e.message
        else:
            raise AssertionError("a batch larger than the room left was accepted")
        assert big.pending() == pending, "the tablet must keep every op the node refused"
        assert op_count(w.db) == held, "a refused batch left ops on the node"
        assert integrity(w.db) == "ok"
        assert w.node.health()["status"] == "ok"
        for tab in tabs[1:]:  # small pushes may still fit, or be refused the same way
            work(tab, rng, f"{tab.device[-4:]}-full-")
            try:
                tab.sync(retries=1)
            except SyncFailed as e:
                assert e.code == "storage_full", e
                refusals += 1
        acknowledged, lost = audit(w.db, [Path(t.path) for t in tabs])

        w.node.stop()  # the operator makes room: here, a larger cap
        w.node.env["CUNSYNC_MAX_DB_MB"] = f"{cap_mb + 64:.4f}"
        w.node.start()
        settle(w.db, tabs)
        assert big.pending() == 0
    return Outcome("full disk", refusals, acknowledged, lost, f"cap {cap_mb:.2f} MB, then raised by 64 MB")


SCENARIOS: dict[str, Callable[[Path, int], Outcome]] = {
    "node_kill_9": node_kill_9,
    "flaky_link": flaky_link,
    "tablet_kill_9": tablet_kill_9,
    "full_disk": full_disk,
}
