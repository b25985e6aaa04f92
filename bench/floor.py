"""Floor benchmark: how much of the store's time is SQLite's own, and how much is the Python around it.

    .venv/bin/python bench/floor.py                              # both workloads, 3 alternating runs
    .venv/bin/python bench/floor.py --stream /tmp/cunsync-200k.bin   # reuse bench/ingest.py's stream file
    .venv/bin/python bench/floor.py --workloads push --runs 5

For each workload, a fresh store opened as a node opens it (``Store(path, durable=True,
checkpoint_thread=True)``) applies the ops in batches (``Store.apply``) while every SQL statement the
store runs, with its parameters, is recorded (set-up, not timed). Timed, alternately:

- apply: a fresh store applies the same batches (``Store.apply``), as ``bench/ingest.py`` and a node do;
- replay: the recorded statements, run again on a fresh store's empty database: the same ``BEGIN``,
  the same rows into the same tables and indexes, the same reads (fetched), the same ``COMMIT`` for each
  batch, but none of the Python that worked them out (merging, materialising, encoding). A first replay
  (not timed) is checked to leave the database apply left: the same records, ops and sites.

The replay is the least this schema costs through Python's ``sqlite3`` (its binding included); apply
minus replay is what the Python of ``sync.store`` adds. Medians of ``--runs`` runs, thread CPU and wall.

Workloads:

- ``push``: 10,000 new persons (8 fields each, realistic values, as ``bench/push.py`` makes them) from
  one tablet, in batches of up to 10,000 ops, as a tablet pushes them;
- ``ingest``: the 200,000-op stream of ``bench/ingest.py`` (creates, edits, concurrent edits from seven
  devices) in batches of 1,000; with it, the plain ``executemany`` of ``bench/ingest.py``'s part 2, and the
  ratio the replay alone would reach against it (the ingest goal is 0.25).

The last line on stdout is one JSON object: for each workload, ops, apply and replay CPU and wall seconds
and the Python's share of apply's CPU; for the ingest also raw_rows_per_s and ratio_if_python_were_free.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common as common  # also puts the project root on sys.path
import _node as nodelib
import ingest

from sync import Op, Store

PUSH_RECORDS = 10_000
PUSH_BATCH = 10_000  # ops in a tablet's full request (server.node.MAX_BATCH)
INGEST_BATCH = 1_000

#: A recorded call: (SQL, parameters, whether executemany)
Call = tuple[str, Any, bool]


class Recorder:
    """Stands in for a store's connection: passes every call through and records it"""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.calls: list[Call] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.calls.append((sql, params, False))
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        self.calls.append((sql, rows, True))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def record(batches: Sequence[Sequence[Op]], path: Path) -> tuple[list[Call], Any]:
    "Every statement a fresh store runs to apply ``batches``, and what the store then holds"
    store = Store(path, durable=True, checkpoint_thread=True)
    rec = Recorder(store.conn)
    store.conn = rec  # type: ignore[assignment]
    try:
        for b in batches:
            store.apply(b)
    finally:
        store.conn = rec._conn
    try:
        return rec.calls, held(store)
    finally:
        store.close()


def held(store: Store) -> Any:
    "What a store holds, to compare: its records' digest, and its op and site rows"
    return (store.digest(), store.conn.execute("SELECT * FROM ops ORDER BY seq").fetchall(),
            store.conn.execute("SELECT * FROM sites ORDER BY id").fetchall())


def replay_part(calls: list[Call], path: Path) -> Callable[[], None]:
    store = Store(path, durable=True, checkpoint_thread=True)  # the same schema and settings, empty
    conn = store.conn

    def run() -> None:
        try:
            for sql, params, many in calls:
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params).fetchall()
        finally:
            store.close()

    return run


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, thread CPU) seconds of ``fn``, after a full collection. ``_common.timed`` gives the process's
    CPU, which would count the store's checkpoint thread too"""
    gc.collect()
    t, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t, time.thread_time() - c


def push_ops(seed: int) -> list[Op]:
    rng = random.Random(seed)
    village = "510903001001"
    ops: list[Op] = []
    counter, hlc = 1, 1_750_000_000_000 << 16
    for i in range(PUSH_RECORDS):
        rid = common.uuid7_at(rng, 1_750_000_000_000 + i)
        made = nodelib.person_ops(nodelib.person(rng, village), rid, device="tab-bench", user="赵德明",
                                  unit=village, tier="village", counter=counter, hlc=hlc)
        ops += made
        counter += len(made)
        hlc += len(made)
    return ops


