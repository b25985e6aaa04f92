"""Burst benchmark: the node's own answer to 200 tablets' syncs arriving at the same moment, with the
tablets' CPU kept off the node's two cores.

    .venv/bin/python bench/burst.py                 # 200 tablets, 3 bursts
    .venv/bin/python bench/burst.py --scale 0.1     # 20 tablets, a quick check

``bench/concurrent.py`` runs 200 real ``Tablet.sync()`` calls on the node's own two cores: as the first
tablets take their answers in (20–30 s of CPU), they slow the node and hold back the other tablets'
requests, so its p99 mixes the node's time with the simulation's. Real tablets have CPUs of their own.
Here the tablets only prepare: each is set up as in ``bench/concurrent.py`` (the same villages, records
and edits, the same seed) and builds the request its sync would send first, with ``client.tablet``'s own
code (its pending ops packed and deflated, its cursor); then a light client sends all of them over
connections opened beforehand, in one go, and times each round trip from its first byte sent to the last
byte of its answer read (raw HTTP/1.1 on asyncio sockets: about half a millisecond of CPU a request,
against a millisecond or more for an ``httpx`` client). Every answer is checked: HTTP 200, a valid
``SyncResponse``, every pushed op acknowledged, nothing more to pull.

Set-up (not timed): a node database for township 510903001000 whose 10 villages already hold ``--base``
persons each, 200 tablets enrolled round-robin over the villages, each bootstrapped, then with
``--records`` new persons and ``--edits`` single-field edits made locally. The node database is copied
before the first burst; each burst runs against a fresh copy and a fresh ``cunsync serve`` (hypercorn)
in a subprocess, with the requests in a shuffled order (seeded).

Printed: for each burst, the seconds until the last answer, the p50 and p99 round trip (nearest rank),
the node's own p50 and p99 (its ``Server-Timing``), and its CPU seconds; the medians over bursts. The
last line on stdout is one JSON object: tablets, bursts, seconds, p50_ms, p99_ms, node_p50_ms,
node_p99_ms, node_cpu_s, node_cpu_ms_per_sync, ops_pushed, ops_pulled, bytes_answered,
runs_p99_ms, and more. Goal (``bench/concurrent.py``'s): p99 under 1 s.
"""

from __future__ import annotations

import sys

# run as ``python bench/burst.py``, this folder comes first on the path, and its concurrent.py would stand
# in for the standard library's package that asyncio imports: take asyncio in without it
_bench = sys.path.pop(0)
import asyncio  # noqa: E402

sys.path.insert(0, _bench)

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _node as nodelib  # noqa: E402  (also puts the project root on sys.path)
import _common as common  # noqa: E402

