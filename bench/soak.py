"""Soak: 200 tablets work and sync against one real node for a bounded run (about 5 minutes by default),
to show that nothing fails and the node's memory stays flat. Not run in CI.

    .venv/bin/python bench/soak.py                     # 200 tablets, 300 s
    .venv/bin/python bench/soak.py --seconds 30 --tablets 20   # a quick check
    .venv/bin/python bench/soak.py --warmup 120 --cache-mb 8   # steady state: measured after the cache is full

Set-up (not measured): a node database for township 510903001000 whose 10 villages hold ``--base``
persons each; ``--tablets`` tablets enrolled round-robin over the villages, each with its own database
file and httpx client, each making a first sync (its village's bootstrap). ``cunsync serve`` (hypercorn)
runs in a subprocess on a free loopback port.

The run: one thread per tablet; each, until the time is up, does what a worker does between syncs —
registers a resident with a need and a service, or corrects a phone number or a note on a resident it
holds — then syncs, then waits ``--think`` seconds (uniformly random in the range) before the next round.
Every round trip's time is kept (``SyncReport.round_ms``). The node's resident memory (VmRSS) is read at
the start of the run, every ``--sample`` seconds, and at the end.

At the end every tablet syncs twice more and must hold exactly what the node holds for its village,
with nothing pending; a sync that raised, a tablet that did not converge and a node database failing
``PRAGMA integrity_check`` each count as an error. Errors must be 0.

Printed: a table of the run, the RSS samples, and last one JSON object with ``errors``, ``p99_ms``,
``rss_start_mb`` and ``rss_end_mb`` (and more).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import threading
import time
import traceback
from pathlib import Path

import _node as nodelib  # also puts the project root on sys.path
import _common as common

from client.tablet import Tablet
from server.node import Node
from sync.store import Store

log = nodelib.log


def rss_mb(pid: int) -> float:
    "A process's resident memory in MiB, from /proc"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_mb(db: Path) -> float:
    """The node database's size in MiB as the node sees it: its pages, those still in the WAL included
    (the WAL file itself is reused in place and stays near its high-water mark, about 80 MB)"""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return int(pages) * int(size) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="how long the tablets work and sync")
    ap.add_argument("--tablets", type=int, default=200)
    ap.add_argument("--villages", type=int, default=10)
    ap.add_argument("--base", type=int, default=50, help="persons each village holds before")
    ap.add_argument("--think", type=float, nargs=2, default=(5.0, 15.0), metavar=("MIN", "MAX"),
                    help="seconds a tablet waits between syncs, uniformly random in this range")
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="seconds the tablets work before the measured run starts (its RSS, round trips, counts)")
    ap.add_argument("--cache-mb", type=float, default=None,
                    help="the node's SQLite page cache (CUNSYNC_CACHE_MB; the node's default when not given)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    villages = [f"{nodelib.TOWNSHIP[:9]}{i:03d}" for i in range(1, args.villages + 1)]
    common.print_machine()

    with nodelib.workdir(args.keep, prefix="cunsync-soak-") as d:
        db = d / "node.db"
        node = Node(db, nodelib.TOWNSHIP)
        try:
            for v in villages:
                dev, _ = node.add_device(v, "赵德明", device=f"tab-{v}-base")
                nodelib.fill_village(node.store, v, args.base, device=dev, user="赵德明", seed=int(v[-3:]))
            enrol = [(villages[i % len(villages)],
                      node.add_device(villages[i % len(villages)], nodelib.WORKERS[i % len(nodelib.WORKERS)])[1])
                     for i in range(args.tablets)]
        finally:
            node.close()

        env = {"CUNSYNC_CACHE_MB": str(args.cache_mb)} if args.cache_mb is not None else None
        with nodelib.running_node(db, env=env) as rn:
            log(f"setting up {args.tablets} tablets")
            tablets: list[Tablet] = []
            try:
                for i, (_, token) in enumerate(enrol):
                    tab = Tablet.init(d / f"tablet-{i:03d}.db", rn.url, token)
                    tab.sync()
                    tablets.append(tab)
                figures = run(args, tablets, rn.pid, db)
                figures["errors"] += settle(tablets, db)
                figures["rss_after_settle_mb"] = round(rss_mb(rn.pid), 1)
            finally:
                for tab in tablets:
                    tab.close()
    report(args, figures)


def run(args: argparse.Namespace, tablets: list[Tablet], pid: int, db: Path) -> dict[str, object]:
    "Every tablet works and syncs until the time is up; the figures of the run"
    stop = threading.Event()
    lock = threading.Lock()
    rounds_ms: list[float] = []
    errors: list[str] = []
    counts = {"syncs": 0, "sent": 0, "received": 0, "retries": 0}

    def worker(i: int) -> None:
        rng = random.Random(args.seed * 10_000 + i)
        tab = tablets[i]
        stop.wait(rng.uniform(0, args.think[1]))  # spread the first syncs out
        while not stop.is_set():
            try:
                work(tab, rng)
                rep = tab.sync()
                with lock:
                    rounds_ms.extend(rep.round_ms)
                    counts["syncs"] += 1
                    counts["sent"] += rep.sent
                    counts["received"] += rep.received
                    counts["retries"] += rep.retries
            except Exception:
                with lock:
                    errors.append(f"tablet {i}: {traceback.format_exc(limit=3)}")
            stop.wait(rng.uniform(*args.think))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(tablets))]
    rss_cold = rss_mb(pid)
    for t in threads:
        t.start()
    if args.warmup > 0:  # the tablets work; nothing of this is counted
        log(f"warming up for {args.warmup:.0f} s; node RSS {rss_cold:.1f} MiB")
        time.sleep(args.warmup)
        with lock:
            rounds_ms.clear()
            errors_in_warmup = len(errors)
            counts.update(syncs=0, sent=0, received=0, retries=0)
    else:
        errors_in_warmup = 0
    rss = [(0.0, rss_mb(pid))]
    sizes = [db_mb(db)]
    cpu0 = nodelib.cpu_seconds(pid)
    t0 = time.perf_counter()
    log(f"running for {args.seconds:.0f} s; node RSS {rss[0][1]:.1f} MiB")
    while (left := args.seconds - (time.perf_counter() - t0)) > 0:
        time.sleep(min(args.sample, left))
        rss.append((time.perf_counter() - t0, rss_mb(pid)))
        sizes.append(db_mb(db))
        with lock:
            log(f"  {rss[-1][0]:5.0f} s: {counts['syncs']} syncs, {len(errors)} errors, node RSS {rss[-1][1]:.1f} MiB,"
                f" database {sizes[-1]:.1f} MiB")
    stop.set()
    for t in threads:
        t.join(120)
    seconds = time.perf_counter() - t0
    rss.append((seconds, rss_mb(pid)))
    sizes.append(db_mb(db))
    for e in errors[:3]:
        log(e)
    return {
        "tablets": len(tablets), "seconds": round(seconds, 1), "syncs": counts["syncs"],
        "round_trips": len(rounds_ms), "ops_pushed": counts["sent"], "ops_pulled": counts["received"],
        "retries": counts["retries"], "errors": len(errors) + sum(t.is_alive() for t in threads),
        "p50_ms": round(nodelib.percentile(rounds_ms, 50), 1),
        "p99_ms": round(nodelib.percentile(rounds_ms, 99), 1),
        "max_ms": round(max(rounds_ms, default=0.0), 1),
        "warmup_s": args.warmup, "cache_mb": args.cache_mb, "errors_in_warmup": errors_in_warmup,
        "rss_cold_mb": round(rss_cold, 1),
        "rss_start_mb": round(rss[0][1], 1), "rss_end_mb": round(rss[-1][1], 1),
        "rss_max_mb": round(max(r for _, r in rss), 1),
        "rss_samples_mb": [round(r, 1) for _, r in rss],
        "db_start_mb": round(sizes[0], 1), "db_end_mb": round(sizes[-1], 1),
        "db_samples_mb": [round(x, 1) for x in sizes],
        "node_cpu_s": round(nodelib.cpu_seconds(pid) - cpu0, 1),
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
    }


def work(tab: Tablet, rng: random.Random) -> None:
    "A worker's round: a new resident with a need and a service, or an edit of a resident the tablet holds"
    people = tab.store.records("person", limit=200)
    if people and rng.random() < 0.5:
        tab.update(rng.choice(people).id, nodelib.edit(rng))
        return
    with tab.store.transaction():
        p = tab.create("person", nodelib.person(rng, tab.unit))
        n = tab.create("need", {"person": p, "category": "养老服务", "status": "待处理", "urgency": "一般",
                                "description": "需要助餐"})
        tab.create("service", {"person": p, "need": n, "service_type": "养老服务",
                               "served_at": "2025-06-01T09:30", "minutes": 30})


def settle(tablets: list[Tablet], db: Path) -> int:
    "Sync every tablet twice more; the errors: failed syncs, tablets not converged, a damaged node database"
    errors = 0
    for _ in range(2):
        for tab in tablets:
            try:
                tab.sync()
            except Exception as e:
                log(f"settle: {tab.device}: {e}")
                errors += 1
    with Store(db) as node:
        digest = node.digest()
        (ok,) = node.conn.execute("PRAGMA integrity_check").fetchone()
    if ok != "ok":
        log(f"node database: {ok}")
        errors += 1
    for tab in tablets:
        want = {rid: v for rid, v in digest.items() if v[1] == tab.unit}
        if tab.pending() or tab.store.digest() != want:
            log(f"settle: {tab.device} did not converge ({tab.pending()} pending)")
            errors += 1
    return errors


def report(args: argparse.Namespace, fig: dict[str, object]) -> None:
    print()
    common.print_table(
        ["tablets", "seconds", "syncs", "round trips", "ops pushed", "ops pulled", "retries", "errors",
         "p50 ms", "p99 ms", "max ms", "node RSS start MiB", "node RSS end MiB"],
        [[str(fig["tablets"]), fig["seconds"], str(fig["syncs"]), str(fig["round_trips"]),
          f"{fig['ops_pushed']:,}", f"{fig['ops_pulled']:,}", str(fig["retries"]), str(fig["errors"]),
          fig["p50_ms"], fig["p99_ms"], fig["max_ms"], fig["rss_start_mb"], fig["rss_end_mb"]]],
    )
    print(f"node RSS every {args.sample:.0f} s (MiB): {fig['rss_samples_mb']}; after the final syncs "
          f"{fig['rss_after_settle_mb']}")
    print(f"node database at the same moments (MiB): {fig['db_samples_mb']} (SQLite's page cache, up to 64 MiB, "
          "grows with the pages the node touches, so RSS follows the database until the cache is full)")
    print(f"node CPU during the run: {fig['node_cpu_s']} s")
    nodelib.print_pressure(fig)
    out = {"errors": fig["errors"], "p99_ms": fig["p99_ms"], "rss_start_mb": fig["rss_start_mb"],
           "rss_end_mb": fig["rss_end_mb"]}
    out.update({k: v for k, v in fig.items() if k not in out and not k.endswith("_samples_mb")})
    common.emit_json(out)


if __name__ == "__main__":
    main()
