"""The node's own work for the 200-tablet herd of ``bench/concurrent.py``, in one process, without HTTP and
without the 200 simulated tablets competing for the same two cores.

    .venv/bin/python bench/herd.py                 # 200 tablets, 3 runs
    .venv/bin/python bench/herd.py --scale 0.1     # 20 tablets, a quick check

Set-up (not timed): a node database for township 510903001000 whose 10 villages already hold ``--base``
persons each; 200 tablets enrolled round-robin over the villages, each with ``--records`` new persons
(realistic Chinese values) as one packed, gzipped request (``SyncRequest``), its cursor at the node's
last op, as a tablet already in use sends it. The requests are shuffled once (seeded).

Timed, on a fresh copy of that database each run: every request in turn is inflated, decoded and handed
to ``Node.sync_bodies`` as ``server.exchanges`` hands it (push, then pull what the village's earlier
tablets pushed, answered as a gzipped MessagePack body): what the node's store thread does for each, one
after another. The CPU seconds of that loop (this thread's: the store's checkpoints run in a thread of
their own, beside it) are the least time in which the node can answer all 200 when they arrive together,
so the herd's p99 round trip (the 198th answer of 200) cannot be much below it; its wall seconds add the
commits' disk flushes. Each run times the requests one at a time, and in groups of ``--group`` (the node
takes the requests waiting for the store together: their pushes share one transaction), alternating.

The last line on stdout is one JSON object: tablets, ops_pushed, ops_pulled and bytes_answered (the
answers' gzipped bodies, one at a time), node_cpu_s and node_wall_s (medians, one at a time), group,
node_cpu_s_grouped and node_wall_s_grouped, runs and runs_grouped (CPU seconds), and the machine's pace
before and after (``_common.pace_ms``: its speed drifts by up to 1.8x).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time

import _node as nodelib  # also puts the project root on sys.path
import _common as common

from server.node import Device, Exchange, Node
from sync import Op, uuid7, wire
from sync.store import no_cycles
from sync.hlc import pack, wall_ms


def build(db: str, tablets: int, villages: int, base: int, records: int, seed: int) -> list[tuple[Device, bytes]]:
    "The node database at ``db`` and each tablet's first request, shuffled"
    node = Node(db, nodelib.TOWNSHIP)
    try:
        units = [f"{nodelib.TOWNSHIP[:9]}{i:03d}" for i in range(1, villages + 1)]
        for v in units:
            dev, _ = node.add_device(v, "赵德明", device=f"tab-{v}-base")
            nodelib.fill_village(node.store, v, base, device=dev, user="赵德明", seed=int(v[-3:]))
        rng = random.Random(seed)
        start = pack(wall_ms() - 3_600_000, 0)
        cursor = node.store.max_seq()
        check = node._cursor_check(cursor)
        out = []
        for i in range(tablets):
            v = units[i % villages]
            _, token = node.add_device(v, nodelib.WORKERS[i % len(nodelib.WORKERS)], device=f"tab-{i:03d}")
            dev = node.authenticate(token)
            ops: list[Op] = []
            counter, hlc = 1, start + i * 10_000
            for _ in range(records):
                made = nodelib.person_ops(nodelib.person(rng, v), uuid7(), device=dev.device, user=dev.user,
                                          unit=v, tier="village", counter=counter, hlc=hlc)
                counter += len(made)
                hlc += len(made)
                ops.extend(made)
            req = wire.SyncRequest(protocol=wire.PROTOCOL_VERSION, device=dev.device, ops=wire.pack_ops(ops),
                                   cursor=cursor, epoch=node.epoch, cursor_check=check)
            out.append((dev, wire.compress(wire.encode(req))))
        rng.shuffle(out)
        return out
    finally:
        node.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tablets", type=int, default=200)
    ap.add_argument("--records", type=int, default=20, help="new persons per tablet")
    ap.add_argument("--villages", type=int, default=10)
    ap.add_argument("--base", type=int, default=100, help="persons each village holds before")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tablets (0.1: quick check)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each way, alternating (default 3)")
    ap.add_argument("--group", type=int, default=20,
                    help="requests the node takes together, as it does those waiting (default 20)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n = max(1, int(args.tablets * args.scale))
    common.print_machine()

    with nodelib.workdir() as d:
        print(f"setting up {n} tablets over {args.villages} villages", file=sys.stderr)
        requests = build(str(d / "node.db"), n, args.villages, args.base, args.records, args.seed)
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.group: []}
        pushed = pulled = answered = 0
        pace_before = common.pace_ms()
        for r in range(args.runs):
            for group in (1, args.group) if r % 2 == 0 else (args.group, 1):
                db = d / f"run-{r}-{group}.db"
                shutil.copy(d / "node.db", db)
                node = Node(db, nodelib.TOWNSHIP)
                try:
                    pushed = 0
                    answers: list[bytes] = []
                    t0, w0 = time.thread_time(), time.perf_counter()
                    for i in range(0, len(requests), group):
                        exchanges: list[Exchange] = []
                        for dev, body in requests[i:i + group]:
                            with no_cycles():  # as the node's exchange (server.exchanges) runs it
                                req = wire.decode(wire.decompress(body, 64 << 20), wire.SyncRequest)
                            exchanges.append((dev, req, "msgpack", True))
                            pushed += len(req.ops.ops)
                        for out in node.sync_bodies(exchanges):
                            assert not isinstance(out, Exception), out
                            answers.append(out[0])
                    runs[group].append((time.thread_time() - t0, time.perf_counter() - w0))
                    if group == 1:
                        pulled = sum(len(wire.decode(wire.decompress(a, 64 << 20), wire.SyncResponse).ops.ops)
                                     for a in answers)
                        answered = sum(map(len, answers))
                finally:
                    node.close()
                print(f"run {r + 1}/{args.runs}, groups of {group}: node CPU {runs[group][-1][0]:.2f} s, "
                      f"wall {runs[group][-1][1]:.2f} s", file=sys.stderr)

    def median(group: int, k: int) -> float:
        return round(statistics.median(x[k] for x in runs[group]), 3)

    fig = {"tablets": n, "ops_pushed": pushed, "ops_pulled": pulled, "bytes_answered": answered,
           "node_cpu_s": median(1, 0), "node_wall_s": median(1, 1),
           "group": args.group, "node_cpu_s_grouped": median(args.group, 0),
           "node_wall_s_grouped": median(args.group, 1),
           "runs": [round(x[0], 3) for x in runs[1]], "runs_grouped": [round(x[0], 3) for x in runs[args.group]],
           "pace_ms_before": pace_before, "pace_ms_after": common.pace_ms()}
    print(f"{n} tablets: {pushed:,} ops pushed, {pulled:,} pulled; the node's serial CPU "
          f"{fig['node_cpu_s']:.2f} s one request at a time, {fig['node_cpu_s_grouped']:.2f} s in groups of "
          f"{args.group} (wall {fig['node_wall_s']:.2f} s and {fig['node_wall_s_grouped']:.2f} s; medians of "
          f"{args.runs}); the herd's p99 cannot be much below it")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