from client.tablet import FIRST_PUSH, Tablet, _read_batch  # noqa: E402
from sync.wire import MSGPACK, SyncResponse, decode, decompress, request_body  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    nodelib.herd_options(ap)
    ap.add_argument("--runs", type=int, default=3, help="bursts, each on a fresh copy of the node (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    common.print_machine()

    with nodelib.workdir(args.keep) as d:
        db = d / "node.db"
        requests = set_up(db, d, args)
        random.Random(args.seed).shuffle(requests)
        pristine = d / "pristine.db"
        copy_db(db, pristine)
        runs = []
        for i in range(args.runs):
            copy_db(pristine, db)
            with nodelib.running_node(db) as rn:
                runs.append(burst(rn, requests))
            r = runs[-1]
            log(f"burst {i + 1}/{args.runs}: last answer at {r['seconds']:.2f} s; round trip p50 "
                f"{r['p50_ms']:,.0f} p99 {r['p99_ms']:,.0f} ms; node CPU {r['node_cpu_s']} s")
    report(len(requests), runs)


def set_up(db: Path, d: Path, args: argparse.Namespace) -> list[tuple[str, int, bytes]]:
    """The node's database and its tablets, as ``bench/concurrent.py`` makes them; returns each tablet's
    first sync request: (token, its last pending counter, the gzipped body)"""
    rng = random.Random(args.seed)
    enrol = nodelib.herd_node(db, args)
    log(f"setting up {len(enrol)} tablets ({args.base} records per village to bootstrap)")
    t0 = time.perf_counter()
    out = []
    with nodelib.running_node(db) as rn:
        for i, (village, token) in enumerate(enrol):
            with Tablet.init(d / f"tablet-{i:03d}.db", rn.url, token) as tab:
                nodelib.herd_tablet(tab, village, args, rng)
                out.append((token, *first_request(tab)))
    log(f"  {time.perf_counter() - t0:.1f} s")
    return out


def first_request(tab: Tablet) -> tuple[int, bytes]:
    "What ``Tablet.sync`` sends first, built as it builds it: (the batch's last counter, the gzipped body)"
    batch = _read_batch(tab.store, tab.device, tab.acked(), FIRST_PUSH)
    if batch.unsent:
        sys.exit(f"a tablet holds more than {FIRST_PUSH} pending ops: lower --records or --edits")
    return batch.counters[-1], request_body(tab._request(batch, 5000), batch.ops)


def copy_db(src: Path, dst: Path) -> None:
    "A closed SQLite database with its WAL, copied whole (and no shared-memory file of an earlier run)"
    for suffix in ("", "-wal", "-shm"):
        s, t = Path(f"{src}{suffix}"), Path(f"{dst}{suffix}")
        if s.exists() and suffix != "-shm":
            shutil.copyfile(s, t)
        elif t.exists():
            t.unlink()


def burst(rn: nodelib.RunningNode, requests: list[tuple[str, int, bytes]]) -> dict[str, Any]:
    "Every request sent at once over a connection of its own; each answer checked; the figures"
    return asyncio.run(_burst(rn, requests))


async def _burst(rn: nodelib.RunningNode, requests: list[tuple[str, int, bytes]]) -> dict[str, Any]:
    host, port = rn.url.removeprefix("http://").split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in requests]
    rounds: list[float] = []
    node_ms: list[float] = []
    sizes: list[int] = []
    pulled: list[int] = []

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], token: str, last: int,
                  body: bytes) -> None:
        reader, writer = conn
        head = (f"POST /api/sync HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
                f"content-type: {MSGPACK}\r\ncontent-encoding: gzip\r\naccept: {MSGPACK}\r\n"
                f"accept-encoding: gzip\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        t = time.perf_counter()
        writer.write(head + body)
        await writer.drain()
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
        answer = await reader.readexactly(int(headers["content-length"]))
        rounds.append((time.perf_counter() - t) * 1000)
        if " 200 " not in lines[0] + " ":
            raise SystemExit(f"the node answered {lines[0]}: {answer[:300]!r}")
        node_ms.append(float(headers["server-timing"].split("dur=")[1]))
        sizes.append(len(head) + len(body) + len(answer))
        raw = decompress(answer, 1 << 30) if headers.get("content-encoding") == "gzip" else answer
        resp = decode(raw, SyncResponse)
        if resp.acked < last or resp.more:
            raise SystemExit(f"an answer acknowledged {resp.acked} of {last} ops, more={resp.more}")
        pulled.append(len(resp.ops.ops))

    node0 = nodelib.cpu_seconds(rn.pid)
    start = time.perf_counter()
    await asyncio.gather(*(one(c, *r) for c, r in zip(conns, requests)))
    seconds = time.perf_counter() - start
    node_cpu = nodelib.cpu_seconds(rn.pid) - node0
    for _, writer in conns:
        writer.close()
    return {
        "seconds": round(seconds, 3),
        "p50_ms": round(nodelib.percentile(rounds, 50), 1),
        "p99_ms": round(nodelib.percentile(rounds, 99), 1),
        "max_ms": round(max(rounds), 1),
        "node_p50_ms": round(nodelib.percentile(node_ms, 50), 1),
        "node_p99_ms": round(nodelib.percentile(node_ms, 99), 1),
        "node_cpu_s": round(node_cpu, 2),
        "ops_pulled": sum(pulled),
        "bytes": sum(sizes),
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
    }


def report(n: int, runs: list[dict[str, Any]]) -> None:
    med = {k: common.median(r[k] for r in runs) for k in
           ("seconds", "p50_ms", "p99_ms", "max_ms", "node_p50_ms", "node_p99_ms", "node_cpu_s", "ops_pulled", "bytes")}
    fig = {
        "tablets": n,
        "bursts": len(runs),
        **{k: (int(v) if k in ("ops_pulled", "bytes") else round(v, 3)) for k, v in med.items()},
        "node_cpu_ms_per_sync": round(med["node_cpu_s"] * 1000 / n, 2),
        "runs_p99_ms": [r["p99_ms"] for r in runs],
        "runs_seconds": [r["seconds"] for r in runs],
        "runs_node_cpu_s": [r["node_cpu_s"] for r in runs],
        "cpu_pressure_avg60": nodelib.cpu_pressure(),
    }
    fig["goal_p99"] = fig["p99_ms"] < 1000
    print()
    common.print_table(
        ["tablets", "bursts", "last answer s", "p50 ms", "p99 ms", "node's own p50 / p99 ms", "node CPU s",
         "node CPU per sync ms", "ops pulled", "goal p99 < 1,000 ms"],
        [[str(n), str(len(runs)), fig["seconds"], fig["p50_ms"], fig["p99_ms"],
          f"{fig['node_p50_ms']:,.0f} / {fig['node_p99_ms']:,.0f}", fig["node_cpu_s"],
          fig["node_cpu_ms_per_sync"], f"{int(fig['ops_pulled']):,}", "met" if fig["goal_p99"] else "MISSED"]],
    )
    print("medians over the bursts; p99 of each burst: " + ", ".join(f"{x:,.0f}" for x in fig["runs_p99_ms"]) + " ms")
    nodelib.print_pressure(fig)
    common.emit_json(fig)


log = nodelib.log


if __name__ == "__main__":
    main()
