"""A tablet in its own process, for the tests that kill one with SIGKILL: it says on stdout how far it has
got and then waits for a line on stdin before it goes on, so the test can kill it at a chosen point
however slow the machine (the test answers each line, or kills instead).

    python tablet_proc.py write DB PEOPLE TAG   one local transaction registering PEOPLE residents (each
                                                with a need and a service); "wrote i" after each, then
                                                "committed". The page cache is kept tiny, so the open
                                                transaction spills uncommitted pages into the WAL before
                                                it commits: a kill leaves them there for recovery to drop.
    python tablet_proc.py sync DB BATCH         sync, pushing BATCH ops per round trip; "round r acked a"
                                                after each round trip, then "synced"

The tablet database was set up (``Tablet.init``) by the test, without a PIN.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests" / "e2e"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import client.tablet as tablet_mod  # noqa: E402
from client.tablet import SyncReport, Tablet  # noqa: E402
from sync.wire import SyncResponse  # noqa: E402


def say(line: str) -> None:
    "Report progress, then wait until the test says go on (or kills this process)"
    print(line, flush=True)
    sys.stdin.readline()


def write(db: str, people: int, tag: str) -> None:
    with Tablet(db) as tab:
        tab.store.conn.execute("PRAGMA cache_size = 8")  # pages: spill the open transaction into the WAL
        with tab.store.transaction():
            for i in range(1, people + 1):
                p = tab.create("person", {"name": f"{tag}居民{i}", "gender": "女", "birth_date": "1950-01-01",
                                          "groups": ["老年人"], "notes": f"{tag}备注{i}" * 20})
                n = tab.create("need", {"person": p, "category": "养老服务", "status": "待处理",
                                        "description": f"{tag}助餐{i}"})
                tab.create("service", {"person": p, "need": n, "service_type": "养老服务",
                                       "served_at": "2024-05-01T09:30", "minutes": 30})
                say(f"wrote {i}")
        say("committed")


def sync(db: str, batch: int) -> None:
    tablet_mod.PUSH_BATCH = batch

    def progress(report: SyncReport, resp: SyncResponse) -> None:
        say(f"round {report.rounds} acked {resp.acked}")

    with Tablet(db) as tab:
        tab.sync(progress=progress, retries=3, backoff=0.05, limit=batch)
    say("synced")


if __name__ == "__main__":
    cmd, db, *rest = sys.argv[1:]
    if cmd == "write":
        write(db, int(rest[0]), rest[1])
    elif cmd == "sync":
        sync(db, int(rest[0]))
    else:
        sys.exit(f"unknown command {cmd!r}")
