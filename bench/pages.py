"""The pages at real volumes: the township workbench over a township's records, and the tablet app over
one village's share, each page timed through the real Starlette app.

    .venv/bin/python bench/pages.py                 # 20 villages x 1,500 residents, 2 needs and 20 services each
    .venv/bin/python bench/pages.py --scale 0.1     # 150 residents a village: a quick check
    .venv/bin/python bench/pages.py --profile /staff/needs   # also a cProfile of one page (to stderr)

Set-up (not timed, cached under ``/tmp/cunsync-bench-pages/``, one folder per size; ``--fresh`` rebuilds;
runs at the same time, from two worktrees say, each build into a folder of their own and rename it into
place once complete, and time a copy of their own): a township node
database built straight through the store (``Store.apply`` of ops in big batches, as ``bench/rollup.py``
does) with ``client.sample``'s residents, needs (2 a resident on average, a third of them closed, some
overdue) and services (20 a resident on average, over 2026); a device per village; some open conflicts
(a township correction of a phone concurrent with the village's edit); residents registered twice in two
villages with one ID number (suspected duplicates); a few escalations; notices and tasks; township staff.
Then a tablet (encrypted with a PIN, as deployed) holding the first village's share: its records' ops
copied from the node's database, and the notices and tasks.

Timed, each the median of ``--repeat`` GETs through Starlette's TestClient (in-process: the handler,
SQLite, the template; no socket), signed in as the township staff member (workbench) or unlocked with
the PIN (tablet). The SQL statements a request runs are counted with ``sqlite3``'s trace callback on the
store's connection. Printed: page, rows it shows, median ms, statements per request. The last line is
one JSON object of the figures.

A page is "slow" over 300 ms (workbench) or 100 ms (tablet: a cheap tablet's CPU is several times
slower than this machine's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as common  # also puts the project root on sys.path

# bench/concurrent.py would shadow the standard library's concurrent package that asyncio (starlette)
# imports: this folder leaves the path once _common is loaded
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from client import sample  # noqa: E402
from client.tablet import Tablet  # noqa: E402
from client.ui import TabletApp, create_app as tablet_app  # noqa: E402
from server.app import create_app  # noqa: E402
from server.auth import Staff  # noqa: E402
from server.cli import ensure_units  # noqa: E402
from server.escalations import escalate  # noqa: E402
from server.node import Node  # noqa: E402
from sync import reference  # noqa: E402
from sync.hlc import pack  # noqa: E402
from sync.ops import Op  # noqa: E402
from sync.schema import CATEGORIES, SCHEMA  # noqa: E402
from sync.store import Store  # noqa: E402
from sync.types import ADD, SET, TIER_RANK  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

TOWNSHIP = "510903001000"
CACHE = Path("/tmp/cunsync-bench-pages")
#: Bump when the built data or the cache's layout changes (2: complete folders only, renamed into place,
#: each run timing a copy of its own beside them, not in ``run/`` inside)
VERSION = 2
STAFF, PASSWORD = "liu", "correct horse 1"
PIN = "246810"
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"
NOW_MS = int(time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1)) * 1000)


def village_code(i: int) -> str:
    return f"{TOWNSHIP[:9]}{i + 1:03d}"


class Author:
    "One device's ops, numbered and stamped as ``Editor.create`` would, without a transaction per record"

    def __init__(self, device: str, user: str, unit: str, tier: str) -> None:
        self.device, self.user, self.unit, self.rank = device, user, unit, TIER_RANK[tier]
        self.counter = 0

    def record(self, coll: str, values: dict[str, Any], rid: str, ms: int,
               pred: tuple[tuple[str, int], ...] = ()) -> list[Op]:
        out = []
        for name, value in values.items():
            merge = SCHEMA.field(coll, name).merge
            for kind, v in ([(ADD, e) for e in value] if merge == "set" else [(SET, value)]):
                self.counter += 1
                out.append(Op(self.device, self.counter, pack(ms, self.counter & 0xFFFF), coll, rid, name, kind,
                              SCHEMA.validate(coll, name, kind, v), pred, self.user, self.unit, self.rank))
        return out


def build_node(path: Path, villages: int, residents: int, needs: float, services: float, seed: int) -> dict[str, Any]:
    "The township's database; returns the ids the timed pages need"
    rng = random.Random(seed)
    store = Store(path, durable=False)
    ops: list[Op] = []
    ids: dict[str, Any] = {}
    counts = {"person": 0, "need": 0, "service": 0}
    staff = Author("node-bench", STAFF, TOWNSHIP, "township")
    people_v0: list[tuple[str, dict[str, Any]]] = []

    def flush(force: bool = False) -> None:
        if len(ops) >= 50_000 or (force and ops):
            store.apply(ops)
            ops.clear()

    for vi in range(villages):
        unit = village_code(vi)
        me = Author(f"tab-{unit}", f"社工{unit[-2:]}", unit, "village")
        people: list[tuple[str, dict[str, Any]]] = []
        for i in range(residents):
            ms = NOW_MS - rng.randrange(400 * 86_400_000)
            values = sample.person(rng, unit)
            if vi == 1 and i < min(30, len(people_v0)):  # registered in the first village too: a suspected duplicate
                values = {**values, "name": people_v0[i][1]["name"], "id_number": people_v0[i][1]["id_number"],
                          "birth_date": people_v0[i][1]["birth_date"]}
            pid = common.uuid7_at(rng, ms)
            people.append((pid, values))
            ops.extend(me.record("person", values, pid, ms))
            counts["person"] += 1
            if vi == 0 and i < 40:  # a township correction concurrent with the village's edit: a conflict
                ops.extend(staff.record("person", {"phone": f"138{rng.randrange(10**8):08d}"}, pid, ms + 1000))
                ops.extend(me.record("person", {"phone": f"139{rng.randrange(10**8):08d}"}, pid, ms + 2000))
            # a few residents with many records: 2 needs and 20 services on average, 0..4 and 0..40
            for _ in range(rng.randint(0, round(2 * needs))):
                nid = common.uuid7_at(rng, ms + 1)
                nv = sample.need(rng, unit, pid)
                fate = rng.random()
                if fate < 0.33:
                    nv["status"] = "已解决"
                elif fate < 0.5:
                    nv["status"] = "服务中"
                if rng.random() < 0.3:
                    nv["due_date"] = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                ops.extend(me.record("need", nv, nid, ms + 1))
                counts["need"] += 1
                ids.setdefault("a_need", nid)
                if vi == 0 and "tablet_need" not in ids:
                    ids["tablet_need"] = nid
            n_serv = rng.randint(0, round(2 * services))
            for _ in range(n_serv):
                sv = sample.service(rng, unit, pid, None, rng.choice(CATEGORIES[:4]))
                ops.extend(me.record("service", sv, common.uuid7_at(rng, ms + 2), ms + 2))
                counts["service"] += 1
            if vi == 0 and n_serv > ids.get("busiest_services", -1):
                ids["busiest"], ids["busiest_services"] = pid, n_serv
            flush()
        if vi == 0:
            people_v0 = people
            ids["id_number"] = people[len(people) // 2][1]["id_number"]
            ids["name"] = people[len(people) // 2][1]["name"]
    flush(force=True)
    store.close()
    node = Node(path, TOWNSHIP)
    try:
        ensure_units(node)
        node.accounts.add(STAFF, PASSWORD, role="township", unit=TOWNSHIP, display_name="刘主任")
        for vi in range(villages):
            unit = village_code(vi)
            node.add_device(unit, f"社工{unit[-2:]}", device=f"tab-{unit}")
        who = Staff(STAFF, "township", TOWNSHIP)
        open_needs = [r for (r,) in node.store.conn.execute(
            "SELECT id FROM records WHERE coll = 'need' AND json_extract(data, '$.status') = '待处理' LIMIT 20")]
        for nid in open_needs:
            escalate(node, who, nid, "需要县里协调专业护理机构上门")
        ed = node.editor(STAFF)
        for k in range(5):
            reference.add_notice(ed, f"第{k + 1}号通知：做好冬季走访", "请各村在月底前完成独居老人走访。")
            reference.add_task(ed, f"第{k + 1}项任务：核对低保名单", "逐户核对", due_date=f"2026-12-{10 + k}")
    finally:
        node.close()
    return {**ids, **counts}


def build_tablet(path: Path, node_db: Path, village: str) -> int:
    "A tablet of ``village`` holding its records and the reference data, as a sync would leave it"
    src = Store(node_db)
    tab = Tablet(path, pin=PIN)
    try:
        for k, v in (("device", f"tab-{village}"), ("user", f"社工{village[-2:]}"), ("unit", village),
                     ("tier", "village"), ("server", "http://127.0.0.1:9")):
            tab.store.set_meta(k, v)
        seqs = [s for (s,) in src.conn.execute(
            "SELECT seq FROM ops WHERE unit = ? OR coll IN ('notice', 'task', 'unit', 'catalogue') ORDER BY seq",
            (village,))]
        for k in range(0, len(seqs), 50_000):
            tab.store.apply(src.ops_by_seq(seqs[k:k + 50_000]))
        return len(seqs)
    finally:
        tab.close()
        src.close()


class Counter:
    "How many SQL statements a connection runs (its trace callback)"

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, _sql: str) -> None:
        self.n += 1


def rows_shown(html: str) -> int:
    "Table rows and list items a page shows (a rough count of what it lists)"
    return len(re.findall(r"<tr[ >]", html)) + len(re.findall(r"<li[ >]", html))


def searched(client: Any, path: str, q: str, csrf: str | None = None, headers: dict[str, str] | None = None) -> str:
    """The address of a search's results: the search form posts its query and is sent to a page that names
    it by a token (no ID number in an address), which is what is timed"""
    if csrf is None:
        found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
        assert found is not None
        csrf = found.group(1)
    r = client.post(path, data={"q": q, "csrf": csrf}, headers=headers or {})
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def time_pages(client: Any, conn: Any, pages: dict[str, str], repeat: int, profile: str | None
               ) -> list[dict[str, Any]]:
    out = []
    for label, url in pages.items():
        counter = Counter()
        r = client.get(url)  # warm: the first request of a page pays for its template's compilation
        assert r.status_code == 200, (url, r.status_code, r.text[:500])
        conn.set_trace_callback(counter)
        r = client.get(url)
        conn.set_trace_callback(None)
        times = []
        for _ in range(repeat):
            wall, _, r = common.timed(lambda: client.get(url))
            times.append(wall * 1000)
        if profile and url.startswith(profile):
            common.profile(lambda: client.get(url), top=30)
        out.append({"page": label, "url": url, "rows": rows_shown(r.text), "ms": common.median(times),
                    "sql": counter.n, "bytes": len(r.content)})
        common_log(f"{label}: {out[-1]['ms']:.0f} ms")
    return out


def common_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cached(key: str, fresh: bool, build: Callable[[Path], None]) -> Path:
    """The cache's folder ``key``, built by ``build`` (given an empty folder) unless it is there, or again
    with ``fresh``. A build goes into a folder of its own beside the cache and is renamed into place once
    complete, so a run at the same time never uses, nor overwrites, a half-built one; of two runs that build
    at once, the second to finish uses the first's (the same databases: the build is seeded). A complete
    folder is never written to again: ``--fresh`` puts a new one in its place"""
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / key
    if work.is_dir() and not fresh:
        return work
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.build-", dir=CACHE))
    old = CACHE / f".{key}.old-{os.getpid()}"
    try:
        build(tmp)
        tmp.chmod(0o755)  # as a folder made otherwise (mkdtemp's is the user's alone)
        if fresh:
            with contextlib.suppress(FileNotFoundError):  # not built yet, or another --fresh run moved it first
                work.rename(old)
        with contextlib.suppress(OSError):  # another run put its build in place meanwhile: that one is used
            tmp.rename(work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left there once renamed
        shutil.rmtree(old, ignore_errors=True)
    return work


def build(into: Path, args: argparse.Namespace, residents: int) -> None:
    "The township's and the tablet's databases, and ``ids.json``: the ids the pages need"
    t0 = time.perf_counter()
    ids = build_node(into / "township.db", args.villages, residents, args.needs, args.services, args.seed)
    common_log(f"# built the township in {time.perf_counter() - t0:.0f} s: {ids}")
    t0 = time.perf_counter()
    ids["tablet_ops"] = build_tablet(into / "tablet.db", into / "township.db", village_code(0))
    common_log(f"# built the tablet in {time.perf_counter() - t0:.0f} s")
    (into / "ids.json").write_text(json.dumps(ids))


def working_copy(work: Path, run: Path) -> dict[str, Any]:
    """The cached databases copied into ``run`` (the pages may write: sessions, seen notices, an index a
    newer store adds), and the ids the pages need. The three files are opened before any is read, so a
    ``--fresh`` run that replaces the cache meanwhile takes none of them away"""
    with open(work / "ids.json", "rb") as ids, open(work / "township.db", "rb") as node_db, \
            open(work / "tablet.db", "rb") as tab_db:
        for src in (node_db, tab_db):
            with open(run / Path(src.name).name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        found: dict[str, Any] = json.load(ids)
        return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--villages", type=int, default=20)
    ap.add_argument("--residents", type=int, default=1500, help="residents a village")
    ap.add_argument("--needs", type=float, default=2.0, help="needs a resident, on average")
    ap.add_argument("--services", type=float, default=20.0, help="services a resident, on average")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the residents (0.1: a quick check)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="rebuild the cached databases")
    ap.add_argument("--only", choices=("workbench", "tablet"), help="time one app's pages")
    ap.add_argument("--profile", metavar="URL", help="print a cProfile of the pages whose URL starts so")
    args = ap.parse_args()
    residents = max(10, int(args.residents * args.scale))
    common.print_machine()
    key = f"v{VERSION}-{args.villages}x{residents}-{args.needs}-{args.services}-{args.seed}"
    work = cached(key, args.fresh, lambda into: build(into, args, residents))
    run = Path(tempfile.mkdtemp(prefix=f".{key}.run-", dir=CACHE))
    try:
        measure(args, working_copy(work, run), run)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def measure(args: argparse.Namespace, ids: dict[str, Any], run: Path) -> None:
    "Times the pages over the databases in ``run`` and prints the figures"
    tab = Tablet(run / "tablet.db", pin=PIN)
    try:  # synced: the node has acknowledged every op the tablet wrote (else each page counts them as pending)
        (acked,) = tab.store.conn.execute(
            "SELECT max_counter FROM sites WHERE device = ?", (f"tab-{village_code(0)}",)).fetchone()
        tab.store.set_meta("acked", str(acked))
    finally:
        tab.close()
    figures: dict[str, Any] = {"villages": args.villages, "residents": ids["person"], "needs": ids["need"],
                               "services": ids["service"], "pace_ms_before": common.pace_ms()}
    results: list[dict[str, Any]] = []
    if args.only != "tablet":
        t0 = time.perf_counter()
        node = Node(run / "township.db", TOWNSHIP)  # the first open of a database may bring it up to date
        figures["node_open_s"] = round(time.perf_counter() - t0, 2)
        try:
            with TestClient(create_app(node), base_url="http://township.local", follow_redirects=False) as c:
                csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
                assert csrf is not None
                r = c.post("/login", data={"username": STAFF, "password": PASSWORD, "csrf": csrf.group(1)})
                assert r.status_code == 303, r.text
                v1 = village_code(0)
                pages = {
                    "workbench home": "/staff",
                    "conflicts": "/staff/conflicts",
                    "people list": "/staff/people",
                    "people, search by name": searched(c, "/staff/people", ids["name"]),
                    "people, search by ID number": searched(c, "/staff/people", ids["id_number"]),
                    f"record page ({ids['busiest_services']} services)": f"/staff/records/{ids['busiest']}",
                    "needs list": "/staff/needs",
                    "needs, open in one village": f"/staff/needs?status=open&unit={v1}",
                    "needs, overdue": "/staff/needs?status=overdue",
                    "a need's page": f"/staff/records/{ids['a_need']}",
                    "duplicates": "/staff/duplicates",
                    "devices": "/staff/devices",
                    "escalations": "/staff/escalations",
                    "roll-up": "/rollup",
                }
                results += [{"app": "workbench", **x} for x in time_pages(c, node.store.conn, pages, args.repeat,
                                                                           args.profile)]
        finally:
            node.close()
    if args.only != "workbench":
        tapp = TabletApp(run / "tablet.db", port=PORT)
        try:
            with TestClient(tablet_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
                t0 = time.perf_counter()
                r = c.post("/unlock", data={"csrf": tapp.csrf, "pin": PIN}, headers={"origin": ORIGIN})
                assert r.status_code == 303, r.text
                figures["tablet_unlock_s"] = round(time.perf_counter() - t0, 2)
                assert tapp.tablet is not None
                pages = {
                    "tablet home": "/",
                    "people list": "/people",
                    "people, search by name": searched(c, "/people", ids["name"], tapp.csrf, {"origin": ORIGIN}),
                    f"a resident's page ({ids['busiest_services']} services)": f"/people/{ids['busiest']}",
                    "needs": "/needs",
                    "needs, all": "/needs?status=all",
                    "a need's edit page": f"/needs/{ids['tablet_need']}/edit",
                    "services": "/services",
                    "notices and tasks": "/notices",
                    "sync": "/sync",
                }
                results += [{"app": "tablet", **x} for x in time_pages(c, tapp.tablet.store.conn, pages,
                                                                        args.repeat, args.profile)]
        finally:
            tapp.close()
    figures["pace_ms_after"] = common.pace_ms()
    print()
    print(f"township: {args.villages} villages, {ids['person']:,} residents, {ids['need']:,} needs, "
          f"{ids['service']:,} services; tablet: the first village ({ids.get('tablet_ops', 0):,} ops)")
    common.print_table(["app", "page", "rows", "ms (median)", "SQL", "slow?"], [
        (x["app"], x["page"], f"{x['rows']:,}", f"{x['ms']:.1f}", f"{x['sql']:,}",
         "SLOW" if x["ms"] > (300 if x["app"] == "workbench" else 100) else "")
        for x in results])
    print(f"opening the node's database: {figures.get('node_open_s')} s; unlocking the tablet: "
          f"{figures.get('tablet_unlock_s')} s (the first open after an upgrade brings the file up to date)")
    print(f"the machine's pace (lower is faster): {figures['pace_ms_before']} ms before, "
          f"{figures['pace_ms_after']} ms after")
    for x in results:
        slug = re.sub(r"[^a-z0-9]+", "_", f"{x['app']} {x['page']}".lower().split(" (")[0]).strip("_")
        figures[f"{slug}_ms"] = round(x["ms"], 1)
        figures[f"{slug}_sql"] = x["sql"]
    common.emit_json(figures)


if __name__ == "__main__":
    main()
