"""The node's own work for the 200-tablet herd of ``bench/concurrent.py``, in one process, without HTTP and
without the 200 simulated tablets competing for the same two cores.

    .venv/bin/python bench/herd.py                 # 200 tablets, 3 runs
    .venv/bin/python bench/herd.py --scale 0.1     # 20 tablets, a quick check

Set-up (not timed): a node database for township 510903001000 whose 10 villages already hold ``--base``
persons each; 200 tablets enrolled round-robin over the villages, each with ``--records`` new persons
(realistic Chinese values) as one packed, gzipped request (``SyncRequest``), its cursor at the node's
last op, as a tablet already in use sends it. The requests are shuffled once (seeded).

Timed, on a fresh copy of that database each run: every request in turn is inflated, decoded, handed to
``Node.sync_body`` as ``server.app`` calls it (push, then pull what the village's earlier tablets pushed,
answered as a gzipped MessagePack body): what the node's worker thread does for each, one after another
(the node applies one batch at a time). The CPU seconds of that loop (this thread's: the store's
checkpoints run in a thread of their own, beside it) are the least time in which the node can answer all
200 when they arrive together, so the herd's p99 round trip (the 198th answer of 200) cannot be much below it.

The last line on stdout is one JSON object: tablets, ops_pushed, ops_pulled, bytes_answered (the answers'
gzipped bodies), node_cpu_s (the median),
runs, and the machine's pace before and after (``_common.pace_ms``: its speed drifts by up to 1.8x).
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

from server.node import Device, Node
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
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n = max(1, int(args.tablets * args.scale))
    common.print_machine()

    with nodelib.workdir() as d:
        print(f"setting up {n} tablets over {args.villages} villages", file=sys.stderr)
        requests = build(str(d / "node.db"), n, args.villages, args.base, args.records, args.seed)
        runs: list[float] = []
        pushed = pulled = answered = 0
        pace_before = common.pace_ms()
        for r in range(args.runs):
            db = d / f"run-{r}.db"
            shutil.copy(d / "node.db", db)
            node = Node(db, nodelib.TOWNSHIP)
            try:
                pushed = pulled = 0
                answers: list[bytes] = []
                t0 = time.thread_time()
                for dev, body in requests:
                    with no_cycles():  # as the node's exchange (server.app) runs it
                        req = wire.decode(wire.decompress(body, 64 << 20), wire.SyncRequest)
                    answers.append(node.sync_body(dev, req, "msgpack", True)[0])
                    pushed += len(req.ops.ops)
                runs.append(time.thread_time() - t0)
                pulled = sum(len(wire.decode(wire.decompress(a, 64 << 20), wire.SyncResponse).ops.ops)
                             for a in answers)
                answered = sum(map(len, answers))
            finally:
                node.close()
            print(f"run {r + 1}/{args.runs}: node CPU {runs[-1]:.2f} s", file=sys.stderr)

    fig = {"tablets": n, "ops_pushed": pushed, "ops_pulled": pulled, "bytes_answered": answered,
           "node_cpu_s": round(statistics.median(runs), 3), "runs": [round(x, 3) for x in runs],
           "pace_ms_before": pace_before, "pace_ms_after": common.pace_ms()}
    print(f"{n} tablets: {pushed:,} ops pushed, {pulled:,} pulled; the node's serial CPU "
          f"{fig['node_cpu_s']:.2f} s (median of {args.runs}); the herd's p99 cannot be much below it")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
