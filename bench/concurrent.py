"""Concurrency benchmark: 200 tablets, each with about 20 new persons and a few edits, sync at once
against one real node.

    .venv/bin/python bench/concurrent.py                  # 200 tablets
    .venv/bin/python bench/concurrent.py --scale 0.1      # 20 tablets, a quick check
    .venv/bin/python bench/concurrent.py --profile        # also py-spy the node and the tablets (stderr)

Set-up (not timed): a node database for township 510903001000 whose 10 villages (510903001001 …
010) already hold ``--base`` persons each, authored by one village device per village and applied with
``node.store.apply``; the tablets are enrolled round-robin over the villages (20 per village at full
size). ``cunsync serve`` (hypercorn) runs in a subprocess on a free loopback port. Each tablet has its
own database file and its own httpx client (``Tablet.init``), makes a first sync (its village's
bootstrap: a tablet already in use), then creates ``--records`` persons (realistic Chinese values)
and makes ``--edits`` single-field edits (phone or notes), some to its new records and some to records
it received, all locally.

Timed: the tablets run in ``--processes`` worker processes (one by default), a thread per tablet, each
tablet with its HTTP client and a connection open to the node, as in use; a barrier releases them
together; each calls ``tablet.sync()`` once, which pushes its ops and pulls what the other tablets of its
village pushed before it (as many round trips as that takes). Reported: the wall time from the release
until the last sync ends, and the p50 and p99 (nearest rank) of every round trip's time
(``SyncReport.round_ms``: request built and gzipped, sent, answered, response decoded; so it includes
waiting for its process's GIL among the other tablets' threads), and of the node's own time for each
(``SyncReport.node_ms``, from the answers' ``Server-Timing`` header: body in to answer ready).

The 200 simulated tablets share the node's two cores: as they take their answers in (30 s of CPU), they
slow the node, and in one process their requests trickle out over seconds as they wait for the GIL.
``--processes 10`` spreads them over ten processes (their requests then arrive nearly together) and
``--nice 10`` has them yield the CPU to the node, as tablets with CPUs of their own would.

Goal: p99 under 1 s. The last line on stdout is one JSON object: tablets, seconds, p50_ms, p99_ms,
node_p50_ms, node_p99_ms, and more.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import _node as nodelib  # also puts the project root on sys.path
import _common as common

from client.tablet import SyncReport, Tablet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    nodelib.herd_options(ap)
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on the syncs after this")
    ap.add_argument("--processes", type=int, default=1,
                    help="worker processes the simulated tablets share (default 1: all 200 share one GIL)")
    ap.add_argument("--nice", type=int, default=0,
                    help="how far the workers lower their CPU priority under the node's (default 0)")
    ap.add_argument("--profile", action="store_true", help="py-spy the node and this process while timed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    common.print_machine()

    with nodelib.workdir(args.keep) as d:
        db = d / "node.db"
        enrol = nodelib.herd_node(db, args)
        n = len(enrol)

        with nodelib.running_node(db) as rn:
            log(f"setting up {n} tablets ({args.base} records per village to bootstrap)")
            t0 = time.perf_counter()
            tablets: list[Tablet] = []
            pushed = 0
            try:
                for i, (village, token) in enumerate(enrol):
                    tab = Tablet.init(d / f"tablet-{i:03d}.db", rn.url, token)
                    tablets.append(tab)
                    nodelib.herd_tablet(tab, village, args, rng)
                    pushed += tab.pending()
                log(f"  {time.perf_counter() - t0:.1f} s; {pushed:,} ops pending over {n} tablets")
            finally:
                for tab in tablets:
                    tab.close()

            # the timed syncs: the tablets in worker processes, each tablet a thread of its own
            ctx = mp.get_context("spawn")
            procs = max(1, min(args.processes, n))
            barrier = ctx.Barrier(procs + 1)
            results = ctx.Queue()
            workers = [ctx.Process(target=_worker, daemon=True, args=(
                [str(d / f"tablet-{i:03d}.db") for i in range(k, n, procs)], barrier, results, args.nice))
                for k in range(procs)]
            for w in workers:
                w.start()
            with ExitStack() as stack:
                if args.profile:
                    stack.enter_context(nodelib.Spy(rn.pid, "node", d))
                    stack.enter_context(nodelib.Spy(workers[0].pid or 0, "tablets", d))
                barrier.wait(timeout=120)  # every worker has opened its tablets: go
                start = time.monotonic()
                node0 = nodelib.cpu_seconds(rn.pid)
                finished: list[Done] = []
                reported = 0
                while reported < len(workers):
                    try:
                        finished += results.get(timeout=1.0)
                        reported += 1
                    except queue.Empty:
                        dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                        if dead:
                            sys.exit(f"a worker process died (exit code {dead[0]}); its stderr is above")
                        if time.monotonic() - start > args.timeout:
                            sys.exit(f"syncs still running after {args.timeout} s")
                node_cpu = nodelib.cpu_seconds(rn.pid) - node0
            for w in workers:
                w.join(30)
            errors = [x.error for x in finished if x.error]
            if errors:
                sys.exit(f"{len(errors)} syncs failed; first:\n{errors[0]}")
            left = sum(x.pending for x in finished)
            if left:
                sys.exit(f"{left} ops still pending after the syncs")
            seconds = max(x.end for x in finished) - start
            tab_cpu = sum(x.cpu for x in finished)
            reports = [x.report for x in finished]
            ends = [x.end for x in finished]

    reps = [r for r in reports if r is not None]
    rounds = [ms for r in reps for ms in r.round_ms]
    node_rounds = [ms for r in reps for ms in r.node_ms]  # the node's own time for each (Server-Timing)
    firsts = [r.round_ms[0] for r in reps if r.round_ms]
    done = sorted(e - start for e in ends)
    fig = {
        "tablets": n,
        "seconds": round(seconds, 3),
        "p50_ms": round(nodelib.percentile(rounds, 50), 1),
        "p99_ms": round(nodelib.percentile(rounds, 99), 1),
        "max_ms": round(max(rounds), 1),
        "round_trips": len(rounds),
        "ops_pushed": sum(r.sent for r in reps),
        "ops_pulled": sum(r.received for r in reps),
        "bytes": sum(r.bytes_up + r.bytes_down for r in reps),
        "node_p50_ms": round(nodelib.percentile(node_rounds, 50), 1) if node_rounds else None,
        "node_p99_ms": round(nodelib.percentile(node_rounds, 99), 1) if node_rounds else None,
        "p50_sync_s": round(nodelib.percentile([r.seconds for r in reps], 50), 3),
        "p99_sync_s": round(nodelib.percentile([r.seconds for r in reps], 99), 3),
        "p50_first_round_ms": round(nodelib.percentile(firsts, 50), 1),
        "retries": sum(r.retries for r in reps),
        "round_trips_per_s": round(len(rounds) / seconds, 1),
        "node_cpu_s": round(node_cpu, 2),
        "tablets_cpu_s": round(tab_cpu, 2),
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
        "processes": procs,
        "nice": args.nice,
        "profiled": args.profile,
    }
    fig["goal_p99"] = fig["p99_ms"] < 1000

    print()
    common.print_table(
        ["tablets", "round trips", "ops pushed", "ops pulled", "seconds", "round trips/s", "p50 ms",
         "p99 ms", "max ms", "goal p99 < 1,000 ms"],
        [[str(n), str(len(rounds)), f"{fig['ops_pushed']:,}", f"{fig['ops_pulled']:,}", seconds,
          fig["round_trips_per_s"], fig["p50_ms"], fig["p99_ms"], fig["max_ms"],
          "met" if fig["goal_p99"] else "MISSED"]],
    )
    if node_rounds:
        print(f"the node's own time for each round trip (Server-Timing): p50 {fig['node_p50_ms']:,} ms, "
              f"p99 {fig['node_p99_ms']:,} ms; the rest of a round trip is the network and the tablet")
    print(f"syncs finished at (s after release): p10 {done[len(done) // 10]:.2f}, "
          f"p50 {done[len(done) // 2]:.2f}, last {done[-1]:.2f}; retries {fig['retries']}")
    print(f"CPU while timed: node {fig['node_cpu_s']} s, the tablets' {procs} process(es) {fig['tablets_cpu_s']} s "
          f"(wall {seconds:.1f} s)")
    nodelib.print_pressure(fig)
    common.emit_json(fig)


log = nodelib.log


@dataclass
class Done:
    "One tablet's timed sync, as its worker process reports it"

    report: SyncReport | None
    end: float  # time.monotonic(): the same clock in every process
    cpu: float  # the worker process's CPU seconds, on its first tablet's entry only
    pending: int
    error: str


def _worker(paths: list[str], barrier: Any, results: Any, nice: int) -> None:
    "A worker process: open its tablets, wait for the others, then sync them all at once, a thread each"
    os.nice(nice)  # real tablets have CPUs of their own: the simulated ones yield the node theirs
    tablets = [Tablet(p) for p in paths]
    for tab in tablets:  # as in use: each has its HTTP client and a connection open to the node
        tab.client.get(tab.url("/api/health")).raise_for_status()
    finished = [Done(None, 0.0, 0.0, 0, "") for _ in tablets]
    go = threading.Event()

    def run(i: int) -> None:
        go.wait()
        try:
            finished[i].report = tablets[i].sync()
        except Exception:
            finished[i].error = f"{paths[i]}: {traceback.format_exc(limit=3)}"
        finally:
            finished[i].end = time.monotonic()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(tablets))]
    for t in threads:
        t.start()
    barrier.wait(timeout=120)
    cpu0 = nodelib.cpu_seconds()
    go.set()
    for t in threads:
        t.join()
    finished[0].cpu = nodelib.cpu_seconds() - cpu0
    for i, tab in enumerate(tablets):
        finished[i].pending = tab.pending()
        tab.close()
    results.put(finished)


if __name__ == "__main__":
    main()
