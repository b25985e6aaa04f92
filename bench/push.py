"""Push benchmark: one tablet pushes 10,000 new persons, then 10,000 single-field edits, to a real node.

    .venv/bin/python bench/push.py                  # 10,000 records and 10,000 edits, 3 runs
    .venv/bin/python bench/push.py --scale 0.1 --runs 1   # 1,000 of each, once: a quick check
    .venv/bin/python bench/push.py --profile        # also py-spy the node and this process (stderr)

Set-up (not timed): a node database for township 510903001000 with one tablet enrolled in 育才社区
(510903001001); ``cunsync serve`` (hypercorn) in a subprocess on a free loopback port; the tablet is set
up with ``Tablet.init`` and makes one warm-up sync with one record, so its cursor is past the bootstrap
(a tablet in use). Then it creates the persons locally (8 fields: unit, name, gender, birth_date, phone,
address, groups, notes; realistic Chinese values), in transactions of 500 records.

Timed: ``tablet.sync()`` of the creates; then, after one single-field edit (phone or notes) per record
made locally (not timed), ``tablet.sync()`` of the edits. Seconds are the SyncReport's.

All of it runs ``--runs`` times (3 by default), each time on a fresh node and tablet with the same records
and edits; the figures are those of the run with the median records/s (the lower middle one of an even
number of runs), and ``runs_records_per_s`` lists every run's: one run on this shared machine can be 15%
off either way.

Bytes are the sync's request plus response bytes on the wire (gzip bodies, from the SyncReport: HTTP
headers not counted), per record and per edit, beside the values alone in MessagePack: for a record
``msgspec.msgpack.encode`` of the dict of its field values, for an edit its new value. The wire bodies
are gzip over ~1,000 ops, so repeated text compresses; ``values_gzip_bytes_per_record`` (and
``value_gzip_bytes_per_edit``) give the values alone, MessagePack then gzip in batches of the same size,
to show what the protocol itself adds.

``pace_ms_before`` and ``pace_ms_after`` time a fixed loop just before and after the create sync
(``_common.pace_ms``): this shared machine's speed drifts by up to 1.8x, so records/s of two runs
compare only at a similar pace.

Goals: above 5,000 records/s; at most 1.5x the values' size per new record; at most 48 bytes beyond
the value per edit. The last line on stdout is one JSON object: records_per_s, bytes_per_record,
values_bytes_per_record, bytes_per_edit, value_bytes_per_edit, runs_records_per_s, and more.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _node as nodelib  # also puts the project root on sys.path
import _common as common

import msgspec

from client.tablet import SyncReport, Tablet
from server.node import Node
from sync.wire import compress

VILLAGE = "510903001001"
CREATE_BATCH = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000, help="new records, and as many edits")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the count (0.1 for a quick check)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="py-spy the node and this process while timed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--runs", type=int, default=3,
                    help="whole runs, each on a fresh node and tablet; the median run is reported (default 3)")
    args = ap.parse_args()
    n = max(1, int(args.records * args.scale))
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    common.print_machine()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args, n))
        log(f"run {i + 1}/{args.runs}: {runs[-1]['records_per_s']:,} records/s, node CPU "
            f"{runs[-1]['node_cpu_s_create']} s, pace {runs[-1]['pace_ms_before']}–{runs[-1]['pace_ms_after']} ms")
    report(sorted(runs, key=lambda f: f["records_per_s"])[(len(runs) - 1) // 2], runs)


def one_run(args: argparse.Namespace, n: int) -> dict[str, Any]:
    "One push of ``n`` new records and ``n`` edits to a fresh node: the run's figures"
    rng = random.Random(args.seed)  # every run pushes the same records and edits
    with nodelib.workdir(args.keep) as d:
        node_db = d / "node.db"
        node = Node(node_db, nodelib.TOWNSHIP)
        _, token = node.add_device(VILLAGE, "张晓燕")
        node.close()

        with nodelib.running_node(node_db) as rn:
            tab = Tablet.init(d / "tablet.db", rn.url, token)
            try:
                tab.create("person", nodelib.person(rng, VILLAGE))
                tab.sync()  # warm-up: bootstrap done, connection open

                # -- creates -----------------------------------------------------------------
                log(f"creating {n:,} persons locally")
                values_bytes = 0
                all_values: list[dict[str, object]] = []
                ids: list[str] = []
                t0 = time.perf_counter()
                for i in range(0, n, CREATE_BATCH):
                    with tab.store.transaction():
                        for _ in range(min(CREATE_BATCH, n - i)):
                            vals = nodelib.person(rng, VILLAGE)
                            values_bytes += len(msgspec.msgpack.encode(vals))
                            all_values.append(vals)
                            ids.append(tab.create("person", vals))
                create_ops = tab.pending()
                log(f"  {time.perf_counter() - t0:.1f} s, {create_ops:,} ops pending; syncing")
                pace_before = common.pace_ms()
                rep_c = timed_sync(tab, rn, d, "create", args.profile)
                pace_after = common.pace_ms()
                check(tab, rep_c, create_ops, "create")

                # -- edits -------------------------------------------------------------------
                log(f"editing {n:,} records locally")
                value_bytes = 0
                all_edits: list[object] = []
                t0 = time.perf_counter()
                for i in range(0, n, CREATE_BATCH):
                    with tab.store.transaction():
                        for rid in ids[i:i + CREATE_BATCH]:
                            change = nodelib.edit(rng)
                            (value,) = change.values()
                            value_bytes += len(msgspec.msgpack.encode(value))
                            all_edits.append(value)
                            tab.update(rid, change)
                edit_ops = tab.pending()
                log(f"  {time.perf_counter() - t0:.1f} s, {edit_ops:,} ops pending; syncing")
                rep_e = timed_sync(tab, rn, d, "edit", args.profile)
                check(tab, rep_e, edit_ops, "edit")
            finally:
                tab.close()

    wire_c = rep_c.bytes_up + rep_c.bytes_down
    wire_e = rep_e.bytes_up + rep_e.bytes_down
    fig = {
        "records_per_s": round(n / rep_c.seconds, 1),
        "bytes_per_record": round(wire_c / n, 1),
        "values_bytes_per_record": round(values_bytes / n, 1),
        "bytes_per_edit": round(wire_e / n, 1),
        "value_bytes_per_edit": round(value_bytes / n, 1),
        "values_gzip_bytes_per_record": round(gzipped(all_values, 111) / n, 1),
        "value_gzip_bytes_per_edit": round(gzipped(all_edits, 1000) / n, 1),
        "records": n,
        "edits": n,
        "create_ops": create_ops,
        "edit_ops": edit_ops,
        "seconds_create_sync": round(rep_c.seconds, 3),
        "seconds_edit_sync": round(rep_e.seconds, 3),
        "edits_per_s": round(n / rep_e.seconds, 1),
        "ops_per_s_create": round(create_ops / rep_c.seconds, 1),
        "rounds_create": rep_c.rounds,
        # of seconds_create_sync: the round trips (request sent to answer decoded), and the node's own part
        # of them (its Server-Timing); the rest is the tablet's work between round trips
        "round_trip_seconds_create": round(sum(rep_c.round_ms) / 1000, 3),
        "node_seconds_create": round(sum(rep_c.node_ms) / 1000, 3),
        "rounds_edit": rep_e.rounds,
        "bytes_up_create": rep_c.bytes_up,
        "bytes_down_create": rep_c.bytes_down,
        "bytes_up_edit": rep_e.bytes_up,
        "bytes_down_edit": rep_e.bytes_down,
        **CPU,
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
        "pace_ms_before": pace_before,
        "pace_ms_after": pace_after,
        "profiled": args.profile,
    }
    fig["goal_records_per_s"] = fig["records_per_s"] > 5000
    fig["goal_bytes_per_record"] = fig["bytes_per_record"] <= 1.5 * fig["values_bytes_per_record"]
    fig["goal_bytes_per_edit"] = fig["bytes_per_edit"] - fig["value_bytes_per_edit"] <= 48
    return fig


def report(fig: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    "The median run's table and figures, with every run's records/s"
    n, create_ops, edit_ops = fig["records"], fig["create_ops"], fig["edit_ops"]
    fig = {**fig, "runs": len(runs), "runs_records_per_s": [f["records_per_s"] for f in runs]}
    print()
    common.print_table(
        ["push", "count", "ops", "rounds", "seconds", "per s", "wire B/item", "values B/item", "ratio",
         "over value B", "values gz B/item", "goal"],
        [
            ["new records", f"{n:,}", f"{create_ops:,}", str(fig["rounds_create"]), fig["seconds_create_sync"],
             fig["records_per_s"], fig["bytes_per_record"], fig["values_bytes_per_record"],
             f"{fig['bytes_per_record'] / fig['values_bytes_per_record']:.2f}x",
             fig["bytes_per_record"] - fig["values_bytes_per_record"], fig["values_gzip_bytes_per_record"],
             ("met" if fig["goal_records_per_s"] else "MISSED") + " >5,000/s; "
             + ("met" if fig["goal_bytes_per_record"] else "MISSED") + " <=1.5x"],
            ["field edits", f"{n:,}", f"{edit_ops:,}", str(fig["rounds_edit"]), fig["seconds_edit_sync"],
             fig["edits_per_s"],
             fig["bytes_per_edit"], fig["value_bytes_per_edit"],
             f"{fig['bytes_per_edit'] / fig['value_bytes_per_edit']:.2f}x",
             fig["bytes_per_edit"] - fig["value_bytes_per_edit"], fig["value_gzip_bytes_per_edit"],
             ("met" if fig["goal_bytes_per_edit"] else "MISSED") + " <=48 B over value"],
        ],
    )
    print(f"(create sync: {fig['bytes_up_create']:,} B up, {fig['bytes_down_create']:,} B down, CPU node "
          f"{fig['node_cpu_s_create']} s + tablet {fig['tablet_cpu_s_create']} s; edit sync: "
          f"{fig['bytes_up_edit']:,} B up, {fig['bytes_down_edit']:,} B down, CPU node {fig['node_cpu_s_edit']} s + "
          f"tablet {fig['tablet_cpu_s_edit']} s)")
    if len(runs) > 1:
        print(f"the median of {len(runs)} runs, each on a fresh node and tablet; records/s of every run: "
              + ", ".join(f"{x:,}" for x in fig["runs_records_per_s"]))
    nodelib.print_pressure(fig)
    common.emit_json(fig)


def gzipped(values: list[Any], per_batch: int) -> int:
    "Bytes of the values alone, MessagePack then gzip, in batches the size of a push (about 1,000 ops)"
    return sum(len(compress(msgspec.msgpack.encode(values[i:i + per_batch])))
               for i in range(0, len(values), per_batch))


CPU: dict[str, float] = {}


def timed_sync(tab: Tablet, rn: nodelib.RunningNode, d: Path, label: str, profile: bool) -> SyncReport:
    with ExitStack() as stack:
        if profile:
            stack.enter_context(nodelib.Spy(rn.pid, f"node-{label}-sync", d))
            stack.enter_context(nodelib.Spy(os.getpid(), f"tablet-{label}-sync", d))
        node0, tab0 = nodelib.cpu_seconds(rn.pid), nodelib.cpu_seconds()
        rep = tab.sync()
        CPU[f"node_cpu_s_{label}"] = round(nodelib.cpu_seconds(rn.pid) - node0, 2)
        CPU[f"tablet_cpu_s_{label}"] = round(nodelib.cpu_seconds() - tab0, 2)
    log(f"  {label} sync: {rep.seconds:.2f} s, {rep.rounds} rounds, {rep.sent:,} ops sent, "
        f"{rep.bytes_up:,} B up, {rep.bytes_down:,} B down; CPU: node {CPU[f'node_cpu_s_{label}']} s, "
        f"tablet {CPU[f'tablet_cpu_s_{label}']} s")
    return rep


def check(tab: Tablet, rep: SyncReport, ops: int, label: str) -> None:
    left = tab.pending()
    if left or rep.sent != ops:
        sys.exit(f"{label} sync did not push everything: sent {rep.sent} of {ops}, {left} pending")


log = nodelib.log


if __name__ == "__main__":
    main()
