"""Bootstrap benchmark: a fresh tablet pulls its village (10,000 persons) from a node holding 100,000
records in 10 villages, and the same village from a node holding only that village.

    .venv/bin/python bench/bootstrap.py                 # 10 villages x 10,000 records, 3 runs of each
    .venv/bin/python bench/bootstrap.py --scale 0.1     # 10 x 1,000, a quick check
    .venv/bin/python bench/bootstrap.py --profile       # also py-spy the node and this process (stderr)

Set-up (not timed): two node databases for township 510903001000, made with ``server.node.Node`` (so
they are normal node databases) and filled through ``node.store.apply`` in batches of 50,000 ops: for
each village one enrolled village device authors its persons (8 fields: unit, name, gender, birth_date,
phone, address, groups, notes; realistic Chinese values), exactly as ``Editor.create`` would number and
stamp them. The big node holds villages 510903001001 … 510903001010; the small one only 510903001001,
with the same records (same seed, same device, same ids). Both nodes run at once (``cunsync serve`` in
subprocesses on loopback ports).

Timed: for each run, a fresh tablet enrolled in 510903001001 is set up with ``Tablet.init`` and makes
one ``tablet.sync()``; the SyncReport's seconds and request + response bytes. Runs alternate between
the two nodes (big, small, big, small, ...) and the medians are reported, since the machine is shared.

Goal: under 5 s from the big node, and no slower than 1.2x the village-only figure. The last line on
stdout is one JSON object: seconds, seconds_village_only, bytes, and more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import _node as nodelib  # also puts the project root on sys.path
import _common as common

from client.tablet import SyncReport, Tablet
from server.node import Node

VILLAGE = "510903001001"


def build(db: Path, villages: list[str], per_village: int, tablets: int) -> tuple[list[str], float]:
    """A node database with ``per_village`` persons in each village; returns tokens for ``tablets``
    fresh tablets in VILLAGE, and the seconds the build took"""
    t0 = time.perf_counter()
    node = Node(db, nodelib.TOWNSHIP)
    try:
        for v in villages:
            i = int(v[-3:])
            user = nodelib.WORKERS[i % len(nodelib.WORKERS)]
            dev, _ = node.add_device(v, user, device=f"tab-{v}-a")
            ops = nodelib.fill_village(node.store, v, per_village, device=dev, user=user, seed=i)
            log(f"  {db.name}: village {v}: {per_village:,} records, {ops:,} ops "
                f"({time.perf_counter() - t0:.0f} s)")
        tokens = [node.add_device(VILLAGE, "李春梅")[1] for _ in range(tablets)]
    finally:
        node.close()
    return tokens, time.perf_counter() - t0


def pull(url: str, token: str, path: Path, expect: int) -> SyncReport:
    tab = Tablet.init(path, url, token)
    try:
        rep = tab.sync()
        got = len(tab.store.records("person"))
        if got != expect:
            sys.exit(f"the tablet holds {got} persons after its bootstrap; expected {expect}")
        if {r.unit for r in tab.store.records("person")} != {VILLAGE}:
            sys.exit("the tablet received records of another village")
    finally:
        tab.close()
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--villages", type=int, default=10)
    ap.add_argument("--per-village", type=int, default=10_000)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply records per village (0.1: quick)")
    ap.add_argument("--runs", type=int, default=3, help="bootstraps from each node, alternating")
    ap.add_argument("--profile", action="store_true", help="py-spy the node and this process on run 1")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    per = max(1, int(args.per_village * args.scale))
    villages = [f"{nodelib.TOWNSHIP[:9]}{i:03d}" for i in range(1, args.villages + 1)]
    common.print_machine()

    with nodelib.workdir(args.keep) as d:
        log(f"building the nodes: {len(villages)} x {per:,} records, and 1 x {per:,}")
        big_tokens, big_build = build(d / "big.db", villages, per, args.runs)
        small_tokens, small_build = build(d / "small.db", [VILLAGE], per, args.runs)
        big_size = (d / "big.db").stat().st_size
        reps: dict[str, list[SyncReport]] = {"big": [], "small": []}
        cpu: dict[str, list[tuple[float, float]]] = {"big": [], "small": []}
        with nodelib.running_node(d / "big.db") as big, nodelib.running_node(d / "small.db") as small:
            for run in range(args.runs):
                for label, rn, tokens in (("big", big, big_tokens), ("small", small, small_tokens)):
                    with ExitStack() as stack:
                        if args.profile and run == 0:
                            stack.enter_context(nodelib.Spy(rn.pid, f"node-{label}", d))
                            stack.enter_context(nodelib.Spy(os.getpid(), f"tablet-from-{label}", d))
                        node0, tab0 = nodelib.cpu_seconds(rn.pid), nodelib.cpu_seconds()
                        rep = pull(rn.url, tokens[run], d / f"tablet-{label}-{run}.db", per)
                        cpu[label].append((nodelib.cpu_seconds(rn.pid) - node0, nodelib.cpu_seconds() - tab0))
                    reps[label].append(rep)
                    log(f"  run {run + 1} from the {label} node: {rep.seconds:.2f} s, {rep.rounds} rounds, "
                        f"{rep.received:,} ops, {rep.bytes_up:,} B up, {rep.bytes_down:,} B down; CPU "
                        f"node {cpu[label][-1][0]:.2f} s, tablet {cpu[label][-1][1]:.2f} s")

    sec = statistics.median(r.seconds for r in reps["big"])
    sec_small = statistics.median(r.seconds for r in reps["small"])
    b = reps["big"][0]
    fig = {
        "seconds": round(sec, 3),
        "seconds_village_only": round(sec_small, 3),
        "bytes": b.bytes_up + b.bytes_down,
        "records": per,
        "node_records": per * len(villages),
        "ratio": round(sec / sec_small, 3),
        "ops_received": b.received,
        "rounds": b.rounds,
        "bytes_per_record": round((b.bytes_up + b.bytes_down) / per, 1),
        "records_per_s": round(per / sec, 1),
        "runs_seconds": [round(r.seconds, 3) for r in reps["big"]],
        "runs_seconds_village_only": [round(r.seconds, 3) for r in reps["small"]],
        "node_cpu_s": round(statistics.median(c[0] for c in cpu["big"]), 2),
        "tablet_cpu_s": round(statistics.median(c[1] for c in cpu["big"]), 2),
        "node_cpu_s_village_only": round(statistics.median(c[0] for c in cpu["small"]), 2),
        "tablet_cpu_s_village_only": round(statistics.median(c[1] for c in cpu["small"]), 2),
        "node_db_bytes": big_size,
        "build_seconds": round(big_build + small_build, 1),
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
        "profiled": args.profile,
    }
    fig["goal_seconds"] = sec < 5.0
    fig["goal_ratio"] = sec <= 1.2 * sec_small

    print()
    common.print_table(
        ["bootstrap of one village", "node records", "records", "rounds", "ops", "seconds (median)",
         "records/s", "bytes", "B/record"],
        [
            [f"from the {len(villages)}-village node", f"{per * len(villages):,}", f"{per:,}",
             str(b.rounds), f"{b.received:,}", sec, per / sec, f"{b.bytes_up + b.bytes_down:,}",
             fig["bytes_per_record"]],
            ["from the village-only node", f"{per:,}", f"{per:,}", str(reps['small'][0].rounds),
             f"{reps['small'][0].received:,}", sec_small, per / sec_small,
             f"{reps['small'][0].bytes_up + reps['small'][0].bytes_down:,}",
             round((reps['small'][0].bytes_up + reps['small'][0].bytes_down) / per, 1)],
        ],
    )
    print(f"runs: {fig['runs_seconds']} vs village-only {fig['runs_seconds_village_only']}; "
          f"ratio {fig['ratio']:.2f}x")
    print(f"CPU (median): node {fig['node_cpu_s']} s + tablet {fig['tablet_cpu_s']} s from the big node; "
          f"node {fig['node_cpu_s_village_only']} s + tablet {fig['tablet_cpu_s_village_only']} s village-only")
    print(f"goals: under 5 s: {'met' if fig['goal_seconds'] else 'MISSED'}; "
          f"no slower than 1.2x village-only: {'met' if fig['goal_ratio'] else 'MISSED'}")
    nodelib.print_pressure(fig)
    common.emit_json(fig)


log = nodelib.log


if __name__ == "__main__":
    main()
