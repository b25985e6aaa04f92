"""A county rolls up 20 townships of 100,000 records each: the snapshot pull, first and incremental.

Each township database is built straight through the store (``Store.apply`` of ops in big batches, no
HTTP): per township 40% residents, 35% needs (a third resolved some days later, some in progress), 25%
services, in 10 villages, spread over the last twelve months; a link device for the county. They are
cached under ``/tmp/cunsync-bench-rollup/`` (``--fresh`` rebuilds). Then every township runs as a real
node (``cunsync serve``, small-cell suppression on, as deployed) and the county pulls from all 20 the way
its schedule does (``server.schedule.pull_all``, four links at a time), over loopback:

    first        the county holds nothing: every part of every township (each township computes its
                 snapshot from its records on this first request)
    incremental  after 1% of each township's records changed (1,000 edits: statuses moved on recent
                 needs, minutes corrected on recent services, a group added to residents), the county
                 sends the hashes it holds and receives only the parts that changed

Printed: seconds (wall, the whole pull of 20 townships), bytes received on the wire (gzip), parts moved,
and the time to build the county's roll-up from what it holds. The last line is one JSON object with
``first_seconds``, ``first_bytes``, ``incremental_seconds``, ``incremental_bytes``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common  # noqa: E402
from _node import running_node  # noqa: E402  (also puts the project root on sys.path)

# bench/concurrent.py would shadow the standard library's `concurrent` package that asyncio imports
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

from concurrent.futures import ProcessPoolExecutor  # noqa: E402

from server import links, schedule  # noqa: E402
from server.node import Node  # noqa: E402
from server.rollup import build  # noqa: E402
from server.snapshots import Snapshotter  # noqa: E402
from sync.hlc import pack  # noqa: E402
from sync.ops import Op  # noqa: E402
from sync.schema import CATEGORIES, GROUPS  # noqa: E402
from sync.store import Store  # noqa: E402

COUNTY = "510903000000"
CACHE = Path("/tmp/cunsync-bench-rollup")
#: bump when the built data changes, so an old cache is not reused
VERSION = 1
DAY = 86_400_000
NOW_MS = int(time.time() * 1000)


def township_code(i: int) -> str:
    return f"510903{i + 1:03d}000"


def build_township(path: Path, township: str, records: int, seed: int) -> dict[str, Any]:
    "One township's database, straight through the store; returns its link token"
    rng = random.Random(seed)
    villages = [township[:9] + f"{v:03d}" for v in range(1, 11)]
    store = Store(path, durable=False)
    counters = {v: 0 for v in villages}
    ops: list[Op] = []
    persons: dict[str, list[str]] = {v: [] for v in villages}

    def op(village: str, ms: int, coll: str, rid: str, field: str, kind: int, value: Any,
           pred: tuple[tuple[str, int], ...] = ()) -> int:
        counters[village] += 1
        ops.append(Op(f"tab-{village}", counters[village], pack(ms, counters[village] & 0xFFFF), coll, rid,
                      field, kind, value, pred, f"社工{village[-2:]}", village, 1))
        return counters[village]

    n_person, n_need = int(records * 0.40), int(records * 0.35)
    n_service = records - n_person - n_need
    for i in range(records):
        village = villages[i % len(villages)]
        ms = NOW_MS - rng.randrange(365 * DAY)
        if i < n_person:
            kind = "person"
        elif i < n_person + n_need:
            kind = "need"
        else:
            kind = "service"
        rid = _common.uuid7_at(rng, ms)
        if kind == "person":
            persons[village].append(rid)
            op(village, ms, "person", rid, "unit", 0, village)
            op(village, ms, "person", rid, "name", 0, "居民" + rid[-6:])
            for g in rng.sample(GROUPS[:4], rng.choice((1, 1, 2))):
                op(village, ms, "person", rid, "groups", 1, g)
        elif kind == "need":
            op(village, ms, "need", rid, "unit", 0, village)
            op(village, ms, "need", rid, "person", 0, rng.choice(persons[village]))
            op(village, ms, "need", rid, "category", 0, rng.choice(CATEGORIES))
            first = op(village, ms, "need", rid, "status", 0, "待处理")
            fate = rng.random()
            if fate < 0.6:
                later = min(NOW_MS, ms + rng.randrange(1, 30) * DAY)
                op(village, later, "need", rid, "status", 0, "已解决" if fate < 0.35 else "服务中",
                   ((f"tab-{village}", first),))
        else:
            served = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms // 1000))
            op(village, ms, "service", rid, "unit", 0, village)
            op(village, ms, "service", rid, "person", 0, rng.choice(persons[village]))
            op(village, ms, "service", rid, "service_type", 0, rng.choice(CATEGORIES))
            op(village, ms, "service", rid, "served_at", 0, served)
            op(village, ms, "service", rid, "minutes", 0, rng.choice((15, 30, 45, 60, 90)))
            op(village, ms, "service", rid, "people_served", 0, rng.choice((1, 1, 1, 2, 3)))
        if len(ops) >= 50_000:
            store.apply(ops)
            ops.clear()
    if ops:
        store.apply(ops)
    n_ops = store.count_ops()
    store.close()
    node = Node(path, township)
    try:
        for v in villages:
            node.add_device(v, f"社工{v[-2:]}", device=f"tab-{v}")
        _, token = node.add_device(COUNTY, "county-link", tier="county")
    finally:
        node.close()
    return {"token": token, "ops": n_ops}


def change_one_percent(path: Path, township: str, records: int, seed: int) -> int:
    """1% of the records edited by township staff, in one transaction: statuses moved on needs of the
    last 60 days, minutes corrected on services of the last 60 days, a group added to residents"""
    rng = random.Random(seed)
    node = Node(path, township)
    changed = 0
    try:
        recent = pack(NOW_MS - 60 * DAY)
        store = node.store
        needs = [r for (r,) in store.conn.execute(
            "SELECT r.id FROM records r WHERE r.coll = 'need' AND json_extract(r.data, '$.status') = '待处理'"
            " AND (SELECT min(o.hlc) FROM json_each(r.log) j JOIN ops o ON o.seq = j.value) > ?", (recent,))]
        services = [r for (r,) in store.conn.execute(
            "SELECT id FROM records WHERE coll = 'service' AND json_extract(data, '$.served_at') > ?",
            (time.strftime("%Y-%m-%d", time.gmtime((NOW_MS - 60 * DAY) // 1000)),))]
        persons = [r for (r,) in store.conn.execute("SELECT id FROM records WHERE coll = 'person' LIMIT 20000")]
        ed = node.editor("镇街中心")
        target = records // 100
        with store.transaction():
            for rid in rng.sample(needs, min(len(needs), target * 4 // 10)):
                ed.update(rid, {"status": "服务中"})
                changed += 1
            for rid in rng.sample(services, min(len(services), target * 4 // 10)):
                ed.update(rid, {"minutes": rng.choice((20, 40, 120))})
                changed += 1
            for rid in rng.sample(persons, target - changed):
                ed.add(rid, "groups", rng.choice(GROUPS[:4]))
                changed += 1
    finally:
        node.close()
    return changed


def prepare(n: int, records: int, fresh: bool) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = CACHE / f"v{VERSION}-{n}x{records}"
    manifest = root / "manifest.json"
    if manifest.exists() and not fresh:
        print(f"# reusing the township databases in {root}", file=sys.stderr)
        return root, json.loads(manifest.read_text())
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    built: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    codes = [township_code(i) for i in range(n)]
    with ProcessPoolExecutor(max_workers=2) as pool:  # two at a time: one per core
        futures = {code: pool.submit(build_township, root / f"{code}.db", code, records, i)
                   for i, code in enumerate(codes)}
        for code, fut in futures.items():
            built[code] = fut.result()
            print(f"# built {code}: {records:,} records, {built[code]['ops']:,} ops "
                  f"({time.perf_counter() - t0:.0f} s so far)", file=sys.stderr, flush=True)
    manifest.write_text(json.dumps(built))
    return root, built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--townships", type=int, default=20)
    ap.add_argument("--records", type=int, default=100_000, help="records per township")
    ap.add_argument("--fresh", action="store_true", help="rebuild the cached township databases")
    args = ap.parse_args()
    _common.print_machine()
    root, built = prepare(args.townships, args.records, args.fresh)
    work = root / "run"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir()
    # every run starts from the built databases: copies, so the 1% edits do not accumulate
    import shutil

    for code in built:
        shutil.copy(root / f"{code}.db", work / f"{code}.db")
    os.environ["CUNSYNC_PULL_MINUTES"] = "0"
    county_db = work / "county.db"
    figures: dict[str, Any] = {"townships": args.townships, "records_per_township": args.records}
    with ExitStack() as stack:
        t0 = time.perf_counter()
        urls = {code: stack.enter_context(running_node(work / f"{code}.db", unit=code, timeout=120)).url
                for code in built}
        print(f"# {len(urls)} township nodes up in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        county = Node(county_db, COUNTY)
        try:
            for code, info in built.items():
                links.add_link(county.store, COUNTY, code, urls[code], info["token"])
            rows = []
            for label in ("first", "incremental"):
                if label == "incremental":
                    t1 = time.perf_counter()
                    edits = sum(change_one_percent(work / f"{code}.db", code, args.records, seed=100 + i)
                                for i, code in enumerate(built))
                    print(f"# {edits:,} records edited in {time.perf_counter() - t1:.0f} s", file=sys.stderr)
                t = time.perf_counter()
                results = schedule.pull_all(county)
                seconds = time.perf_counter() - t
                failed = [r for r in results if not r.ok]
                if failed:
                    raise SystemExit(f"pulls failed: {failed[:3]}")
                wire = sum(r.bytes for r in results)
                moved = sum(r.changed for r in results)
                total = sum(r.parts for r in results)
                t = time.perf_counter()
                parts, watermark, sources = Snapshotter(county.store, COUNTY).parts()
                ro = build(COUNTY, parts, sources)
                roll = time.perf_counter() - t
                figures[f"{label}_seconds"] = round(seconds, 2)
                figures[f"{label}_bytes"] = wire
                figures[f"{label}_parts"] = moved
                figures[f"{label}_rollup_seconds"] = round(roll, 2)
                rows.append((label, f"{seconds:.2f}", f"{wire:,}", f"{moved} of {total}", f"{roll:.2f}",
                             f"{ro.need_total():,}", f"{ro.service_total()[0]:,}"))
        finally:
            county.close()
    _common.print_table(["pull", "seconds", "bytes (gzip)", "parts moved", "roll-up s", "needs", "services"],
                        rows)
    figures["county_db_bytes"] = county_db.stat().st_size
    _common.emit_json(figures)


if __name__ == "__main__":
    main()