def measure(name: str, batches: Sequence[Sequence[Op]], runs: int, tmp: Path) -> dict[str, Any]:
    n = sum(map(len, batches))
    print(f"# {name}: recording the statements of {n:,} ops in {len(batches)} batches", file=sys.stderr)
    calls, want = record(batches, tmp / f"{name}-record.db")
    replay_part(calls, tmp / f"{name}-check.db")()
    with Store(tmp / f"{name}-check.db") as check:
        if held(check) != want:
            sys.exit(f"{name}: the replay did not make the database apply made")
    del want
    rows = sum(len(p) if many else 1 for _, p, many in calls)
    apply_w, apply_c, replay_w, replay_c = [], [], [], []
    for i in range(runs):
        d = tmp / f"{name}-{i}"
        d.mkdir()
        w, c = timed(ingest.part_store(batches, d / "apply.db"))  # a fresh node store applies them
        apply_w.append(w)
        apply_c.append(c)
        w, c = timed(replay_part(calls, d / "replay.db"))
        replay_w.append(w)
        replay_c.append(c)
        print(f"# {name} run {i + 1}/{runs}: apply {apply_w[-1]:.2f} s (cpu {apply_c[-1]:.2f}), "
              f"replay {w:.2f} s (cpu {c:.2f})", file=sys.stderr)
        shutil.rmtree(d)
    ac, rc = common.median(apply_c), common.median(replay_c)
    return {
        "ops": n, "batches": len(batches), "statements": len(calls), "statement_rows": rows,
        "apply_s": round(common.median(apply_w), 3), "apply_cpu_s": round(ac, 3),
        "replay_s": round(common.median(replay_w), 3), "replay_cpu_s": round(rc, 3),
        "python_share": round((ac - rc) / ac, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="push,ingest", help="comma-separated: push, ingest")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stream", type=Path, default=None, metavar="FILE",
                    help="bench/ingest.py's stream file to reuse (written if missing)")
    args = ap.parse_args()
    common.print_machine()
    figures: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="cunsync-bench-"))
    try:
        for name in args.workloads.split(","):
            if name == "push":
                ops = push_ops(args.seed)
                figures["push"] = measure("push", [ops[i:i + PUSH_BATCH] for i in range(0, len(ops), PUSH_BATCH)],
                                          args.runs, tmp)
            elif name == "ingest":
                ops, _, _ = ingest.stream(200_000, args.seed, args.stream,
                                          lambda m: print(f"# {m}", file=sys.stderr))
                fig = measure("ingest", [ops[i:i + INGEST_BATCH] for i in range(0, len(ops), INGEST_BATCH)],
                              args.runs, tmp)
                rows = ingest.raw_rows(ops)
                raw = []
                for i in range(args.runs):
                    d = tmp / f"raw-{i}"
                    d.mkdir()
                    raw.append(common.timed(ingest.part_raw([rows[j:j + INGEST_BATCH] for j in range(0, len(rows),
                                                                                         INGEST_BATCH)],
                                                              d / "raw.db"))[0])
                    shutil.rmtree(d)
                raw_rate = len(rows) / common.median(raw)
                fig["raw_rows_per_s"] = round(raw_rate)
                fig["ratio"] = round(len(ops) / fig["apply_s"] / raw_rate, 3)
                fig["ratio_if_python_were_free"] = round(len(ops) / fig["replay_s"] / raw_rate, 3)
                figures["ingest"] = fig
            else:
                ap.error(f"unknown workload {name!r}: push or ingest")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    common.print_table(
        ["workload", "ops", "statements", "apply s (cpu)", "replay s (cpu)", "Python's share of apply cpu"],
        [[k, f"{f['ops']:,}", f"{f['statements']:,}", f"{f['apply_s']} ({f['apply_cpu_s']})",
          f"{f['replay_s']} ({f['replay_cpu_s']})", f"{f['python_share']:.0%}"] for k, f in figures.items()],
    )
    if "ingest" in figures:
        f = figures["ingest"]
        print(f"\ningest: ratio {f['ratio']} against executemany's {f['raw_rows_per_s']:,} rows/s; the replay alone "
              f"would reach {f['ratio_if_python_were_free']} (goal 0.25)")
    common.emit_json(figures)


if __name__ == "__main__":
    main()
